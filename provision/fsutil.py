"""Files under a target root, written atomically (never half-written), with backups."""
import os
import tempfile


class Root:
    """Joins absolute guest paths under a root directory ("/" on the running system)."""

    def __init__(self, path):
        self.path = os.path.abspath(path)

    @property
    def running(self):
        return self.path == "/"

    def __call__(self, guest_path):
        return os.path.join(self.path, guest_path.lstrip("/"))


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_atomic(path, data, mode=0o644, backup=False):
    """Write bytes or text via a temp file + fsync + rename. Returns True if the content changed."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        with open(path, "rb") as f:
            old = f.read()
    except FileNotFoundError:
        old = None
    if old == data:
        if (os.stat(path).st_mode & 0o7777) != mode:
            os.chmod(path, mode)
            return True
        return False
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    if backup and old is not None:
        write_atomic(path + ".bak", old, mode=0o600)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def ensure_block(path, marker, block, mode=0o644):
    """Append a marked block once; replace it if its content differs. Returns True if changed."""
    text = read_text(path) or ""
    begin, end = "# BEGIN {}\n".format(marker), "# END {}\n".format(marker)
    wanted = begin + block.rstrip("\n") + "\n" + end
    if begin in text and end in text:
        start = text.index(begin)
        stop = text.index(end, start) + len(end)
        new = text[:start] + wanted + text[stop:]
    else:
        new = text + ("" if not text or text.endswith("\n") else "\n") + wanted
    return write_atomic(path, new, mode=mode)


def remove(path):
    """Remove a file or symlink if present. Returns True if something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False

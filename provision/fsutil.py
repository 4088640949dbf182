"""Files under a target root, written atomically (never half-written), with backups."""
import os
import tempfile

from .system import is_running_system


class Root:
    """Joins absolute guest paths under a root directory ("/" on the running system)."""

    def __init__(self, path):
        self.path = os.path.realpath(path)

    @property
    def running(self):
        return is_running_system(self.path)

    def __call__(self, guest_path):
        return os.path.join(self.path, guest_path.lstrip("/"))


def read_bytes(path):
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_text(path):
    data = read_bytes(path)
    return None if data is None else data.decode("utf-8")


def mode_of(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None


def differs(path, data, mode=None):
    """Would write_atomic(path, data, mode) change anything?"""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if read_bytes(path) != data:
        return True
    return mode is not None and mode_of(path) != mode


def write_atomic(path, data, mode=None, backup=False):
    """Temp file in the same folder + fsync + rename, so readers see the old or the new file,
    never half of one. `mode` None keeps an existing file's mode (0644 for a new one).
    With `backup`, PATH.bak holds the previous content. Returns True if anything changed."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    path = os.path.abspath(path)
    old = read_bytes(path)
    current_mode = mode_of(path)
    want_mode = mode if mode is not None else (current_mode if current_mode is not None else 0o644)
    if old == data:
        if current_mode != want_mode:
            os.chmod(path, want_mode)
            return True
        return False
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    if backup and old is not None:
        write_atomic(path + ".bak", old, mode=0o600)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, want_mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return True


def _fsync_dir(directory):
    # Make the rename itself durable (an image snapshot may follow right after).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def with_block(text, marker, block):
    """`text` with a `# BEGIN marker` ... `# END marker` block holding `block`, added once or replaced."""
    text = text or ""
    begin, end = "# BEGIN {}\n".format(marker), "# END {}\n".format(marker)
    wanted = begin + block.rstrip("\n") + "\n" + end
    start = text.find(begin)
    stop = text.find(end, start) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        return text[:start] + wanted + text[stop + len(end):]
    return text + ("" if not text or text.endswith("\n") else "\n") + wanted


def symlink_atomic(target, path):
    """Make `path` a symlink to `target` (replacing a file or link). Returns True if changed."""
    if os.path.islink(path) and os.readlink(path) == target:
        return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "{}.{}.tmp".format(path, os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)
    return True


def remove(path):
    """Remove a file or symlink if present. Returns True if something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False

"""docker compose v2 at the pinned version, checksum-verified, as `docker compose` and `docker-compose`.

Source: a file uploaded with the build (air-gapped sites, the local target) or the release URL.
A checksum mismatch installs nothing.
"""
import hashlib
import os
import re
import shutil
import tempfile
import urllib.request

from .. import fsutil, system
from ..report import StepError, changed, unchanged

NAME = "compose"
PLUGIN = "/usr/local/lib/docker/cli-plugins/docker-compose"
LINK = "/usr/local/bin/docker-compose"
_SHA = re.compile(r"\b([0-9a-fA-F]{64})\b")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha_from_text(text, where):
    match = _SHA.search(text)
    if not match:
        raise StepError("{} holds no sha256".format(where))
    return match.group(1).lower()


def _source_file(ctx):
    return os.path.join(ctx.config.dir, ctx.config.compose.file)


def expected_sha256(ctx):
    """The checksum to verify against: the config's, else the sidecar `<file|url>.sha256`."""
    cfg = ctx.config.compose
    if cfg.sha256:
        return cfg.sha256
    if cfg.file:
        sidecar = _source_file(ctx) + ".sha256"
        text = fsutil.read_text(sidecar)
        if text is None:
            raise StepError("compose.sha256 is null and {} does not exist: nothing to verify {} against".format(
                sidecar, cfg.file))
        return _sha_from_text(text, sidecar)
    try:
        with urllib.request.urlopen(cfg.url + ".sha256", timeout=60) as answer:
            text = answer.read(4096).decode("ascii", "replace")
    except (OSError, ValueError) as exc:
        raise StepError("cannot fetch {}.sha256: {}".format(cfg.url, exc))
    return _sha_from_text(text, cfg.url + ".sha256")


def _fetch(ctx, dest):
    cfg = ctx.config.compose
    if cfg.file:
        try:
            shutil.copyfile(_source_file(ctx), dest)
        except OSError as exc:
            raise StepError("compose.file {}: {}".format(_source_file(ctx), exc.strerror or exc))
        return
    try:
        with urllib.request.urlopen(cfg.url, timeout=120) as answer, open(dest, "wb") as out:
            shutil.copyfileobj(answer, out)
    except (OSError, ValueError) as exc:
        raise StepError("cannot download {}: {}".format(cfg.url, exc))


def run(ctx):
    cfg = ctx.config.compose
    plugin, link = ctx.root(PLUGIN), ctx.root(LINK)
    expected = expected_sha256(ctx)
    have = sha256_file(plugin) if os.path.isfile(plugin) else None
    plugin_ok = have == expected and fsutil.mode_of(plugin) == 0o755
    link_ok = os.path.islink(link) and os.readlink(link) == PLUGIN
    label = "compose {} ({})".format(cfg.version, expected[:12])
    if plugin_ok and link_ok:
        return unchanged(label)
    if ctx.dry_run:
        return changed("would install " + label)
    if not plugin_ok:
        _install(ctx, plugin, expected)
    fsutil.symlink_atomic(PLUGIN, link)
    return changed(label + ("" if plugin_ok else ", installed") + ("" if link_ok else ", linked " + LINK))


def _install(ctx, plugin, expected):
    # The candidate lands next to its final place: verified there, renamed into place (atomic).
    directory = os.path.dirname(plugin)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".docker-compose.", dir=directory)
    os.close(fd)
    try:
        _fetch(ctx, tmp)
        got = sha256_file(tmp)
        if got != expected:
            raise StepError("docker-compose checksum mismatch: got {}, expected {}; nothing installed".format(
                got, expected))
        os.chmod(tmp, 0o755)
        if ctx.root.running:
            out = system.run([tmp, "version"]).stdout
            if ctx.config.compose.version.lstrip("v") not in out:
                raise StepError("the verified docker-compose reports {!r}, expected version {}".format(
                    out.strip(), ctx.config.compose.version))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, plugin)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)

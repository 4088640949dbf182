"""docker compose v2 at the pinned version, checksum-verified, as `docker compose` and `docker-compose`.

Source: a file uploaded with the build (air-gapped sites, the local target) or the release URL.
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


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url, dest):
    with urllib.request.urlopen(url, timeout=120) as answer, open(dest, "wb") as out:
        shutil.copyfileobj(answer, out)


def _published_sha256(url):
    with urllib.request.urlopen(url + ".sha256", timeout=60) as answer:
        text = answer.read().decode("ascii", "replace")
    match = re.search(r"\b([0-9a-f]{64})\b", text)
    if not match:
        raise StepError("{}.sha256 holds no sha256".format(url))
    return match.group(1)


def run(ctx):
    cfg = ctx.config["compose"]
    plugin, link = ctx.root(PLUGIN), ctx.root(LINK)
    expected = cfg["sha256"]
    source = os.path.join(ctx.config.dir, cfg["file"]) if cfg["file"] else None
    if source and not expected:
        expected = _sha256_file(source)     # the bake verified the file it uploaded; keep it honest here
    installed = _sha256_file(plugin) if os.path.exists(plugin) else None
    link_ok = os.path.islink(link) and os.readlink(link) == PLUGIN
    if installed is not None and installed == expected and link_ok:
        return unchanged("compose {} ({})".format(cfg["version"], expected[:12]))
    if ctx.dry_run:
        return changed("would install compose {}".format(cfg["version"]))
    tmpdir = tempfile.mkdtemp(prefix="clara-compose-")
    try:
        candidate = os.path.join(tmpdir, "docker-compose")
        if source:
            shutil.copyfile(source, candidate)
        else:
            _download(cfg["url"], candidate)
            expected = expected or _published_sha256(cfg["url"])
        got = _sha256_file(candidate)
        if got != expected:
            raise StepError("docker-compose checksum mismatch: got {}, expected {}; nothing installed".format(got, expected))
        with open(candidate, "rb") as f:
            fsutil.write_atomic(plugin, f.read(), mode=0o755)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    if not link_ok:
        fsutil.remove(link)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(PLUGIN, link)
    detail = "compose {} ({})".format(cfg["version"], expected[:12])
    if ctx.root.running:
        out = system.run([PLUGIN, "version"]).stdout
        if cfg["version"] not in out:
            raise StepError("installed compose reports {!r}, expected version {}".format(out.strip(), cfg["version"]))
    return changed(detail)

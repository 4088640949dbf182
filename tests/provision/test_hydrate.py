"""provision/steps/hydrate.py: the first-boot unit installed under --root (enabled, idempotent, removed
when the manifest turns hydration off), and its helper run for real on a small tree (reads every
file once, writes the stamp, does nothing the second time). The helper reads the folder that holds
the layers, asked of the engine for both image stores (Docker 29's containerd store keeps them under
containerd's root, not the data-root)."""
import json
import os
import re
import subprocess
import sys

from provision_support import run_cli, statuses
from test_data_root_containerd import FakeEngine, RunningRoot

from packer.provision_config import provision_config
from provision import config as config_module
from provision import runner, system

HYDRATE = {"hydrate": {"enabled": True, "paths": ["/var/lib/docker", "/usr/bin/docker"], "workers": 4}}
UNIT = "etc/systemd/system/clara-hydrate.service"
WANTS = "etc/systemd/system/multi-user.target.wants/clara-hydrate.service"
HELPER = "usr/local/lib/clara-bake/clara-hydrate"


def test_installs_the_unit_enabled_then_reports_unchanged(guest, make_config):
    cfg = make_config(HYDRATE)
    first = run_cli("--root", guest, "--config", cfg, "--only", "hydrate", check_rc=0)
    assert statuses(first) == {"hydrate": "changed"}
    unit = (guest / UNIT).read_text()
    assert "ConditionPathExists=!/var/lib/clara-hydrate/done" in unit
    assert "IOSchedulingClass=idle" in unit and "Nice=19" in unit and "Type=exec" in unit
    assert "Before=" not in unit                       # never holds back login or the launcher
    assert os.readlink(str(guest / WANTS)) == "/etc/systemd/system/clara-hydrate.service"
    assert os.stat(str(guest / HELPER)).st_mode & 0o777 == 0o755
    second = run_cli("--root", guest, "--config", cfg, "--only", "hydrate", check_rc=0)
    assert statuses(second) == {"hydrate": "unchanged"}


def test_turned_off_removes_what_it_installed(guest, make_config):
    run_cli("--root", guest, "--config", make_config(HYDRATE), "--only", "hydrate", check_rc=0)
    off = run_cli("--root", guest, "--config", make_config({"hydrate": {"enabled": False}}), "--only", "hydrate",
                  check_rc=0)
    assert statuses(off) == {"hydrate": "changed"}
    assert not any(os.path.lexists(str(guest / p)) for p in (UNIT, WANTS, HELPER))
    again = run_cli("--root", guest, "--config", make_config({"hydrate": {"enabled": False}}), "--only", "hydrate",
                    check_rc=0)
    assert statuses(again) == {"hydrate": "unchanged"}


def test_bad_hydrate_keys_name_the_file_and_key(guest, make_config):
    bad = run_cli("--root", guest, "--config", make_config({"hydrate": {"enabled": True, "paths": ["var/lib"]}}),
                  check_rc=2)
    assert "hydrate.paths[0]" in bad.stderr and "absolute path" in bad.stderr and "provision.json" in bad.stderr
    bad = run_cli("--root", guest, "--config", make_config({"hydrate": {"enabled": "yes"}}), check_rc=2)
    assert "hydrate.enabled" in bad.stderr and "true/false" in bad.stderr


def test_the_helper_reads_every_file_once_and_stamps(guest, make_config, tmp_path):
    run_cli("--root", guest, "--config", make_config(HYDRATE), "--only", "hydrate", check_rc=0)
    data = tmp_path / "data"
    (data / "overlay2" / "l1" / "diff").mkdir(parents=True)
    sizes = {"overlay2/l1/diff/libtorch.so": 3 * 2**20 + 5, "overlay2/l1/diff/a.py": 100, "single": 7}
    for name, size in sizes.items():
        (data / name).write_bytes(b"x" * size)
    os.symlink("a.py", str(data / "overlay2" / "l1" / "diff" / "link.py"))   # not counted twice
    stamp = tmp_path / "state" / "done"
    text = (guest / HELPER).read_text()
    text = _point(text, [str(data / "overlay2"), str(data / "single"), str(tmp_path / "none")], stamp,
                  layers=str(data / "overlay2" / "l1"))
    helper = tmp_path / "clara-hydrate"
    helper.write_text(text)
    out = subprocess.run([sys.executable, str(helper)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    figures = json.loads(stamp.read_text())
    assert figures["files"] == 3 and figures["bytes"] == sum(sizes.values())
    # What a start reads (libraries, modules) is read first, whatever its size.
    assert figures["start_files"] == 2 and figures["start_bytes"] == 3 * 2**20 + 105
    # What the check compares with the images' size: the bytes read in the layers' folder.
    assert figures["layers"] == str(data / "overlay2" / "l1") and figures["layer_bytes"] == 3 * 2**20 + 105
    again = subprocess.run([sys.executable, str(helper)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == ""     # once per instance


def test_the_helper_counts_the_unpacked_snapshots_apart_from_the_packed_blobs(guest, make_config, tmp_path):
    """containerd's root holds both; a start reads the snapshots, which the check holds apart."""
    run_cli("--root", guest, "--config", make_config(HYDRATE), "--only", "hydrate", check_rc=0)
    root = tmp_path / "containerd"
    sizes = {"io.containerd.content.v1.content/blobs/sha256/ab": 4000,
             "io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs/usr/lib/libx.so": 9000,
             "io.containerd.snapshotter.v1.overlayfs/metadata.db": 300}
    for name, size in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * size)
    stamp = tmp_path / "done"
    helper = tmp_path / "clara-hydrate"
    helper.write_text(_point((guest / HELPER).read_text(), [str(root)], stamp, layers=str(root)))
    out = subprocess.run([sys.executable, str(helper)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    figures = json.loads(stamp.read_text())
    assert figures["layer_bytes"] == 13300 and figures["snapshot_bytes"] == 9300


def test_what_a_start_reads_comes_first_small_before_large(guest, make_config, tmp_path):
    run_cli("--root", guest, "--config", make_config(HYDRATE), "--only", "hydrate", check_rc=0)
    data = tmp_path / "d"
    data.mkdir()
    layout = {"big.a": (5000, 0o644), "libtorch_cuda.so": (4000, 0o644), "libcudnn.so.8.2.4": (3000, 0o644),
              "mod.py": (20, 0o644), "tool": (900, 0o755), "notes.txt": (10, 0o644), "cache.pyc": (30, 0o644)}
    for name, (size, mode) in layout.items():
        (data / name).write_bytes(b"x" * size)
        os.chmod(str(data / name), mode)
    namespace = {}
    exec(compile((guest / HELPER).read_text(), "clara-hydrate", "exec"), namespace)
    namespace["PATHS"] = [str(data)]
    first, rest = namespace["files"]()
    assert [os.path.basename(p) for _, p in first] == ["mod.py", "cache.pyc", "tool", "libcudnn.so.8.2.4",
                                                        "libtorch_cuda.so"]
    assert [os.path.basename(p) for _, p in rest] == ["notes.txt", "big.a"]


def test_without_direct_io_the_helper_reads_through_the_page_cache(guest, make_config, tmp_path):
    """Direct I/O (no page-cache copies beside a start) is refused by some filesystems, at open or
    at the first read (EINVAL): the helper then reads the same bytes buffered, from where it was."""
    import errno
    run_cli("--root", guest, "--config", make_config(HYDRATE), "--only", "hydrate", check_rc=0)
    data = tmp_path / "lib.so"
    data.write_bytes(os.urandom(3 * 2**20 + 11))
    namespace = {}
    exec(compile((guest / HELPER).read_text(), "clara-hydrate", "exec"), namespace)
    real_os, calls = namespace["os"], []

    class NoDirect:
        def __getattr__(self, name):
            return getattr(real_os, name)

        def open(self, path, flags):
            calls.append(bool(flags & namespace["DIRECT"]))
            if refuse == "open" and flags & namespace["DIRECT"]:
                raise OSError(errno.EINVAL, "direct I/O refused")
            fd = real_os.open(path, flags)
            direct_fds[fd] = bool(flags & namespace["DIRECT"])
            return fd

        def preadv(self, fd, buffers, offset):
            if refuse == "read" and direct_fds.get(fd) and offset >= 2**20:
                raise OSError(errno.EINVAL, "direct I/O refused")
            return real_os.preadv(fd, buffers, offset)

    namespace["os"] = NoDirect()
    for refuse in ("open", "read"):
        calls.clear()
        direct_fds = {}
        assert namespace["read"]((0, str(data))) == 3 * 2**20 + 11
        assert calls == [True, False]            # direct first, then buffered



def _point(text, paths, stamp, layers=None):
    """The installed helper's text, pointed at a scratch tree instead of the guest's folders."""
    text, n = re.subn(r"^PATHS = .*$", lambda m: "PATHS = {!r}".format(paths), text, count=1, flags=re.M)
    text, m = re.subn(r"^LAYERS = .*$", lambda _: "LAYERS = {!r}".format(layers), text, count=1, flags=re.M)
    assert n == m == 1
    return text.replace('STAMP = "/var/lib/clara-hydrate/done"', "STAMP = {!r}".format(str(stamp)))


def _helper_constants(guest):
    namespace = {}
    exec(compile((guest / HELPER).read_text(), "clara-hydrate", "exec"), namespace)
    return namespace["PATHS"], namespace["LAYERS"]


def _run_on_engine(make_config, guest, monkeypatch, data_root="/var/lib/docker", toml=None, **engine):
    fake = FakeEngine(guest, **engine)
    monkeypatch.setattr(system, "run", fake)
    if toml is not None:
        (guest / "etc/containerd").mkdir(parents=True, exist_ok=True)
        (guest / "etc/containerd/config.toml").write_text(toml)
    fake._read_toml()
    fake.docker_root = data_root
    cfg = make_config({"hydrate": dict(HYDRATE["hydrate"], paths=[data_root, "/usr/bin/docker"]),
                       "docker.data_root": data_root})
    ctx = runner.Context(config_module.load(str(cfg)), RunningRoot(str(guest)))
    results, failed = runner.run(ctx, {"hydrate"})
    assert failed is None, fake.calls
    return results[0]


def test_containerd_store_the_layers_under_containerds_root_are_read(make_config, guest, monkeypatch):
    """Docker 29's default: the data-root holds no layers; the helper must read containerd's root
    (here moved by config.toml), or a first start still pays the lazy disk for every layer."""
    result = _run_on_engine(make_config, guest, monkeypatch, toml='version = 2\nroot = "/srv/containerd"\n')
    paths, layers = _helper_constants(guest)
    assert layers == "/srv/containerd"
    assert paths == ["/var/lib/docker", "/usr/bin/docker", "/srv/containerd"]
    assert "containerd image store (overlayfs snapshotter) under /srv/containerd" in result.detail


def test_containerd_root_inside_the_data_root_is_read_once(make_config, guest, monkeypatch):
    """data_root's relocation puts containerd's root inside the data-root: no second walk of it."""
    _run_on_engine(make_config, guest, monkeypatch, data_root="/mnt/docker",
                   toml='root = "/mnt/docker/containerd-store"\n')
    paths, layers = _helper_constants(guest)
    assert layers == "/mnt/docker/containerd-store"
    assert paths == ["/mnt/docker", "/usr/bin/docker"]


def test_classic_store_the_layers_under_the_data_root_are_read(make_config, guest, monkeypatch):
    result = _run_on_engine(make_config, guest, monkeypatch, containerd_store=False)
    paths, layers = _helper_constants(guest)
    assert layers == "/var/lib/docker"
    assert paths == ["/var/lib/docker", "/usr/bin/docker"]
    assert "overlay2 storage driver under /var/lib/docker" in result.detail


def test_a_store_change_rewrites_the_helper(make_config, guest, monkeypatch):
    _run_on_engine(make_config, guest, monkeypatch, containerd_store=False)
    again = _run_on_engine(make_config, guest, monkeypatch, containerd_store=False)
    assert again.status == "unchanged"
    moved = _run_on_engine(make_config, guest, monkeypatch)
    assert moved.status == "changed" and _helper_constants(guest)[1] == "/var/lib/containerd"


def test_under_another_root_containerds_root_is_read_beside_the_data_root(guest, make_config):
    (guest / "etc/containerd").mkdir(parents=True, exist_ok=True)
    (guest / "etc/containerd/config.toml").write_text('root = "/data/ctr"\n[plugins]\n')
    run_cli("--root", guest, "--config", make_config(HYDRATE), "--only", "hydrate", check_rc=0)
    paths, layers = _helper_constants(guest)
    assert paths == ["/var/lib/docker", "/usr/bin/docker", "/data/ctr"] and layers is None


def test_the_rendered_paths_name_both_packagings_binaries():
    """docker-ce ships runc and dockerd in /usr/bin; Debian's docker.io and runc in /usr/sbin."""
    from manifests import DEFAULT, load_manifest
    from packer.sources import local
    manifest = load_manifest(DEFAULT)
    paths = provision_config(manifest, local, "f" * 64)["hydrate"]["paths"]
    for binary in ("/usr/bin/runc", "/usr/sbin/runc", "/usr/bin/dockerd", "/usr/sbin/dockerd",
                   "/usr/bin/containerd"):
        assert binary in paths

"""data_root moves the images too: with Docker 29's containerd image store they live under containerd's
root, which `data-root` does not move (https://docs.docker.com/engine/daemon/#configure-the-data-directory-location,
moby#50517), so the step sets containerd's `root` in /etc/containerd/config.toml to a folder inside the
data-root. Runs against a temporary root that claims to be the running system, with `docker`,
`systemctl` and `containerd` answered by a fake that behaves as the documentation says."""
import json
import subprocess

import pytest

from provision import config as config_module
from provision import fsutil, runner, storage, system
from provision.report import StepError
from provision.steps import data_root

SNAPSHOTTER = [["driver-type", "io.containerd.snapshotter.v1"]]
CLASSIC = [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]]


class RunningRoot(fsutil.Root):
    @property
    def running(self):
        return True


class FakeEngine:
    """docker + containerd + systemd, as far as the step drives them.

    - `docker info` reports DockerRootDir from daemon.json's data-root (default /var/lib/docker) as
      read at the last (re)start, and DriverStatus `driver-type io.containerd.snapshotter.v1` when the
      containerd image store is in use (https://docs.docker.com/engine/storage/containerd/).
    - `containerd config dump` prints the merged config: the file's top-level `root`, else
      /var/lib/containerd (containerd(8): "--root ... default /var/lib/containerd"), read at start.
    """

    def __init__(self, root, containerd_store=True, system_containerd=True):
        self.root = root
        self.containerd_store = containerd_store
        self.system_containerd = system_containerd
        self.calls = []
        self.running = {"docker": True, "containerd": True}
        self.docker_root = "/var/lib/docker"
        self.containerd_root = "/var/lib/containerd"
        self.honour_toml = True

    def __call__(self, cmd, input_text=None, check=True, timeout=600, env=None):
        self.calls.append(list(cmd))
        rc, out, err = self.answer(list(cmd))
        if check and rc != 0:
            raise StepError("`{}` failed (exit {}): {}".format(" ".join(cmd[:4]), rc, err))
        return subprocess.CompletedProcess(cmd, rc, out, err)

    def _read_config(self):
        daemon = json.loads((self.root / "etc/docker/daemon.json").read_text())
        self.docker_root = daemon.get("data-root", "/var/lib/docker")

    def _read_toml(self):
        text = fsutil.read_text(str(self.root / "etc/containerd/config.toml"))
        if self.honour_toml:
            self.containerd_root = storage.containerd_root_in(text) or "/var/lib/containerd"

    def answer(self, cmd):
        if cmd[:2] == ["systemctl", "cat"]:
            known = cmd[2] == "docker" or (cmd[2] == "containerd" and self.system_containerd)
            return (0, "# /lib/systemd/system/{}.service\n".format(cmd[2]), "") if known else (1, "", "No files found")
        if cmd[:2] == ["systemctl", "stop"]:
            self.running[cmd[2].replace(".socket", "")] = False
            return 0, "", ""
        if cmd[:2] in (["systemctl", "start"], ["systemctl", "restart"]):
            unit = cmd[2]
            if unit == "docker":
                self._read_config()
                self.running["containerd"] = True       # docker.service Wants=containerd.service
                self._read_toml()
            else:
                self._read_toml()
            self.running[unit] = True
            return 0, "", ""
        if cmd[:2] == ["docker", "info"]:
            if not self.running["docker"]:
                return 1, "", "Cannot connect to the Docker daemon"
            fmt = cmd[-1]
            if "DriverStatus" in fmt:
                status = SNAPSHOTTER if self.containerd_store else CLASSIC
                driver = "overlayfs" if self.containerd_store else "overlay2"
                return 0, "{}\t{}\t{}\n".format(json.dumps(self.docker_root), json.dumps(driver),
                                                json.dumps(status)), ""
            if "DockerRootDir" in fmt:
                return 0, self.docker_root + "\n", ""
            return 0, "29.1.3\n", ""
        if cmd[:3] == ["containerd", "config", "dump"]:
            return 0, 'version = 3\nroot = "{}"\nstate = "/run/containerd"\n\n[plugins]\n'.format(
                self.containerd_root), ""
        return 127, "", "unexpected command: " + " ".join(cmd)


@pytest.fixture
def engine(guest, monkeypatch):
    fake = FakeEngine(guest)
    monkeypatch.setattr(system, "run", fake)
    lib = guest / "var/lib/containerd"
    (lib / "io.containerd.content.v1.content/blobs").mkdir(parents=True)
    (lib / "io.containerd.content.v1.content/blobs/layer").write_bytes(b"gz")
    (lib / "io.containerd.snapshotter.v1.overlayfs").mkdir()
    return fake


def run_step(make_config, guest, data_root_path="/mnt/docker"):
    # launcher.command is set since another change may make it required; this step never reads it
    cfg = make_config({"docker.data_root": data_root_path, "launcher.command": ["jupyter", "lab"]})
    ctx = runner.Context(config_module.load(str(cfg)), RunningRoot(str(guest)))
    return runner.run(ctx, {"data_root"})


def test_containerd_store_root_follows_the_data_root(make_config, guest, engine):
    results, failed = run_step(make_config, guest)
    assert failed is None, engine.calls
    detail = results[0].detail
    assert results[0].status == "changed"
    assert "containerd image store: root /mnt/docker/containerd-store in /etc/containerd/config.toml" in detail
    assert "moved 2 entries from /var/lib/containerd" in detail
    toml = (guest / "etc/containerd/config.toml").read_text()
    assert toml == 'version = 2\nroot = "/mnt/docker/containerd-store"\n'       # as Docker's docs show it
    moved = guest / "mnt/docker/containerd-store"
    assert (moved / "io.containerd.content.v1.content/blobs/layer").read_bytes() == b"gz"
    assert list((guest / "var/lib/containerd").iterdir()) == []
    # containerd and docker were stopped before the move and started after the config changed
    stop = engine.calls.index(["systemctl", "stop", "containerd"])
    start = engine.calls.index(["systemctl", "start", "containerd"])
    assert engine.calls.index(["systemctl", "stop", "docker"]) < stop < start
    assert engine.containerd_root == "/mnt/docker/containerd-store"
    assert json.loads((guest / "etc/docker/daemon.json").read_text())["data-root"] == "/mnt/docker"


def test_second_run_changes_nothing(make_config, guest, engine):
    assert run_step(make_config, guest)[1] is None
    engine.calls.clear()
    results, failed = run_step(make_config, guest)
    assert failed is None and results[0].status == "unchanged", results[0].detail
    assert "images in the containerd image store (overlayfs snapshotter) under /mnt/docker/containerd-store" \
        in results[0].detail
    assert not [c for c in engine.calls if c[:2] in (["systemctl", "stop"], ["systemctl", "restart"])]


def test_existing_containerd_config_is_merged_not_replaced(make_config, guest, engine):
    path = guest / "etc/containerd/config.toml"
    path.parent.mkdir(parents=True)
    before = ('# containerd.io ships this\n#root = "/var/lib/containerd"\ndisabled_plugins = ["cri"]\n'
              '[plugins."io.containerd.snapshotter.v1.overlayfs"]\n  root_path = ""\n')
    path.write_text(before)
    assert run_step(make_config, guest)[1] is None
    assert path.read_text() == ('# containerd.io ships this\n#root = "/var/lib/containerd"\ndisabled_plugins = ["cri"]\n'
                                'root = "/mnt/docker/containerd-store"\n\n'
                                '[plugins."io.containerd.snapshotter.v1.overlayfs"]\n  root_path = ""\n')
    assert (guest / "etc/containerd/config.toml.bak").read_text() == before


def test_classic_store_leaves_containerd_alone(make_config, guest, engine):
    engine.containerd_store = False
    results, failed = run_step(make_config, guest)
    assert failed is None
    assert "images in the overlay2 storage driver under /mnt/docker (classic store)" in results[0].detail
    assert not (guest / "etc/containerd/config.toml").exists()
    assert (guest / "var/lib/containerd/io.containerd.content.v1.content/blobs/layer").exists()
    assert ["systemctl", "stop", "containerd"] not in engine.calls


def test_default_data_root_keeps_containerd_default(make_config, guest, engine):
    results, failed = run_step(make_config, guest, "/var/lib/docker")
    assert failed is None and results[0].status == "unchanged"
    assert "under /var/lib/containerd" in results[0].detail
    assert not (guest / "etc/containerd/config.toml").exists()


def test_dockerd_own_containerd_needs_nothing(make_config, guest, engine):
    engine.system_containerd = False
    results, failed = run_step(make_config, guest)
    assert failed is None
    assert "images in dockerd's own containerd under /mnt/docker" in results[0].detail
    assert not (guest / "etc/containerd/config.toml").exists()


def test_containerd_ignoring_its_root_fails_clearly(make_config, guest, engine, capsys):
    engine.honour_toml = False          # e.g. containerd started with --root or another --config
    results, failed = run_step(make_config, guest)
    assert failed == "data_root"
    err = capsys.readouterr().err
    assert "after setting containerd's root to /mnt/docker/containerd-store in /etc/containerd/config.toml, " \
           "the engine stores images in the containerd image store (overlayfs snapshotter) under " \
           "/var/lib/containerd" in err


def test_refuses_to_merge_two_containerd_roots(make_config, guest, engine, capsys):
    (guest / "mnt/docker/containerd-store").mkdir(parents=True)
    (guest / "mnt/docker/containerd-store/other").write_text("x")
    # daemon.json already points at /mnt/docker, so only the containerd part acts
    daemon = json.loads((guest / "etc/docker/daemon.json").read_text())
    (guest / "etc/docker/daemon.json").write_text(json.dumps(dict(daemon, **{"data-root": "/mnt/docker"})))
    engine.docker_root = "/mnt/docker"
    assert run_step(make_config, guest)[1] == "data_root"
    assert "both /var/lib/containerd and /mnt/docker/containerd-store hold containerd data; refusing to merge" \
        in capsys.readouterr().err
    assert (guest / "var/lib/containerd/io.containerd.content.v1.content/blobs/layer").exists()


def test_moving_the_data_root_again_takes_containerd_along(make_config, guest, engine):
    assert run_step(make_config, guest)[1] is None
    results, failed = run_step(make_config, guest, "/srv/docker")
    assert failed is None, results
    assert storage.containerd_root_in((guest / "etc/containerd/config.toml").read_text()) == \
        "/srv/docker/containerd-store"
    assert (guest / "srv/docker/containerd-store/io.containerd.content.v1.content/blobs/layer").exists()
    assert engine.containerd_root == "/srv/docker/containerd-store"


@pytest.mark.parametrize("text, root", [
    ('root = "/data/containerd"\n', "/data/containerd"),
    ("version = 2\nroot = '/x'  # moved\n", "/x"),
    ('#root = "/no"\nstate = "/run/containerd"\n', None),
    ('[plugins.cri]\nroot = "/not/top-level"\n', None),           # a table's key, not containerd's root
    ("", None),
])
def test_containerd_root_in(text, root):
    assert storage.containerd_root_in(text) == root


def test_with_containerd_root_replaces_the_top_level_key_only():
    text = 'version = 2\nroot = "/old"\n[plugins.x]\nroot = "/table"\n'
    assert storage.with_containerd_root(text, "/new") == 'version = 2\nroot = "/new"\n[plugins.x]\nroot = "/table"\n'
    assert storage.with_containerd_root("version = 2", "/n") == 'version = 2\nroot = "/n"\n'


@pytest.mark.parametrize("status, expected", [
    (SNAPSHOTTER, True), (CLASSIC, False), ([], False), (None, False),
    ([["driver-type", "io.containerd.snapshotter.v1"], ["Backing Filesystem", "extfs"]], True),
])
def test_uses_containerd_store(status, expected):
    assert storage.uses_containerd_store(status) is expected

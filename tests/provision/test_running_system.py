"""Running-system paths (login, pull, docker restarts) against a fake `docker`/`systemctl`."""
import json
import subprocess

import pytest

from provision import config as config_module
from provision import fsutil, registry, runner, storage, system
from provision.report import StepError
from provision.steps import pull

DIGEST = "sha256:" + "cd" * 32
REF = "nvcr.io/nvidia/clara-train-sdk:v4.1"
SECRET = "nvapi-very-secret"


class RunningRoot(fsutil.Root):
    """A temporary root that claims to be the running system, so the command paths run."""

    @property
    def running(self):
        return True


class FakeDocker:
    def __init__(self, root, pull_failures=0, digest=DIGEST):
        self.root = root
        self.calls = []
        self.pull_failures = pull_failures
        self.digest = digest
        self.images = {}            # name -> info
        self.runtimes = {"runc": {}}

    def __call__(self, cmd, input_text=None, check=True, timeout=600, env=None):
        self.calls.append((list(cmd), input_text, env))
        rc, out, err = self.answer(list(cmd), input_text)
        if check and rc != 0:
            raise StepError("`{}` failed (exit {}): {}".format(" ".join(cmd[:4]), rc, err))
        return subprocess.CompletedProcess(cmd, rc, out, err)

    def answer(self, cmd, input_text):
        config = self.root / "run/clara-docker/config.json"
        if cmd[:2] == ["docker", "login"]:
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(json.dumps({"auths": {cmd[-1]: {"auth": "x"}}, "HttpHeaders": {"a": "b"}}))
            return 0, "Login Succeeded\n", ""
        if cmd[:2] == ["docker", "logout"]:
            return 0, "", ""
        if cmd[:2] == ["docker", "pull"]:
            if self.pull_failures:
                self.pull_failures -= 1
                return 1, "", "Error response from daemon: net/http: TLS handshake timeout"
            info = {"Id": "sha256:image", "RepoDigests": ["{}@{}".format(pull.repository(cmd[-1]), self.digest)]}
            self.images[cmd[-1]] = info
            return 0, cmd[-1] + "\n", ""
        if cmd[:3] == ["docker", "image", "inspect"]:
            info = self.images.get(cmd[-1])
            if info is None:
                return 1, "", "No such image"
            return 0, json.dumps(info if cmd[-2] == "{{json .}}" else info["RepoDigests"]), ""
        if cmd[:2] == ["docker", "tag"]:
            self.images[cmd[3]] = self.images[cmd[2]]
            return 0, "", ""
        if cmd[:2] == ["docker", "info"]:
            if "DriverStatus" in cmd[-1]:      # the pull's free-space check: a classic-store engine
                return 0, '"/var/lib/docker"\t"overlay2"\t[["Backing Filesystem","extfs"]]\n', ""
            if "Runtimes" in cmd[-1]:
                return 0, json.dumps(self.runtimes), ""
            return 0, "20.10.24\n", ""
        if cmd[:2] == ["systemctl", "restart"]:
            data = json.loads((self.root / "etc/docker/daemon.json").read_text())
            self.runtimes = dict({"runc": {}}, **data.get("runtimes", {}))
            return 0, "", ""
        if cmd[0] == "systemctl":
            return 0, "enabled\n" if cmd[1] == "is-enabled" else "active\n" if cmd[1] == "is-active" else "unit\n", ""
        if cmd[0] in ("journalctl", "sync", "cloud-init", "/usr/sbin/waagent"):
            return 0, "", ""
        return 127, "", "unexpected command"


@pytest.fixture
def fake(guest, monkeypatch):
    docker = FakeDocker(guest)
    monkeypatch.setattr(system, "run", docker)
    monkeypatch.setattr(pull, "_sleep", lambda seconds: docker.calls.append((["sleep", seconds], None, None)))
    # nvcr.io is not reachable in tests: the free-space check (tests/provision/test_pull_space.py) is
    # tested against a local registry; here the image is small and the disk roomy.
    monkeypatch.setattr(registry, "compressed_size", lambda *args, **kwargs: 10 ** 6)
    monkeypatch.setattr(storage, "free_bytes", lambda path: 10 ** 12)
    return docker


def context(cfg_path, root, environ=None, digests=None):
    return runner.Context(config_module.load(str(cfg_path)), RunningRoot(str(root)),
                          digests=digests, environ=environ or {})


def commands(fake):
    return [c[0] for c in fake.calls]


def test_login_pull_logout(make_config, guest, fake, capsys):
    ctx = context(make_config(), guest, environ={"NGC_API_KEY": SECRET})
    results, failed = runner.run(ctx, {"registry_login", "pull"})
    assert failed is None
    assert [(r.name, r.status) for r in results] == [("registry_login", "changed"), ("pull", "changed")]
    cmds = commands(fake)
    login = cmds.index(["docker", "login", "--username", "$oauthtoken", "--password-stdin", "nvcr.io"])
    pulled = cmds.index(["docker", "pull", "--quiet", "nvcr.io/nvidia/clara-train-sdk@" + DIGEST])
    logout = cmds.index(["docker", "logout", "nvcr.io"])
    assert login < pulled < logout
    assert ["docker", "tag", "nvcr.io/nvidia/clara-train-sdk@" + DIGEST, REF] in cmds
    # The secret went on stdin only, never into argv or the output.
    assert fake.calls[login][1] == SECRET + "\n"
    assert all(SECRET not in " ".join(c) for c in cmds)
    assert SECRET not in capsys.readouterr().out
    assert all(c[2]["DOCKER_CONFIG"] == "/run/clara-docker" for c in fake.calls if c[0][0] == "docker")
    # The registry's auth is gone; other settings in root's docker config stay.
    left = json.loads((guest / "run/clara-docker/config.json").read_text())
    assert left == {"auths": {}, "HttpHeaders": {"a": "b"}}


def test_logout_happens_even_when_the_pull_fails(make_config, guest, fake, capsys):
    fake.pull_failures = 99
    ctx = context(make_config({"pull.retries": 3, "pull.backoff_seconds": 2}), guest,
                  environ={"NGC_API_KEY": SECRET})
    results, failed = runner.run(ctx, {"registry_login", "pull", "launcher"})
    assert failed == "pull"
    assert [r.name for r in results] == ["registry_login"]
    cmds = commands(fake)
    assert cmds[-1] == ["docker", "logout", "nvcr.io"]
    assert [c for c in cmds if c[0] == "sleep"] == [["sleep", 2.0], ["sleep", 4.0]]     # exponential back-off
    assert sum(1 for c in cmds if c[:2] == ["docker", "pull"]) == 3
    err = capsys.readouterr().err
    assert "[provision] pull failed: docker pull nvcr.io/nvidia/clara-train-sdk@" in err
    assert "failed 3 time(s)" in err and "TLS handshake timeout" in err
    assert "auths" not in (guest / "run/clara-docker/config.json").read_text() or \
        json.loads((guest / "run/clara-docker/config.json").read_text())["auths"] == {}


def test_credential_file_holding_only_the_registry_is_deleted(make_config, guest, fake):
    def login_only(cmd, input_text):
        if cmd[:2] == ["docker", "login"]:
            path = guest / "run/clara-docker/config.json"
            path.parent.mkdir(parents=True, exist_ok=True)     # the docker CLI makes its config dir
            path.write_text(json.dumps({"auths": {"https://nvcr.io": {"auth": "x"}}}))
            return 0, "", ""
        return FakeDocker.answer(fake, cmd, input_text)
    fake.answer = login_only
    ctx = context(make_config(), guest, environ={"NGC_API_KEY": SECRET})
    assert runner.run(ctx, {"registry_login", "pull"})[1] is None
    assert not (guest / "run/clara-docker/config.json").exists()


def test_failed_login_still_cleans_up(make_config, guest, fake, capsys):
    def refuse(cmd, input_text):
        if cmd[:2] == ["docker", "login"]:
            (guest / "run/clara-docker").mkdir(parents=True, exist_ok=True)
            (guest / "run/clara-docker/config.json").write_text(json.dumps({"auths": {"nvcr.io": {}}}))
            return 1, "", "Error response from daemon: unauthorized: " + SECRET
        return FakeDocker.answer(fake, cmd, input_text)
    fake.answer = refuse
    ctx = context(make_config(), guest, environ={"NGC_API_KEY": SECRET})
    results, failed = runner.run(ctx, {"registry_login", "pull"})
    assert failed == "registry_login" and results == []
    assert commands(fake)[-1] == ["docker", "logout", "nvcr.io"]
    assert not (guest / "run/clara-docker/config.json").exists()
    err = capsys.readouterr().err
    assert "[provision] registry_login failed: docker login nvcr.io failed" in err and SECRET not in err


def test_login_skipped_without_the_secret(make_config, guest, fake):
    ctx = context(make_config(), guest, environ={})
    results, failed = runner.run(ctx, {"registry_login"})
    assert failed is None and (results[0].status, results[0].detail) == ("skipped", "NGC_API_KEY not set")
    assert fake.calls == []


def test_pull_unchanged_when_present_with_the_digest(make_config, guest, fake):
    ctx = context(make_config(), guest)
    assert runner.run(ctx, {"pull"})[0][0].status == "changed"
    fake.calls.clear()
    results, _ = runner.run(ctx, {"pull"})
    assert results[0].status == "unchanged"
    assert not any(c[:2] == ["docker", "pull"] for c in commands(fake))


def test_pull_digest_from_the_environment_and_verification(make_config, guest, fake, capsys):
    pinned = "sha256:" + "ee" * 32
    ctx = context(make_config({"images": [{"ref": REF, "digest": None}]}), guest, digests={REF: pinned})
    results, failed = runner.run(ctx, {"pull"})
    assert failed == "pull"       # the fake registry serves DIGEST, not the pinned one
    assert "lack " + pinned in capsys.readouterr().err
    assert ["docker", "pull", "--quiet", "nvcr.io/nvidia/clara-train-sdk@" + pinned] in commands(fake)


def test_pull_retries_then_succeeds(make_config, guest, fake):
    fake.pull_failures = 2
    ctx = context(make_config({"pull.backoff_seconds": 1}), guest)
    results, failed = runner.run(ctx, {"pull"})
    assert failed is None and "after 3 tries" in results[0].detail


def test_nvidia_runtime_restarts_docker_and_verifies(make_config, guest, fake):
    ctx = context(make_config(), guest)
    results, failed = runner.run(ctx, {"nvidia_runtime"})
    assert failed is None and "docker restarted, lists the nvidia runtime" in results[0].detail
    assert ["systemctl", "restart", "docker"] in commands(fake)
    fake.calls.clear()
    results, _ = runner.run(ctx, {"nvidia_runtime"})
    assert results[0].status == "unchanged"
    assert ["systemctl", "restart", "docker"] not in commands(fake)


def test_nvidia_runtime_fails_when_docker_does_not_list_it(make_config, guest, fake, capsys):
    answer = fake.answer

    def no_nvidia(cmd, input_text):
        if cmd[:2] == ["systemctl", "restart"]:
            return 0, "", ""
        return answer(cmd, input_text)
    fake.answer = no_nvidia
    results, failed = runner.run(context(make_config(), guest), {"nvidia_runtime"})
    assert failed == "nvidia_runtime"
    assert "docker info does not list the nvidia runtime" in capsys.readouterr().err


def test_docker_engine_installs_when_missing(make_config, guest, fake):
    (guest / "usr/bin/docker").unlink()
    answer = fake.answer

    def apt(cmd, input_text):
        if cmd[0] == "apt-get":
            if cmd[1] == "install":
                (guest / "usr/bin/docker").write_text("")
            return 0, "", ""
        return answer(cmd, input_text)
    fake.answer = apt
    results, failed = runner.run(context(make_config(), guest), {"docker_engine"})
    assert failed is None
    cmds = commands(fake)
    assert ["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker.io", "apparmor"] in cmds
    env = [c[2] for c in fake.calls if c[0][:2] == ["apt-get", "install"]][0]
    assert env["DEBIAN_FRONTEND"] == "noninteractive"
    assert ["systemctl", "enable", "docker"] in cmds


def test_generalize_on_azure_runs_waagent_last(make_config, guest, fake):
    results, failed = runner.run(context(make_config({"generalize.deprovision": "waagent"}), guest),
                                 {"generalize"})
    assert failed is None
    cmds = [c for c in commands(fake) if c[0] != "sync"]
    assert cmds[-1] == ["/usr/sbin/waagent", "-force", "-deprovision+user"]

"""generalize.remove_build_user: the user the build created (GCP's `packer` from ssh-keys metadata,
Azure's admin user) is deleted as the very last action; a base image's own user is kept."""
import subprocess

import pytest

from provision import config as config_module
from provision import fsutil, runner, system
from provision.report import StepError
from provision_support import BASE_CONFIG, run_cli

COMMAND = ["jupyter", "lab"]


class RunningRoot(fsutil.Root):
    @property
    def running(self):
        return True


class FakeSystem:
    """system.run on the guest root: userdel and waagent edit its /etc/passwd as the real ones do
    (userdel(8): -r removes the home, -f even while the user is logged in; waagent's
    -deprovision+user deletes the last provisioned user)."""

    def __init__(self, root, waagent_removes=True, userdel_rc=0):
        self.root, self.calls = root, []
        self.waagent_removes, self.userdel_rc = waagent_removes, userdel_rc

    def drop(self, user):
        passwd = self.root / "etc/passwd"
        passwd.write_text("".join(l + "\n" for l in passwd.read_text().splitlines() if l.split(":")[0] != user))

    def __call__(self, cmd, input_text=None, check=True, timeout=600, env=None):
        self.calls.append(list(cmd))
        rc, err = 0, ""
        if cmd[0] == "userdel":
            if self.userdel_rc:
                rc, err = self.userdel_rc, "userdel: cannot lock /etc/passwd; try again later."
            else:
                self.drop(cmd[-1])
        elif cmd[0] == "/usr/sbin/waagent" and self.waagent_removes:
            self.drop("clara-build")
        if check and rc:
            raise StepError("`{}` failed (exit {}): {}".format(" ".join(cmd[:4]), rc, err))
        return subprocess.CompletedProcess(cmd, rc, "", err)


def load(make_config, **generalize):
    over = {"launcher.command": COMMAND}
    over.update({"generalize." + k: v for k, v in generalize.items()})
    return config_module.load(str(make_config(over)))


def generalize(cfg, guest):
    results, failed = runner.run(runner.Context(cfg, RunningRoot(str(guest)), environ={}), {"generalize"})
    return (results[0] if results else None), failed


def users(guest):
    return [line.split(":")[0] for line in (guest / "etc/passwd").read_text().splitlines()]


@pytest.fixture
def fake(guest, monkeypatch):
    fake = FakeSystem(guest)
    monkeypatch.setattr(system, "run", fake)
    return fake


def test_build_user_is_deleted_last(make_config, guest, fake):
    result, failed = generalize(load(make_config, remove_build_user=True), guest)
    assert failed is None
    assert [c for c in fake.calls if c[0] != "sync"][-1] == ["userdel", "-f", "-r", "clara-build"]
    assert fake.calls[-1] == ["sync"]
    assert "clara-build" not in users(guest) and "root" in users(guest)
    assert result.detail.endswith("; build user clara-build deleted")
    fake.calls.clear()
    result, _ = generalize(load(make_config, remove_build_user=True), guest)
    assert result.status == "unchanged" and not any(c[0] == "userdel" for c in fake.calls)


def test_build_user_kept_without_the_flag(make_config, guest, fake):
    result, failed = generalize(load(make_config), guest)
    assert failed is None and "clara-build" in users(guest)
    assert not any(c[0] == "userdel" for c in fake.calls)


def test_azure_deprovision_removes_it_and_userdel_is_not_needed(make_config, guest, fake):
    result, failed = generalize(load(make_config, deprovision="waagent", remove_build_user=True), guest)
    assert failed is None
    assert [c for c in fake.calls if c[0] != "sync"][-1] == ["/usr/sbin/waagent", "-force", "-deprovision+user"]
    assert "build user clara-build removed by the deprovision" in result.detail


def test_a_user_the_deprovision_left_is_deleted_after_it(make_config, guest, fake):
    fake.waagent_removes = False
    _, failed = generalize(load(make_config, deprovision="waagent", remove_build_user=True), guest)
    assert failed is None
    cmds = [c for c in fake.calls if c[0] != "sync"]
    assert cmds[-2:] == [["/usr/sbin/waagent", "-force", "-deprovision+user"], ["userdel", "-f", "-r", "clara-build"]]


def test_userdel_failure_is_reported(make_config, guest, fake, capsys):
    fake.userdel_rc = 10
    _, failed = generalize(load(make_config, remove_build_user=True), guest)
    assert failed == "generalize"
    assert "`userdel -f -r clara-build` failed (exit 10): userdel: cannot lock /etc/passwd" in capsys.readouterr().err


def test_off_the_running_system_the_removal_is_skipped(make_config, guest):
    cfg = make_config({"launcher.command": COMMAND, "generalize.remove_build_user": True})
    proc = run_cli("--root", guest, "--config", cfg, "--only", "generalize", check_rc=0)
    assert "build user clara-build removal skipped: not the running system" in proc.stdout
    assert "clara-build" in users(guest)


@pytest.mark.parametrize("generalize_section, problem", [
    ({"deprovision": None, "build_user": None, "remove_build_user": True},
     "generalize.remove_build_user: is true but generalize.build_user is null"),
    ({"deprovision": None, "build_user": "packer", "remove_build_user": "yes"},
     "generalize.remove_build_user: expected true/false, got \"yes\""),
])
def test_config_errors(generalize_section, problem):
    data = dict(BASE_CONFIG, generalize=generalize_section)
    data["launcher"] = dict(data["launcher"], command=COMMAND)
    with pytest.raises(config_module.ConfigError, match=problem.replace("(", r"\(")):
        config_module.parse(data)


def test_config_defaults_keep_the_old_contract():
    data = dict(BASE_CONFIG, launcher=dict(BASE_CONFIG["launcher"], command=COMMAND))
    cfg = config_module.parse(data)
    assert cfg.generalize.remove_build_user is False and cfg.docker.nvidia_toolkit is None

"""provision/steps/security_updates.py against a fake apt: only the -security suite, holds kept,
the driver and kernel never touched, auto marks kept, idempotent."""
import json

import pytest

from provision import config as config_module
from provision import runner, system
from provision.report import StepError
from provision.steps import security_updates

from test_running_system import RunningRoot

DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nVERSION_ID="13"\nVERSION_CODENAME=trixie\n'
UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="22.04"\nVERSION_CODENAME=jammy\nUBUNTU_CODENAME=jammy\n'
DEBIAN_POLICY = """Package files:
 100 /var/lib/dpkg/status
     release a=now
 500 http://deb.debian.org/debian-security trixie-security/main amd64 Packages
     release v=13,o=Debian,a=stable-security,n=trixie-security,l=Debian-Security,c=main,b=amd64
 500 http://deb.debian.org/debian trixie/main amd64 Packages
     release v=13.1,o=Debian,a=stable,n=trixie,l=Debian,c=main,b=amd64
"""
NO_SECURITY_POLICY = DEBIAN_POLICY.split(" 500 http://deb.debian.org/debian-security")[0] + \
    " 500 http://deb.debian.org/debian trixie/main amd64 Packages\n"


class FakeApt:
    """apt-get / apt-cache / apt-mark over a tiny package table: {name: (installed, candidate, archives)}."""

    def __init__(self, packages, held=(), auto=(), policy=DEBIAN_POLICY, root=None):
        self.packages = dict(packages)
        self.held, self.auto, self.policy = set(held), set(auto), policy
        self.root = root            # where an added sources file makes apt see the security suite
        self.updates = 0
        self.calls = []

    def __call__(self, cmd, input_text=None, check=True, timeout=600, env=None):
        import subprocess
        self.calls.append((list(cmd), env))
        rc, out = self.answer(list(cmd))
        if check and rc:
            raise StepError("`{}` failed (exit {}): {}".format(" ".join(cmd[:4]), rc, out))
        return subprocess.CompletedProcess(cmd, rc, out, "")

    def answer(self, cmd):
        if cmd[:2] == ["apt-get", "update"]:
            self.updates += 1
            return 0, "Reading package lists...\n"
        if cmd[:2] == ["apt-cache", "policy"]:
            added = self.root and (self.root / "etc/apt/sources.list.d/clara-security.sources").exists()
            return 0, DEBIAN_POLICY if added else self.policy
        if cmd[:2] == ["apt-mark", "showhold"]:
            return 0, "".join(n + "\n" for n in sorted(self.held))
        if cmd[:2] == ["apt-mark", "showauto"]:
            return 0, "".join(n + "\n" for n in sorted(self.auto))
        if cmd[:2] == ["apt-mark", "auto"]:
            self.auto |= set(cmd[2:])
            return 0, ""
        if cmd[:3] == ["apt-get", "-s", "upgrade"]:
            lines = ["Reading package lists...", "The following packages have been kept back:"]
            for name, (old, new, archives) in sorted(self.packages.items()):
                if old != new and name not in self.held:
                    lines.append("Inst {} [{}] ({} {} [amd64])".format(name, old, new, archives))
                    lines.append("Conf {} ({} {} [amd64])".format(name, new, archives))
            return 0, "\n".join(lines) + "\n"
        if cmd[:2] == ["apt-get", "install"]:
            assert "--allow-change-held-packages" not in cmd
            for spec in (a for a in cmd if "=" in a and not a.startswith("Dpkg") and not a.startswith("DPkg")):
                name, version = spec.split("=", 1)
                if name in self.held:
                    return 100, "E: Held packages were changed and -y was used without --allow-change-held-packages."
                old, new, archives = self.packages[name]
                assert version == new
                self.packages[name] = (new, new, archives)
                self.auto.discard(name)          # apt marks what the command line names as manual
            return 0, ""
        return 127, "unexpected command"


def packages():
    return {
        "openssl": ("3.5.1-1", "3.5.1-1+deb13u1", "Debian-Security:13/stable-security"),
        "libssl3t64": ("3.5.1-1", "3.5.1-1+deb13u1", "Debian-Security:13/stable-security"),
        "tzdata": ("2025a-1", "2025b-0+deb13u1", "Debian:13.1/stable"),              # a point release: not security
        "linux-image-amd64": ("6.12.38-1", "6.12.41-1", "Debian-Security:13/stable-security"),
        "nvidia-driver": ("550.163.01-2", "550.163.01-3", "Debian-Security:13/stable-security"),
        "containerd": ("1.7.24~ds1-6", "1.7.24~ds1-6+deb13u1", "Debian-Security:13/stable-security"),
    }


@pytest.fixture
def apt_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/apt-get").write_text("#!/bin/sh\n")
    (root / "etc/os-release").write_text(DEBIAN)
    return root


def context(make_config, root, overrides=None, dry_run=False):
    cfg = config_module.load(str(make_config(dict({"security_updates": {"apply": True}}, **(overrides or {})))))
    return runner.Context(cfg, RunningRoot(str(root)), dry_run=dry_run, environ={})


def run_step(monkeypatch, fake, ctx):
    monkeypatch.setattr(system, "run", fake)
    return security_updates.run(ctx)


def test_only_the_security_suite_holds_driver_and_kernel_kept(make_config, apt_root, monkeypatch):
    fake = FakeApt(packages(), held={"containerd"}, auto={"libssl3t64"})
    result = run_step(monkeypatch, fake, context(make_config, apt_root))
    assert result.status == "changed"
    install = next(c for c, _ in fake.calls if c[:2] == ["apt-get", "install"])
    assert [a for a in install if "=" in a and not a.startswith(("Dpkg", "DPkg"))] == [
        "libssl3t64=3.5.1-1+deb13u1", "openssl=3.5.1-1+deb13u1"]
    assert "--only-upgrade" in install and "-y" in install and "Dpkg::Options::=--force-confold" in install
    assert all(env["DEBIAN_FRONTEND"] == "noninteractive" for _, env in fake.calls)
    assert fake.packages["tzdata"][0] == "2025a-1"                     # not from the security suite
    assert fake.packages["linux-image-amd64"][0] == "6.12.38-1"        # the kernel stays
    assert fake.packages["nvidia-driver"][0] == "550.163.01-2"         # the driver stays
    assert fake.packages["containerd"][0] == "1.7.24~ds1-6"            # held
    assert "libssl3t64" in fake.auto                                   # still automatically installed
    assert "upgraded 2 package(s) from trixie-security" in result.detail
    assert "openssl 3.5.1-1 -> 3.5.1-1+deb13u1" in result.detail
    assert "kept as they are: containerd, linux-image-amd64, nvidia-driver" in result.detail
    report = json.loads((apt_root / "var/lib/clara-image/security-updates.json").read_text())
    assert report["suite"] == "trixie-security"
    assert {u["name"] for u in report["upgraded"]} == {"openssl", "libssl3t64"}


def test_second_run_changes_nothing(make_config, apt_root, monkeypatch):
    fake = FakeApt(packages(), held={"containerd"})
    ctx = context(make_config, apt_root)
    assert run_step(monkeypatch, fake, ctx).status == "changed"
    again = security_updates.run(ctx)
    assert again.status == "unchanged"
    assert again.detail.startswith("no security update pending from trixie-security")
    assert sum(1 for c, _ in fake.calls if c[:2] == ["apt-get", "install"]) == 1


def test_ubuntu_security_suite_listed_beside_updates(make_config, apt_root, monkeypatch):
    (apt_root / "etc/os-release").write_text(UBUNTU)
    policy = (" 500 http://security.ubuntu.com/ubuntu jammy-security/main amd64 Packages\n"
              "     release v=22.04,o=Ubuntu,a=jammy-security,n=jammy,l=Ubuntu,c=main,b=amd64\n")
    fake = FakeApt({"libssl3": ("3.0.2-0ubuntu1.10", "3.0.2-0ubuntu1.12",
                                "Ubuntu:22.04/jammy-updates, Ubuntu:22.04/jammy-security"),
                    "snapd": ("2.58", "2.61", "Ubuntu:22.04/jammy-updates")}, policy=policy)
    result = run_step(monkeypatch, fake, context(make_config, apt_root))
    assert "upgraded 1 package(s) from jammy-security: libssl3" in result.detail
    assert fake.packages["snapd"][0] == "2.58"


def test_a_debian_base_without_the_security_suite_gets_it_at_its_mirror(make_config, apt_root, monkeypatch):
    (apt_root / "usr/share/keyrings").mkdir(parents=True)
    (apt_root / "usr/share/keyrings/debian-archive-keyring.gpg").write_bytes(b"keyring")
    fake = FakeApt(packages(), policy=NO_SECURITY_POLICY, root=apt_root)
    ctx = context(make_config, apt_root)
    result = run_step(monkeypatch, fake, ctx)
    assert result.detail.startswith("added trixie-security (/etc/apt/sources.list.d/clara-security.sources); "
                                    "upgraded 3 package(s) from trixie-security")
    assert (apt_root / "etc/apt/sources.list.d/clara-security.sources").read_text() == (
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: trixie-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    assert fake.updates == 2                                      # the lists read again with the new suite
    again = security_updates.run(ctx)
    assert again.status == "unchanged" and fake.updates == 3     # nothing added twice


def test_no_security_source_elsewhere_is_refused(make_config, apt_root, monkeypatch):
    (apt_root / "etc/os-release").write_text(UBUNTU)
    policy = " 500 http://archive.ubuntu.com/ubuntu jammy/main amd64 Packages\n"
    with pytest.raises(StepError, match="no jammy-security suite.*security.apply_updates to false"):
        run_step(monkeypatch, FakeApt(packages(), policy=policy), context(make_config, apt_root))
    # A Debian mirror without deb.debian.org's layout: where its security suite lives cannot be told.
    (apt_root / "etc/os-release").write_text(DEBIAN)
    policy = " 500 http://mirror.example/pub/trixie trixie/main amd64 Packages\n"
    with pytest.raises(StepError, match="no trixie-security suite"):
        run_step(monkeypatch, FakeApt(packages(), policy=policy), context(make_config, apt_root))
    assert not (apt_root / "etc/apt/sources.list.d/clara-security.sources").exists()


def test_dry_run_updates_nothing(make_config, apt_root, monkeypatch):
    fake = FakeApt(packages())
    result = run_step(monkeypatch, fake, context(make_config, apt_root, dry_run=True))
    assert result.status == "changed" and result.detail.startswith("would upgrade 3 package(s)")
    assert not any(c[:2] in (["apt-get", "install"], ["apt-get", "update"]) for c, _ in fake.calls)


def test_off_and_not_running(make_config, apt_root, monkeypatch, guest):
    fake = FakeApt(packages())
    monkeypatch.setattr(system, "run", fake)
    off = security_updates.run(context(make_config, apt_root, {"security_updates": {"apply": False}}))
    assert off.status == "skipped" and "security.apply_updates is false" in off.detail
    cfg = config_module.load(str(make_config({"security_updates": {"apply": True}})))
    from provision import fsutil
    elsewhere = security_updates.run(runner.Context(cfg, fsutil.Root(str(guest)), environ={}))
    assert elsewhere.status == "skipped"
    assert fake.calls == []


def test_config_key_checked_and_absent_means_off(make_config):
    with pytest.raises(config_module.ConfigError, match="security_updates.apply: expected true/false"):
        config_module.load(str(make_config({"security_updates": {"apply": "yes"}})))
    assert config_module.load(str(make_config())).security_updates.apply is False


def test_not_debian_is_refused(make_config, apt_root, monkeypatch):
    (apt_root / "etc/os-release").write_text('ID=fedora\nVERSION_CODENAME=""\n')
    with pytest.raises(StepError, match="Debian and Ubuntu"):
        run_step(monkeypatch, FakeApt(packages()), context(make_config, apt_root))


def test_runs_right_after_driver_check():
    from provision.steps import NAMES
    assert NAMES.index("security_updates") == NAMES.index("driver_check") + 1

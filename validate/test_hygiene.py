"""Image hygiene (after kubernetes-sigs/image-builder's goss checks): nothing of the build VM's
identity, credentials or history may survive into instances of the image."""

from __future__ import annotations

import shlex

import pytest

from validate import checks
from validate.remote import explain, require


@pytest.fixture(scope="module")
def boot_epoch(remote):
    return remote.clock()[1]


@pytest.fixture(scope="module")
def slack(expect):
    # Tolerance between the kernel's idea of boot time and file mtimes (clock steps at boot).
    return float(expect.get("clock_slack_s", 10))


def test_ssh_host_keys_generated_on_this_boot(remote, expect, boot_epoch, slack):
    r = remote.run("stat -c '%Y %n' /etc/ssh/ssh_host_*_key.pub /etc/ssh/ssh_host_*_key")
    entries = checks.parse_stat_lines(r.stdout) if r.rc == 0 else []
    require(entries, f"no SSH host keys in /etc/ssh: {explain(r)}")
    baked = checks.older_than(entries, boot_epoch, slack)
    require(not baked, f"SSH host keys older than this boot (baked into the image): {baked}")

    known = set(expect.get("build_host_key_fingerprints") or ())
    if known:
        pubs = [p for _, p in entries if p.endswith(".pub")]
        reused = []
        for path in pubs:
            _, text = remote.read(path)
            if text.strip() and checks.fingerprint(text) in known:
                reused.append(path)
        require(not reused, f"SSH host keys identical to the build VM's: {reused}")


def test_machine_id(remote, expect):
    exists, text = remote.read("/etc/machine-id")
    mid = text.strip()
    require(exists and mid, "/etc/machine-id is missing or empty")
    require(checks.valid_machine_id(mid), f"/etc/machine-id is not 32 hex digits: {mid!r}")
    build = expect.get("build_machine_id")
    require(not build or mid != build, "/etc/machine-id equals the build VM's (not regenerated)")


def test_no_registry_credentials(remote):
    files = remote.read_found("ls -1d /root/.docker/config.json /home/*/.docker/config.json 2>/dev/null",
                              as_root=True)
    leaks = {}
    for path, text in files.items():
        auths = checks.docker_auths(text, path)
        if auths:
            leaks[path] = auths
    require(not leaks, f"registry credentials left in the image: {leaks}")


HISTORY = r"\( -name '.*_history' -o -name '.*history' -o -name '.lesshst' -o -name '.viminfo' \)"


def test_no_shell_history(remote, boot_epoch, slack):
    r = remote.root(f"find /root /home -maxdepth 2 -type f {HISTORY} -size +0c "
                    r"-printf '%T@ %p\n' 2>/dev/null; true")
    baked = checks.older_than(checks.parse_stat_lines(r.stdout), boot_epoch, slack)
    require(not baked, f"history files with content from before this boot: {baked}")


def test_authorized_keys_only_test_key(remote, expect):
    test_key = expect.get("test_public_key")
    if not test_key:
        pytest.skip("expect.test_public_key not given: cannot tell the test key from others")
    files = remote.read_found("find /root /home -maxdepth 3 -type f -path '*/.ssh/authorized_keys*' 2>/dev/null",
                              as_root=True)
    foreign = {}
    for path, text in files.items():
        bad = checks.foreign_keys(text, [test_key])
        if bad:
            foreign[path] = bad
    require(not foreign, f"authorized_keys hold keys other than the test key: {foreign}")


def test_no_provisioning_leftovers(remote):
    r = remote.root("ls -ld /tmp/clara-provision 2>/dev/null")
    require(r.rc != 0, f"/tmp/clara-provision was left in the image: {r.stdout.strip()}")


def login_user(remote) -> str:
    r = remote.run("id -un")
    require(r.rc == 0 and r.stdout.strip(), f"cannot tell which user the checks log in as: {explain(r)}")
    return r.stdout.strip()


def test_build_only_users_removed(remote, expect):
    """The build user is gone where the build created it (expect.removed_users), and the checks do
    not log in as the build user: a test VM created with that user's name would bring it back
    (Azure's admin user, GCE's ssh-keys metadata and cloud-init all create the user they are
    given), so the proof that it is gone would be void."""
    build = expect.get("build_user")
    users = list(expect.get("removed_users") or ())
    if not build and not users:
        pytest.skip("expect names no build user (expect.build_user, expect.removed_users)")
    login = login_user(remote)
    require(login != build and login not in users,
            f"the checks log in as {login!r}, the build user: the test VM must log in as a test-only user "
            "(clouds.base.TEST_USER), or it recreates the user whose absence this check proves")
    present = {}
    for user in users:
        r = remote.run(f"getent passwd {shlex.quote(user)}")
        if r.rc == 0:
            present[user] = r.stdout.strip()
    require(not present, f"build user(s) still in the image: {present}")

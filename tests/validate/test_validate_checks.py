"""Unit tests of validate/checks.py: no host needed."""

import json
import shutil
import subprocess

import pytest

from validate import checks

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEiF/8zhMuFDcuahuao5uo+vypMwajKd4qS2eoZPoUzp me@x"
KEY_FP = "SHA256:wTvy5RIvti1VbmxNEsQBzmgJ11aTYnyDzU1qT8J5ESg"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDi5QH1FqdB3xn8R9KZJ0nWg2Gm0p1tq3rQ5l3Qk9X2Z other"
D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


# --- expect ------------------------------------------------------------------------------------

def test_load_expect_freezes(tmp_path):
    p = tmp_path / "expect.json"
    p.write_text(json.dumps({"images": [{"ref": "x", "digest": None}], "gpu": {"count": 1}}))
    e = checks.load_expect(str(p))
    assert e["images"][0]["ref"] == "x"
    with pytest.raises(TypeError):
        e["gpu"]["count"] = 2
    with pytest.raises(TypeError):
        e["new"] = 1
    assert isinstance(e["images"], tuple)
    assert checks.thaw(e) == {"images": [{"ref": "x", "digest": None}], "gpu": {"count": 1}}


@pytest.mark.parametrize("content,needle", [
    (None, "cannot read expect file"),
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
])
def test_load_expect_errors_name_the_file(tmp_path, content, needle):
    p = tmp_path / "expect.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(checks.ExpectError) as ei:
        checks.load_expect(str(p))
    assert needle in str(ei.value) and str(p) in str(ei.value)


def test_load_expect_requires_a_path():
    with pytest.raises(checks.ExpectError, match="--expect FILE is required"):
        checks.load_expect(None)


# --- daemon.json ---------------------------------------------------------------------------------

def test_daemon_json_runtime_and_default():
    d = checks.parse_daemon_json(json.dumps({
        "default-runtime": "nvidia",
        "runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": []}},
    }))
    assert checks.runtime_path(d) == "/usr/bin/nvidia-container-runtime"
    assert checks.default_runtime(d) == "nvidia"


def test_daemon_json_without_runtimes():
    d = checks.parse_daemon_json('{"data-root": "/mnt/docker"}')
    assert checks.runtime_path(d) is None
    assert checks.default_runtime(d) == "runc"
    assert checks.runtime_path({"runtimes": "bogus"}) is None


@pytest.mark.parametrize("text", ["", "{", "[]", '"x"'])
def test_daemon_json_invalid(text):
    with pytest.raises(checks.CheckError, match="daemon.json"):
        checks.parse_daemon_json(text)


# --- versions, umask, clock ----------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("5.6.1\n", "5.6.1"), ("v5.6.1", "5.6.1"), ("  v2.29.1 \n", "2.29.1"),
    ("Docker Compose version v2.29.1", "2.29.1"), ("2.0.0-rc.3", "2.0.0-rc.3"),
])
def test_normalize_version(text, want):
    assert checks.normalize_version(text) == want


def test_versions_equal():
    assert checks.versions_equal("v5.6.1\n", "5.6.1")
    assert checks.versions_equal("5.6.1", "v5.6.1")
    assert not checks.versions_equal("5.6.10", "5.6.1")
    assert not checks.versions_equal("", "5.6.1")


def test_parse_umask():
    assert checks.parse_umask("0002\n") == 0o002
    assert checks.parse_umask("bash: no job control in this shell\n0022\n") == 0o022
    assert checks.parse_umask("077") == 0o077
    assert checks.umask_text("0002") == 2
    with pytest.raises(checks.CheckError):
        checks.parse_umask("umask: not found")


def test_clock_and_stat_lines():
    now, boot = checks.parse_clock("1700000000\n100.50 200.00\n")
    assert now == 1700000000 and boot == pytest.approx(1700000000 - 100.5)
    entries = checks.parse_stat_lines(
        "1699999000 /etc/ssh/a.pub\n1699999950.25 /root/.bash_history\n")
    assert entries == [(1699999000.0, "/etc/ssh/a.pub"), (1699999950.25, "/root/.bash_history")]
    assert checks.older_than(entries, boot) == ["/etc/ssh/a.pub"]
    assert checks.older_than(entries, boot, slack=1000) == []
    assert checks.parse_uptime("12.5 3.0") == 12.5
    with pytest.raises(checks.CheckError):
        checks.parse_clock("garbage")


# --- paths ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,prefixes,hit", [
    ("/mnt/docker", ["/mnt"], "/mnt"),
    ("/mnt", ["/mnt/"], "/mnt/"),
    ("/mnt2/docker", ["/mnt"], None),
    ("/var/lib/docker", ["/mnt", "/mnt/resource"], None),
    ("/mnt/resource/docker", ["/mnt/resource"], "/mnt/resource"),
    ("/var/lib/docker", [], None),
])
def test_is_under(path, prefixes, hit):
    assert checks.is_under(path, prefixes) == hit


# --- images --------------------------------------------------------------------------------------

def test_repo_digests():
    got = checks.repo_digests([f"nvcr.io/nvidia/clara-train-sdk@{D1}"])
    assert checks.digest_in(got, D1)
    assert checks.digest_in(got, D1.upper().replace("SHA256", "sha256"))
    assert not checks.digest_in(got, D2)
    assert checks.repo_digests(None) == [] and checks.repo_digests([]) == []
    assert not checks.digest_in([], D1)
    with pytest.raises(checks.CheckError):
        checks.repo_digests("{broken")


def test_is_digest():
    assert checks.is_digest(D1)
    assert not checks.is_digest("sha256:abc") and not checks.is_digest(None)


# --- registry credentials -------------------------------------------------------------------------

def test_docker_auths():
    assert checks.docker_auths("") == []
    assert checks.docker_auths('{"auths": {}}') == []
    assert checks.docker_auths('{"credsStore": "pass"}') == []
    assert checks.docker_auths('{"auths": {"nvcr.io": {"auth": "eA=="}, "a.io": {}}}') == \
        ["a.io", "nvcr.io"]
    with pytest.raises(checks.CheckError, match="/root/.docker/config.json"):
        checks.docker_auths("{", "/root/.docker/config.json")


# --- ssh keys ------------------------------------------------------------------------------------

def test_fingerprint_matches_openssh_vector():
    assert checks.fingerprint(KEY) == KEY_FP


@pytest.mark.skipif(not shutil.which("ssh-keygen"), reason="ssh-keygen not installed")
def test_fingerprint_matches_ssh_keygen(tmp_path):
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(key)],
                   check=True)
    out = subprocess.run(["ssh-keygen", "-lf", str(key) + ".pub"], check=True,
                         capture_output=True, text=True).stdout
    assert checks.fingerprint((tmp_path / "k.pub").read_text()) == out.split()[1]


def test_key_id_ignores_options_and_comments():
    aws_style = ('no-port-forwarding,command="echo \'Please login as the user \\"ubuntu\\" '
                 'rather than the user \\"root\\".\';echo;sleep 10;exit 142" ' + KEY)
    assert checks.key_id(aws_style) == checks.key_id(KEY)
    assert checks.key_id("# comment") is None and checks.key_id("") is None
    with pytest.raises(checks.CheckError):
        checks.fingerprint("not a key")


def test_foreign_keys():
    text = f"# managed\n{KEY}\n\n{OTHER}\ngarbage line\n"
    bad = checks.foreign_keys(text, [KEY])
    assert len(bad) == 2 and bad[0].startswith("ssh-ed25519") and bad[1] == "garbage line"
    assert checks.foreign_keys(KEY + "\n", [KEY.rsplit(" ", 1)[0]]) == []  # comment ignored
    assert checks.foreign_keys("", [KEY]) == []


# --- gpu, machine id, release --------------------------------------------------------------------

def test_gpu_mismatches():
    names = checks.gpu_names("Tesla T4\n\n")
    assert names == ["Tesla T4"]
    assert checks.gpu_mismatches(names, "T4", 1) == []
    assert checks.gpu_mismatches(names, "t4", 1) == []
    assert len(checks.gpu_mismatches(names, "A100", 2)) == 2
    assert "lists 0" in checks.gpu_mismatches([], "T4", 1)[0]


@pytest.mark.parametrize("name, model, matches", [
    # nvidia-smi's names (--query-gpu=name): the model is a whole token, never a prefix of another.
    ("NVIDIA L40S", "L4", False), ("NVIDIA A100-SXM4-40GB", "A10", False), ("Tesla P40", "P4", False),
    ("NVIDIA A10G", "A10", False), ("NVIDIA H100 80GB HBM3", "H10", False),
    ("NVIDIA L4", "L4", True), ("NVIDIA A100-SXM4-40GB", "A100", True), ("NVIDIA A100 80GB PCIe", "A100", True),
    ("Tesla T4", "T4", True), ("Tesla T4", "t4", True), ("NVIDIA A10G", "A10G", True), ("Tesla P4", "P4", True),
    ("NVIDIA H100 80GB HBM3", "H100", True), ("NVIDIA L40S", "L40S", True),
])
def test_gpu_model_is_matched_as_a_whole_token(name, model, matches):
    assert (checks.gpu_mismatches([name], model, 1) == []) is matches


def test_driver_problems():
    assert checks.driver_problems("570.172.08\n", 470, 579) == []
    (problem,) = checks.driver_problems("580.95.05\n", 470, 579)
    assert "580.95.05" in problem and "470-579" in problem
    with pytest.raises(checks.CheckError, match="driver version"):
        checks.driver_problems("N/A\n", 470, 579)


def test_driver_problems_accept_the_workloads_extra_branches():
    """MONAI's window: 560 and newer, or the datacenter branches R470/R525/R535/R545 (monai.yaml)."""
    assert checks.driver_problems("535.230.02\n", 560, 999, also=(470, 525, 535, 545)) == []
    (problem,) = checks.driver_problems("550.54.15\n", 560, 999, also=(470, 525, 535, 545))
    assert "branch 550" in problem and "560-999 or 470, 525, 535, 545" in problem


def test_machine_id():
    assert checks.valid_machine_id("0123456789abcdef0123456789abcdef\n")
    assert not checks.valid_machine_id("") and not checks.valid_machine_id("uninitialized")


def test_release_problems():
    exp = {"fingerprint": "f" * 64, "compose_version": "5.6.1",
           "images": [{"ref": "nvcr.io/nvidia/clara-train-sdk:v4.1", "digest": None}]}
    good = {"schema": 1, "fingerprint": "f" * 64, "compose_version": "v5.6.1",
            "images": [{"ref": "nvcr.io/nvidia/clara-train-sdk:v4.1", "digest": D1}]}
    assert checks.release_problems(json.dumps(good), exp) == []
    bad = dict(good, fingerprint="0" * 64, images=[], compose_version="2.0.0")
    probs = checks.release_problems(json.dumps(bad), exp)
    assert len(probs) == 3 and any("fingerprint" in p for p in probs)
    with pytest.raises(checks.CheckError):
        checks.release_problems("nope", exp)


# --- Remote: root commands through sudo for a non-root test user ----------------------------------

class _Result:
    def __init__(self, rc, stdout="", stderr="", command=b""):
        self.rc, self.stdout, self.stderr, self.command = rc, stdout, stderr, command


class _FakeHost:
    def __init__(self, uid):
        self.uid, self.commands = uid, []

    def run(self, cmd):
        self.commands.append(cmd)
        if cmd == "id -u":
            return _Result(0, f"{self.uid}\n")
        return _Result(0, "ok\n", command=cmd.encode())


def test_remote_uses_sudo_only_when_not_root():
    from validate.remote import Remote

    user = Remote(_FakeHost(1000))
    assert user.root_cmd("cat /root/x 'y'") == "sudo -n sh -c 'cat /root/x '\"'\"'y'\"'\"''"
    user.docker("info", timeout=30)
    assert user.host.commands[-1] == "sudo -n sh -c 'timeout 30 docker info'"
    root = Remote(_FakeHost(0))
    assert root.root_cmd("cat /root/x") == "cat /root/x"


def test_explain_is_one_line():
    from validate.remote import explain

    text = explain(_Result(1, "", "Cannot connect\n  to the daemon\n", b"docker info"))
    assert text == "`docker info` exited 1: Cannot connect to the daemon"

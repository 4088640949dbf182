"""provision/steps/sbom_collect.py: the raw inventory (contract 1 in docs of issue #25) from a fake
root holding real Debian 12 dpkg entries, Python metadata and the compose plugin; each pre-pulled
image read from a fake `docker export` tar without running it; a second run changes nothing."""
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from provision import config as config_module, fsutil, runner
from provision.steps import sbom_collect as step
from provision_support import COMPOSE_BYTES, run_cli, statuses
from tests.provision.test_pull_space import RunningRoot

DATA = Path(__file__).parent / "data"
REF = "nvcr.io/nvidia/clara-train-sdk:v4.1"
DIGEST = "sha256:" + "cd" * 32
DEBIAN_OS = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
# A removed package whose configuration stays: dpkg keeps its stanza, its files are gone.
REMOVED = ("Package: docker-ce\nStatus: deinstall ok config-files\nPriority: optional\nSection: admin\n"
           "Installed-Size: 100000\nArchitecture: amd64\nVersion: 5:20.10.24~3-0~debian-bookworm\n")


def write(path, text, mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    path.chmod(mode)


@pytest.fixture
def sbom_root(guest):
    status = (DATA / "dpkg-status-debian12").read_text()
    write(guest / "var/lib/dpkg/status", status.rstrip("\n") + "\n\n" + REMOVED)
    write(guest / "usr/lib/os-release", DEBIAN_OS)
    (guest / "etc/os-release").symlink_to("../usr/lib/os-release")
    site = guest / "usr/lib/python3/dist-packages"
    write(site / "PyYAML-6.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: PyYAML\nVersion: 6.0\n\nName: not-this\n")
    write(site / "Pygments-2.14.0.egg-info", "Metadata-Version: 2.1\nName: Pygments\nVersion: 2.14.0\n")
    write(site / "six-1.16.0.egg-info/PKG-INFO", "Metadata-Version: 1.2\nName: six\nVersion: 1.16.0\n")
    write(guest / "usr/local/lib/python3.11/dist-packages/requests-2.32.3.dist-info/METADATA",
          "Metadata-Version: 2.1\nName: requests\nVersion: 2.32.3\n")
    write(guest / "usr/local/lib/docker/cli-plugins/docker-compose", COMPOSE_BYTES, 0o755)
    return guest


def test_parses_real_dpkg_entries_with_their_source_packages():
    text = (DATA / "dpkg-status-debian12").read_text() + "\n" + REMOVED
    found = {p["name"]: p for p in step.dpkg_packages(text)}
    assert "docker-ce" not in found                                  # config-files only: not on disk
    assert found["libssl3"] == {"name": "libssl3", "version": "3.0.19-1~deb12u2", "arch": "amd64",
                                "source": "openssl", "source_version": "3.0.19-1~deb12u2"}
    assert found["openssl"]["source"] == "openssl"                   # no Source field: itself
    # A binNMU: the source's version differs from the binary's.
    assert (found["python3-yaml"]["source"], found["python3-yaml"]["source_version"]) == ("pyyaml", "6.0-3")
    assert (found["bash"]["version"], found["bash"]["source_version"]) == ("5.2.15-2+b8", "5.2.15-2")
    assert found["zlib1g"]["version"] == "1:1.2.13.dfsg-1" and found["zlib1g"]["source"] == "zlib"
    assert found["tzdata"]["arch"] == "all"
    assert [p["name"] for p in step.dpkg_packages(text)] == sorted(found)


def test_os_release_quotes_and_missing_file():
    assert step.os_release(DEBIAN_OS) == {"id": "debian", "version_id": "12",
                                          "pretty_name": "Debian GNU/Linux 12 (bookworm)"}
    assert step.os_release("ID='ubuntu'\nVERSION_ID=\"20.04\"\n# comment\n")["version_id"] == "20.04"
    assert step.os_release(None) is None


def test_the_raw_inventory_under_another_root(make_config, sbom_root):
    cfg = make_config({"images.0.digest": DIGEST})
    first = run_cli("--root", sbom_root, "--config", cfg, "--only", "sbom_collect", check_rc=0)
    assert statuses(first) == {"sbom_collect": "changed"}
    path = sbom_root / "var/lib/clara-image/sbom-raw.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    data = json.loads(path.read_text())
    assert data["schema"] == 1
    assert data["os"] == {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"}
    assert len(data["packages"]) == 7
    assert data["python"] == [
        {"name": "Pygments", "version": "2.14.0", "location": "/usr/lib/python3/dist-packages"},
        {"name": "PyYAML", "version": "6.0", "location": "/usr/lib/python3/dist-packages"},
        {"name": "requests", "version": "2.32.3", "location": "/usr/local/lib/python3.11/dist-packages"},
        {"name": "six", "version": "1.16.0", "location": "/usr/lib/python3/dist-packages"}]
    compose = {"version": "2.29.7", "sha256": hashlib.sha256(COMPOSE_BYTES).hexdigest()}
    assert data["components"]["compose"] == compose
    assert data["components"]["docker"] is None and data["components"]["nvidia_driver"] is None
    # Under another root the images cannot be read: said so, never an empty image.
    assert data["images"] == [{"ref": REF, "digest": DIGEST, "os": None, "packages": [], "python": [],
                               "unread": "not the running system"}]
    second = run_cli("--root", sbom_root, "--config", cfg, "--only", "sbom_collect", check_rc=0)
    assert statuses(second) == {"sbom_collect": "unchanged"}


def test_dry_run_writes_nothing(make_config, sbom_root):
    proc = run_cli("--root", sbom_root, "--config", make_config(), "--only", "sbom_collect", "--dry-run", check_rc=0)
    assert "would write /var/lib/clara-image/sbom-raw.json: 7 packages, 4 Python distributions, 1 images" in proc.stdout
    assert not (sbom_root / "var/lib/clara-image").exists()


def test_driver_and_docker_from_dpkg(make_config, sbom_root):
    status = sbom_root / "var/lib/dpkg/status"
    extra = ("Package: docker.io\nStatus: install ok installed\nArchitecture: amd64\nSource: docker.io (26.1.5+dfsg1-9)\n"
             "Version: 26.1.5+dfsg1-9+b2\n\nPackage: containerd\nStatus: install ok installed\nArchitecture: amd64\n"
             "Version: 1.7.24~ds1-6+b2\n\nPackage: nvidia-driver-535\nStatus: install ok installed\n"
             "Architecture: amd64\nVersion: 535.183.01-0ubuntu0.22.04.1\n")
    status.write_text(status.read_text() + "\n" + extra)
    ctx = runner.Context(config_module.load(str(make_config())), fsutil.Root(str(sbom_root)), environ={})
    found = step.components(ctx, step.dpkg_packages(status.read_text()))
    assert found["docker"] == "26.1.5+dfsg1-9+b2" and found["containerd"] == "1.7.24~ds1-6+b2"
    assert found["nvidia_driver"] == "535.183.01"


# --- an image read from `docker export` -----------------------------------------------------------

UBUNTU_OS = ('NAME="Ubuntu"\nVERSION="20.04.3 LTS (Focal Fossa)"\nID=ubuntu\nID_LIKE=debian\n'
             'PRETTY_NAME="Ubuntu 20.04.3 LTS"\nVERSION_ID="20.04"\n')
UBUNTU_STATUS = ("Package: libssl1.1\nStatus: install ok installed\nPriority: optional\nSection: libs\n"
                 "Architecture: amd64\nMulti-Arch: same\nSource: openssl\nVersion: 1.1.1f-1ubuntu2.8\n"
                 "Description: Secure Sockets Layer toolkit - shared libraries\n This package is part of the OpenSSL\n\n"
                 "Package: bash\nEssential: yes\nStatus: install ok installed\nArchitecture: amd64\n"
                 "Version: 5.0-6ubuntu1.1\n")


def export_tar(path):
    """A docker export: os-release behind a symlink, dpkg status, conda and system Python metadata,
    a hard-linked METADATA, and a large file the reader must stream past."""
    def add(tar, name, data=b"", kind=tarfile.REGTYPE, link=""):
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    site = "opt/conda/lib/python3.8/site-packages"
    with tarfile.open(path, "w") as tar:
        add(tar, ".dockerenv")
        add(tar, "etc/os-release", kind=tarfile.SYMTYPE, link="../usr/lib/os-release")
        add(tar, "usr/lib/os-release", UBUNTU_OS.encode())
        add(tar, "var/lib/dpkg/status", UBUNTU_STATUS.encode())
        add(tar, "opt/conda/bin/python3.8", os.urandom(1 << 20))
        add(tar, f"{site}/numpy-1.21.2.dist-info/METADATA", b"Metadata-Version: 2.1\nName: numpy\nVersion: 1.21.2\n")
        add(tar, f"{site}/numpy-1.21.2.dist-info/RECORD", b"numpy/__init__.py,,\n")
        add(tar, f"{site}/monai-0.8.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: monai\nVersion: 0.8.0\n")
        add(tar, f"{site}/pyyaml-5.4.1.egg-info", b"Metadata-Version: 1.1\nName: PyYAML\nVersion: 5.4.1\n")
        add(tar, "usr/lib/python3/dist-packages/monai-0.8.0.dist-info/METADATA", kind=tarfile.LNKTYPE,
            link=f"{site}/monai-0.8.0.dist-info/METADATA")


def test_reads_only_the_files_it_needs_from_an_export(tmp_path):
    export_tar(tmp_path / "image.tar")
    with open(tmp_path / "image.tar", "rb") as stream:
        files = step.read_export(stream)
    assert "opt/conda/bin/python3.8" not in files and ".dockerenv" not in files
    found = step.contents(files)
    assert found["os"] == {"id": "ubuntu", "version_id": "20.04", "pretty_name": "Ubuntu 20.04.3 LTS"}
    assert [(p["name"], p["source"], p["version"]) for p in found["packages"]] == [
        ("bash", "bash", "5.0-6ubuntu1.1"), ("libssl1.1", "openssl", "1.1.1f-1ubuntu2.8")]
    conda = "/opt/conda/lib/python3.8/site-packages"
    assert found["python"] == [{"name": "monai", "version": "0.8.0", "location": conda},
                               {"name": "monai", "version": "0.8.0", "location": "/usr/lib/python3/dist-packages"},
                               {"name": "numpy", "version": "1.21.2", "location": conda},
                               {"name": "PyYAML", "version": "5.4.1", "location": conda}]


FAKE_DOCKER = """#!/usr/bin/env python3
import json, os, sys
state = os.environ["FAKE_DOCKER_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls"), "a") as f:
    f.write(json.dumps(args) + "\\n")
containers = os.path.join(state, "containers.json")
known = json.load(open(containers)) if os.path.exists(containers) else {}
volumes = os.path.join(state, "volumes.json")
anonymous = json.load(open(volumes)) if os.path.exists(volumes) else []
if args[0] == "rm" and "-f" in args:
    name = [a for a in args[1:] if not a.startswith("-")][0]
    known.pop(name, None)
    if "--volumes" in args or "-v" in args:     # else the image's VOLUMEs stay, as dockerd keeps them
        anonymous = [v for v in anonymous if v != name]
elif args[0] == "create":
    known[args[args.index("--name") + 1]] = args[-1]
    anonymous.append(args[args.index("--name") + 1])     # the image declares a VOLUME: an anonymous volume
elif args[0] == "export":
    if os.environ.get("FAKE_EXPORT_HANG"):
        import time
        sys.stdout.buffer.write(b"x" * 512)
        sys.stdout.flush()
        time.sleep(60)
    if os.environ.get("FAKE_EXPORT_FAIL"):
        sys.stderr.write("Error response from daemon: no space left on device\\n")
        sys.exit(1)
    with open(os.path.join(state, "image.tar"), "rb") as f:
        sys.stdout.buffer.write(f.read())
elif args[:2] == ["image", "inspect"]:
    digests = [args[-1].split(":")[0] + "@" + os.environ["FAKE_DIGEST"]]
    whole = {"Id": "sha256:" + "0" * 64, "RepoDigests": digests, "Config": {"Labels": None}}
    print(json.dumps(whole if args[args.index("--format") + 1] == "{{json .}}" else digests))
else:
    sys.exit(1)
json.dump(known, open(containers, "w"))
json.dump(anonymous, open(volumes, "w"))
"""


@pytest.fixture
def docker_bin(tmp_path, monkeypatch):
    state, bin_dir = tmp_path / "docker-state", tmp_path / "bin"
    state.mkdir()
    write(bin_dir / "docker", FAKE_DOCKER, 0o755)
    export_tar(state / "image.tar")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    monkeypatch.setenv("FAKE_DIGEST", DIGEST)
    return state


def running_ctx(make_config, root):
    cfg = config_module.load(str(make_config({"images.0.digest": DIGEST})))
    return runner.Context(cfg, RunningRoot(str(root)), environ={})


def test_each_image_is_read_from_its_filesystem_and_its_container_removed(make_config, sbom_root, docker_bin):
    (entry,) = step.image_entries(running_ctx(make_config, sbom_root))
    assert entry["ref"] == REF and entry["digest"] == DIGEST and "unread" not in entry
    assert entry["os"]["id"] == "ubuntu" and {p["name"] for p in entry["packages"]} == {"bash", "libssl1.1"}
    assert {p["name"] for p in entry["python"]} == {"monai", "numpy", "PyYAML"}
    calls = [json.loads(line) for line in (docker_bin / "calls").read_text().splitlines()]
    create = next(c for c in calls if c[0] == "create")
    assert create[-1] == f"nvcr.io/nvidia/clara-train-sdk@{DIGEST}"       # the pinned content, by digest
    assert "start" not in {c[0] for c in calls} and "run" not in {c[0] for c in calls}
    assert calls[-1][:3] == ["rm", "-f", "--volumes"] and json.loads((docker_bin / "containers.json").read_text()) == {}
    assert json.loads((docker_bin / "volumes.json").read_text()) == []      # no anonymous volume left in the image


def test_a_failed_export_fails_the_step_and_removes_the_container(make_config, sbom_root, docker_bin, monkeypatch):
    monkeypatch.setenv("FAKE_EXPORT_FAIL", "1")
    with pytest.raises(step.StepError, match="docker export` of nvcr.io/nvidia/clara-train-sdk@sha256:cdcd.* "
                                             "failed \\(exit 1\\): .*no space left on device"):
        step.image_entries(running_ctx(make_config, sbom_root))
    assert json.loads((docker_bin / "containers.json").read_text()) == {}


def test_a_garbled_export_is_a_step_error(tmp_path, docker_bin):
    (docker_bin / "image.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(step.StepError, match="gave no readable tar"):
        step.export_image("some/image:1")


def test_a_hung_export_is_stopped_at_its_timeout(docker_bin, monkeypatch):
    monkeypatch.setenv("FAKE_EXPORT_HANG", "1")
    with pytest.raises(step.StepError, match="did not finish within 1 s"):
        step.export_image("some/image:1", timeout=1)
    assert json.loads((docker_bin / "containers.json").read_text()) == {}


def test_a_dry_run_on_the_running_system_creates_no_container(make_config, sbom_root, docker_bin):
    cfg = config_module.load(str(make_config({"images.0.digest": DIGEST})))
    result = step.run(runner.Context(cfg, RunningRoot(str(sbom_root)), dry_run=True, environ={}))
    assert result.status == "changed" and result.detail.startswith("would write")
    calls = (docker_bin / "calls").read_text().splitlines() if (docker_bin / "calls").exists() else []
    assert not any(json.loads(c)[0] in ("create", "export", "rm") for c in calls)
    assert not (sbom_root / "var/lib/clara-image").exists()

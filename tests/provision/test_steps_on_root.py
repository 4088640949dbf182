"""Steps against a temporary root (--root): merges, failures, dry runs, idempotency."""
import hashlib
import json
import os
import stat
import shutil
import subprocess

import pytest

from provision.__main__ import main
from provision.steps.hydrate import STAMP as HYDRATE_STAMP
from provision_support import COMPOSE_BYTES, DELETE, run_cli, snapshot, statuses, summary_of


def daemon(root):
    return json.loads((root / "etc/docker/daemon.json").read_text())


def provision(capsys, *args):
    """In-process run (fast); returns (rc, stdout, stderr)."""
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_daemon_json_merge_keeps_other_keys(make_config, guest, capsys):
    before = (guest / "etc/docker/daemon.json").read_text()
    rc, out, _ = provision(capsys, "--root", guest, "--config", make_config(), "--only", "nvidia_runtime")
    assert rc == 0
    data = daemon(guest)
    assert data["storage-driver"] == "overlay2"                       # kept
    assert data["runtimes"]["nvidia"] == {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": []}
    assert data["default-runtime"] == "nvidia"
    assert data["max-concurrent-downloads"] == 3
    assert data["log-driver"] == "json-file"
    assert data["log-opts"] == {"labels": "a", "max-size": "100m", "max-file": "3"}
    assert data["insecure-registries"] == ["r.example:5000", "10.0.2.2:5000"]   # union, existing first
    assert (guest / "etc/docker/daemon.json.bak").read_text() == before
    assert "[provision] nvidia_runtime: changed (set " in out
    assert "docker restart skipped: not the running system" in out


def test_nvidia_not_default_removes_an_old_default(make_config, guest, capsys):
    (guest / "etc/docker/daemon.json").write_text(json.dumps({"default-runtime": "nvidia", "debug": True}))
    cfg = make_config({"docker.nvidia_runtime.default": False})
    assert provision(capsys, "--root", guest, "--config", cfg, "--only", "nvidia_runtime")[0] == 0
    data = daemon(guest)
    assert "default-runtime" not in data and data["debug"] is True and "nvidia" in data["runtimes"]


@pytest.mark.parametrize("text, cause", [
    ('{\n  "debug": true\n  "x": 1\n}\n', "line 3: Expecting ',' delimiter"),
    ('["not", "an", "object"]', "must hold a JSON object"),
])
def test_broken_daemon_json_fails_and_is_left_untouched(make_config, guest, text, cause):
    path = guest / "etc/docker/daemon.json"
    path.write_text(text)
    proc = run_cli("--root", guest, "--config", make_config(), check_rc=1)
    assert "[provision] nvidia_runtime failed: /etc/docker/daemon.json" in proc.stderr
    assert cause in proc.stderr and "fix or remove it" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert path.read_text() == text
    assert not (guest / "etc/docker/daemon.json.bak").exists()
    summary = summary_of(proc)
    assert summary["failed"] == "nvidia_runtime"
    assert [s["name"] for s in summary["steps"]] == ["driver_check", "security_updates", "fabric_manager", "umask",
                                                      "docker_engine"]   # stops at the failure


def test_empty_root_missing_files(make_config, tmp_path, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    rc, out, err = provision(capsys, "--root", root, "--config", make_config())
    assert rc == 0, err
    result = statuses_from(out)
    assert result["docker_engine"] == "skipped"
    assert "docker missing, install skipped" in out
    assert (root / "etc/login.defs").read_text() == "UMASK\t\t0002\n"
    assert not (root / "etc/pam.d").exists()          # only files that exist get the PAM line
    assert daemon(root)["runtimes"]["nvidia"]["path"] == "/usr/bin/nvidia-container-runtime"
    assert (root / "var/lib/docker").is_dir()
    assert (root / "etc/clara-image-release").exists()
    rc, out, _ = provision(capsys, "--root", root, "--config", make_config())
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["changed"] == 0


def statuses_from(out):
    return {s["name"]: s["status"] for s in json.loads(out.strip().splitlines()[-1])["steps"]}


def test_dry_run_changes_nothing(make_config, guest, tmp_path):
    cfg = make_config({"docker.data_root": "/mnt/docker"})
    before = snapshot(guest)
    proc = run_cli("--root", guest, "--config", cfg, "--dry-run", check_rc=0)
    assert snapshot(guest) == before
    result = statuses(proc)
    for step in ("umask", "nvidia_runtime", "data_root", "compose", "launcher", "inventory", "generalize"):
        assert result[step] == "changed", step
    assert "would" in proc.stdout


def test_umask_files(make_config, guest, capsys):
    assert provision(capsys, "--root", guest, "--config", make_config(), "--only", "umask")[0] == 0
    defs = (guest / "etc/login.defs").read_text()
    assert "UMASK\t\t0002\n" in defs and "UMASK\t\t022" not in defs and "#UMASK  077" in defs
    for name in ("common-session", "common-session-noninteractive"):
        text = (guest / "etc/pam.d" / name).read_text()
        assert text.count("session optional pam_umask.so") == 1
        assert text.startswith("session")                               # existing lines kept
    profile = guest / "etc/profile.d/clara-umask.sh"
    assert "umask 0002\n" in profile.read_text()
    assert stat.S_IMODE(profile.stat().st_mode) == 0o644
    bashrc = (guest / "etc/bash.bashrc").read_text()
    assert bashrc.startswith("[ -z \"$PS1\" ] && return\n")
    assert bashrc.count("umask 0002") == 1 and bashrc.count("# BEGIN clara-bake umask") == 1
    # A changed umask replaces the block instead of adding a second one.
    cfg = make_config({"umask": "0022"})
    assert provision(capsys, "--root", guest, "--config", cfg, "--only", "umask")[0] == 0
    bashrc = (guest / "etc/bash.bashrc").read_text()
    assert bashrc.count("# BEGIN clara-bake umask") == 1 and "umask 0022" in bashrc and "umask 0002" not in bashrc
    assert (guest / "etc/pam.d/common-session").read_text().count("pam_umask.so") == 1


def test_umask_for_sudo_only_where_sudo_is(make_config, guest, capsys):
    """sudo applies the union of the caller's umask and sudoers' (default 0022): set it to ours."""
    assert provision(capsys, "--root", guest, "--config", make_config(), "--only", "umask")[0] == 0
    drop_in = guest / "etc/sudoers.d/clara-umask"
    assert drop_in.exists() == (guest / "etc/sudoers").exists()
    (guest / "etc/sudoers").write_text("root ALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n")
    assert provision(capsys, "--root", guest, "--config", make_config(), "--only", "umask")[0] == 0
    assert drop_in.read_text().endswith("Defaults umask=0002\n") and stat.S_IMODE(drop_in.stat().st_mode) == 0o440
    if shutil.which("visudo"):
        assert subprocess.run(["visudo", "-c", "-f", str(drop_in)], capture_output=True).returncode == 0


def test_umask_in_a_login_shell_reads_profile_d(make_config, guest, capsys):
    """The profile.d snippet itself sets the mask when sourced (the chroot test runs a real login shell)."""
    provision(capsys, "--root", guest, "--config", make_config(), "--only", "umask")
    out = subprocess.run(["bash", "-c", "umask 077; . {}; umask".format(guest / "etc/profile.d/clara-umask.sh")],
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    assert out.strip() == "0002"


def test_compose_from_local_file(make_config, guest, capsys):
    cfg = make_config()
    rc, out, _ = provision(capsys, "--root", guest, "--config", cfg, "--only", "compose")
    assert rc == 0 and "compose: changed" in out
    plugin = guest / "usr/local/lib/docker/cli-plugins/docker-compose"
    assert plugin.read_bytes() == COMPOSE_BYTES
    assert stat.S_IMODE(plugin.stat().st_mode) == 0o755
    link = guest / "usr/local/bin/docker-compose"
    assert os.readlink(str(link)) == "/usr/local/lib/docker/cli-plugins/docker-compose"
    rc, out, _ = provision(capsys, "--root", guest, "--config", cfg, "--only", "compose")
    assert rc == 0 and "compose: unchanged" in out
    # A wrong file at the plugin path is replaced by the verified one.
    plugin.write_bytes(b"old")
    rc, out, _ = provision(capsys, "--root", guest, "--config", cfg, "--only", "compose")
    assert rc == 0 and "compose: changed" in out and plugin.read_bytes() == COMPOSE_BYTES


def test_compose_checksum_mismatch_installs_nothing(make_config, guest):
    cfg = make_config({"compose.sha256": "0" * 64})
    proc = run_cli("--root", guest, "--config", cfg, "--only", "compose", check_rc=1)
    assert "[provision] compose failed: docker-compose checksum mismatch" in proc.stderr
    assert "Traceback" not in proc.stderr
    folder = guest / "usr/local/lib/docker/cli-plugins"
    assert not folder.exists() or os.listdir(str(folder)) == []           # no temp file left either
    assert not os.path.lexists(str(guest / "usr/local/bin/docker-compose"))


def test_compose_sha256_null_uses_the_sidecar(make_config, guest, capsys):
    cfg = make_config({"compose.sha256": None})
    sidecar = cfg.parent / "files/docker-compose.sha256"
    rc, _, err = provision(capsys, "--root", guest, "--config", cfg, "--only", "compose")
    assert rc == 1 and "docker-compose.sha256 does not exist" in err
    sidecar.write_text(hashlib.sha256(COMPOSE_BYTES).hexdigest() + "  docker-compose\n")
    rc, out, _ = provision(capsys, "--root", guest, "--config", cfg, "--only", "compose")
    assert rc == 0 and "compose: changed" in out


def test_compose_download_verified_by_published_checksum(make_config, guest, capsys, tmp_path):
    """compose.url with sha256 null fetches <url>.sha256 (file:// keeps the test off the network)."""
    release = tmp_path / "release"
    release.mkdir()
    (release / "docker-compose-linux-x86_64").write_bytes(COMPOSE_BYTES)
    (release / "docker-compose-linux-x86_64.sha256").write_text(
        hashlib.sha256(COMPOSE_BYTES).hexdigest() + " *docker-compose-linux-x86_64\n")
    url = (release / "docker-compose-linux-x86_64").as_uri()
    cfg = make_config({"compose.file": None, "compose.url": url, "compose.sha256": None})
    rc, out, err = provision(capsys, "--root", guest, "--config", cfg, "--only", "compose")
    assert rc == 0, err
    (release / "docker-compose-linux-x86_64").write_bytes(b"tampered")
    (guest / "usr/local/lib/docker/cli-plugins/docker-compose").unlink()
    rc, _, err = provision(capsys, "--root", guest, "--config", cfg, "--only", "compose")
    assert rc == 1 and "checksum mismatch" in err


def test_generalize(make_config, guest, capsys):
    rc, out, err = provision(capsys, "--root", guest, "--config", make_config(), "--only", "generalize")
    assert rc == 0, err
    for gone in ("etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub", "root/.bash_history",
                 "root/.ssh/authorized_keys", "root/.docker/config.json", "home/alice/.bash_history",
                 "home/alice/.ssh/authorized_keys", "srv/build/.ssh/authorized_keys",
                 "var/lib/dbus/machine-id", "var/cache/apt/archives/docker.io_20.10.deb",
                 "var/lib/apt/lists/deb.debian.org_Packages"):
        assert not (guest / gone).exists(), gone
    machine_id = guest / "etc/machine-id"
    assert machine_id.read_text() == "" and stat.S_IMODE(machine_id.stat().st_mode) == 0o444
    assert (guest / "var/log/syslog").read_text() == "" and (guest / "var/log/apt").is_dir()
    assert (guest / "var/log/apt/history.log").exists()
    for kept in ("etc/ssh/sshd_config", "home/alice/.ssh/known_hosts", "usr/bin/docker"):
        assert (guest / kept).exists(), kept
    rc, out, _ = provision(capsys, "--root", guest, "--config", make_config(), "--only", "generalize")
    assert rc == 0 and "generalize: unchanged" in out


def test_generalize_removes_the_hydration_stamp(make_config, guest, capsys):
    # A build VM that rebooted ran the first-boot hydration: the image must not ship its stamp, or the
    # unit (ConditionPathExists=!STAMP) never runs on an instance.
    stamp = guest / HYDRATE_STAMP.lstrip("/")
    stamp.parent.mkdir(parents=True)
    stamp.write_text('{"files": 3, "bytes": 12, "seconds": 0.1}\n')
    (guest / (HYDRATE_STAMP + ".tmp").lstrip("/")).write_text("{}")
    rc, out, err = provision(capsys, "--root", guest, "--config", make_config(), "--only", "generalize")
    assert rc == 0, err
    assert not stamp.exists() and not (guest / (HYDRATE_STAMP + ".tmp").lstrip("/")).exists()
    rc, out, _ = provision(capsys, "--root", guest, "--config", make_config(), "--only", "generalize")
    assert rc == 0 and "generalize: unchanged" in out


def test_generalize_azure_deprovision_is_skipped_off_the_running_system(make_config, guest, capsys):
    cfg = make_config({"generalize.deprovision": "waagent"})
    rc, out, _ = provision(capsys, "--root", guest, "--config", cfg, "--only", "generalize")
    assert rc == 0 and "waagent deprovision skipped: not the running system" in out


def test_launcher_content(make_config, guest, capsys):
    cfg = make_config()
    assert provision(capsys, "--root", guest, "--config", cfg, "--only", "launcher")[0] == 0
    path = guest / "usr/local/bin/clara-train"
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert text.startswith("#!/bin/bash\n")
    # NVIDIA's documented flags, as the member, with a writable $HOME, on the VM's loopback only.
    assert ("docker run -d --name \"$CONTAINER\" --restart unless-stopped --ipc=host --ulimit memlock=-1 "
            "--ulimit stack=67108864 --security-opt no-new-privileges --cap-drop ALL --gpus all") in text
    assert '-u "$RUN_UID:$GID" -v "$MINE/passwd:/etc/passwd:ro" -v "$MINE/group:/etc/group:ro"' in text
    assert '-e HOME="$RUN_HOME" -e USER="$RUN_USER" -e LOGNAME="$RUN_USER" -v "$CHOME:$RUN_HOME"' in text
    assert "SERVERS=(jupyter aiaa)" in text and "PORTS=(8890 5000)" in text and "CPORTS=(8888 5000)" in text
    assert "GROUP=clara" in text and "MEMBERS=8 " in text
    assert "PROBES=(/api/status /v1/models)" in text and "TOKEN_SERVER=jupyter" in text
    assert "NAME=clara-train" in text and "Clara Train SDK v4.1 container" in text
    assert '-v "$WORKSPACE:/workspace"' in text and "WORKSPACE_SETTING=clara-workspace" in text
    assert "COMMAND=(jupyter lab /workspace --ip 0.0.0.0 --port 8888 --allow-root --no-browser)" in text
    assert """INNER='umask 0002; AIAA start -w /workspace/aiaa --engine AIAA & exec "$@"'""" in text
    assert '"$IMAGE" /bin/sh -c "$INNER" "$NAME" "${COMMAND[@]}" >/dev/null' in text
    assert "IMAGE=nvcr.io/nvidia/clara-train-sdk:v4.1" in text
    for sub in ("start)", "stop)", "status)", "url)", "exec)"):
        assert sub in text
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    rc, out, _ = provision(capsys, "--root", guest, "--config", cfg, "--only", "launcher")
    assert "launcher: unchanged" in out


def test_launcher_without_gpus_or_annotation_server(make_config, guest, capsys):
    cfg = make_config({"launcher.gpus": None, "launcher.servers.1": DELETE})
    provision(capsys, "--root", guest, "--config", cfg, "--only", "launcher")
    text = (guest / "usr/local/bin/clara-train").read_text()
    assert "--gpus" not in text and "SERVERS=(jupyter)" in text and "AIAA start" not in text
    assert """INNER='umask 0002; exec "$@"'""" in text
    assert "PORTS=(8890)" in text and "CPORTS=(8888)" in text       # 5000 is not published


def test_launcher_is_the_workloads(make_config, guest, capsys):
    """Nothing Clara in the launcher: name, image, command and servers come from the config."""
    cfg = make_config({"launcher.name": "monai-label", "launcher.title": "MONAI Label",
                       "launcher.image": "projectmonai/monailabel:0.8.5",
                       "launcher.servers.1": {"name": "monailabel", "port": 8000, "container_port": 8000,
                                              "probe": "/info/", "url": "/", "token": False,
                                              "command": ["monailabel", "start_server", "--port", "8000"]}})
    assert provision(capsys, "--root", guest, "--config", cfg, "--only", "launcher")[0] == 0
    assert not (guest / "usr/local/bin/clara-train").exists()
    text = (guest / "usr/local/bin/monai-label").read_text()
    assert "NAME=monai-label" in text and "SERVERS=(jupyter monailabel)" in text and "PROBES=(/api/status /info/)" in text
    assert "PORTS=(8890 8000)" in text and "CPORTS=(8888 8000)" in text
    assert """INNER='umask 0002; monailabel start_server --port 8000 & exec "$@"'""" in text
    assert "AIAA" not in text and "clara-train" not in text.replace("clara-bake", "")
    assert subprocess.run(["bash", "-n", str(guest / "usr/local/bin/monai-label")]).returncode == 0


# The launcher's behaviour, with several members, a fake docker and NSS-only users: test_launcher_team.py.


def test_data_root_moves_existing_data(make_config, guest, capsys):
    old = guest / "var/lib/docker"
    (old / "volumes").mkdir()
    (old / "volumes/metadata.db").write_bytes(b"\x00data")
    os.chmod(str(old / "volumes"), 0o701)
    cfg = make_config({"docker.data_root": "/mnt/docker"})
    rc, out, err = provision(capsys, "--root", guest, "--config", cfg, "--only", "data_root")
    assert rc == 0, err
    assert "data_root: changed (data-root /mnt/docker, moved 2 entries from /var/lib/docker" in out
    new = guest / "mnt/docker"
    assert (new / "volumes/metadata.db").read_bytes() == b"\x00data"
    assert (new / "image/repositories.json").read_text() == "{}"
    assert stat.S_IMODE((new / "volumes").stat().st_mode) == 0o701
    assert os.listdir(str(old)) == []
    assert daemon(guest)["data-root"] == "/mnt/docker"
    assert daemon(guest)["storage-driver"] == "overlay2"
    rc, out, _ = provision(capsys, "--root", guest, "--config", cfg, "--only", "data_root")
    assert "data_root: unchanged" in out


def test_data_root_refuses_to_merge(make_config, guest):
    (guest / "mnt/docker").mkdir(parents=True)
    (guest / "mnt/docker/other").write_text("x")
    proc = run_cli("--root", guest, "--config", make_config({"docker.data_root": "/mnt/docker"}),
                   "--only", "data_root", check_rc=1)
    assert "refusing to merge" in proc.stderr
    assert (guest / "var/lib/docker/image/repositories.json").exists()


def test_default_data_root_leaves_daemon_json_without_the_key(make_config, guest, capsys):
    provision(capsys, "--root", guest, "--config", make_config(), "--only", "nvidia_runtime,data_root")
    assert "data-root" not in daemon(guest)


def test_inventory_off_the_running_system(make_config, guest, capsys):
    (guest / "usr/bin/nvidia-container-runtime").write_text("")
    digest = "sha256:" + "12" * 32
    env = {"CLARA_GIT_COMMIT": "abc123", "CLARA_BUILD_TIME": "20240101000000", "CLARA_SOURCE_IMAGE": "debian-12",
           "CLARA_IMAGE_DIGESTS": json.dumps({"nvcr.io/nvidia/clara-train-sdk:v4.1": digest}),
           "CLARA_FINGERPRINT": "cd" * 32}
    cfg = make_config()
    run_cli("--root", guest, "--config", cfg, "--only", "compose,inventory", env=env, check_rc=0)
    data = json.loads((guest / "etc/clara-image-release").read_text())
    assert data == {
        "schema": 1, "fingerprint": "cd" * 32, "content_fingerprint": "ab" * 32,     # the bake's; the config's
        "git_commit": "abc123", "build_time": "20240101000000",
        "source_image": "debian-12", "cloud": "local", "kernel": None, "nvidia_driver": None,
        # No dpkg status in this root: the toolkit's version is unknown.
        "container_runtime": {"nvidia": "/usr/bin/nvidia-container-runtime", "nvidia_container_toolkit": None},
        "docker_version": None,
        "compose_version": "2.29.7", "umask": "0002",
        "images": [{"ref": "nvcr.io/nvidia/clara-train-sdk:v4.1", "digest": digest}]}


def test_inventory_rerun_without_the_bake_environment_keeps_provenance(make_config, guest):
    """Re-provisioning a baked VM (no CLARA_* variables) changes nothing in its release file."""
    cfg = make_config()
    baked = {"CLARA_GIT_COMMIT": "abc123", "CLARA_BUILD_TIME": "20240101000000", "CLARA_FINGERPRINT": "cd" * 32}
    run_cli("--root", guest, "--config", cfg, "--only", "inventory", env=baked, check_rc=0)
    before = (guest / "etc/clara-image-release").read_text()
    out = run_cli("--root", guest, "--config", cfg, "--only", "inventory", env={}, check_rc=0)
    assert json.loads(out.stdout.strip().splitlines()[-1])["changed"] == 0
    assert (guest / "etc/clara-image-release").read_text() == before
    assert json.loads(before)["git_commit"] == "abc123" and json.loads(before)["fingerprint"] == "cd" * 32


def test_inventory_run_by_hand_names_the_content_fingerprint(make_config, guest):
    run_cli("--root", guest, "--config", make_config(), "--only", "inventory", env={}, check_rc=0)
    data = json.loads((guest / "etc/clara-image-release").read_text())
    assert data["fingerprint"] == data["content_fingerprint"] == "ab" * 32

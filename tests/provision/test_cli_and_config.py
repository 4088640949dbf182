"""The CLI contract: config errors exit 2 naming file and key, summaries, --only, --summary."""
import dataclasses
import json

import pytest

from provision import config as config_module
from provision_support import DELETE, run_cli, statuses, summary_of


@pytest.mark.parametrize("overrides, key", [
    ({"docker.data_root": DELETE}, "docker.data_root: is required but missing"),
    ({"pull.retries": "5"}, "pull.retries: expected an integer"),
    ({"pull.retries": True}, "pull.retries: expected an integer"),
    ({"schema": 2}, "schema: unknown schema 2"),
    ({"cloud": "moon"}, "cloud: expected one of"),
    ({"umask": "bad"}, "umask: expected an octal umask"),
    ({"docker.nvidia_runtime.default": "yes"}, "docker.nvidia_runtime.default: expected true/false"),
    ({"images": [{"ref": "x", "digest": "md5:1"}]}, "images[0].digest: expected sha256"),
    ({"compose.file": None, "compose.url": None}, "compose: give `file`"),
    ({"launcher.servers.0.port": 70000}, "launcher.servers[0].port: expected a TCP port"),
    ({"launcher.name": "Clara Train"}, "launcher.name: expected a command name"),
    ({"launcher.servers.0.probe": "api status"}, "launcher.servers[0].probe: expected a URL path"),
    ({"launcher.servers.1.port": 8890}, "launcher.servers: two servers share a port"),
    ({"launcher.servers.0.command": ["x"]}, "launcher.servers: expected the main command's server (no command) first"),
    ({"launcher.servers": []}, "launcher.servers: expected at least one server"),
    ({"launcher.workspace": "../etc"}, "launcher.workspace"),
    ({"registry_login": {"registry": "nvcr.io"}}, "registry_login.username: is required but missing"),
    ({"docker.packages": ["docker.io", 3]}, "docker.packages[1]: expected a string"),
])
def test_bad_config_exits_2_naming_file_and_key(make_config, tmp_path, overrides, key):
    cfg = make_config(overrides)
    proc = run_cli("--root", tmp_path, "--config", cfg, check_rc=2)
    assert key in proc.stderr
    assert str(cfg) in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unreadable_or_invalid_config_exits_2(tmp_path):
    missing = tmp_path / "nope.json"
    proc = run_cli("--root", tmp_path, "--config", missing, check_rc=2)
    assert str(missing) in proc.stderr and "cannot be read" in proc.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": 1,')
    proc = run_cli("--root", tmp_path, "--config", broken, check_rc=2)
    assert "is not valid JSON" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_image_digests_env_exits_2(make_config, tmp_path):
    proc = run_cli("--root", tmp_path, "--config", make_config(), env={"CLARA_IMAGE_DIGESTS": "{nope"}, check_rc=2)
    assert "CLARA_IMAGE_DIGESTS" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_only_step_exits_2(make_config, tmp_path):
    proc = run_cli("--root", tmp_path, "--config", make_config(), "--only", "umask,teleport", check_rc=2)
    assert "teleport" in proc.stderr and "Traceback" not in proc.stderr


def test_config_is_frozen_and_typed(make_config):
    cfg = config_module.load(str(make_config({"launcher.command": ["jupyter", "lab"]})))
    assert cfg.docker.nvidia_runtime.path == "/usr/bin/nvidia-container-runtime"
    assert cfg.docker.packages == ("docker.io", "apparmor")
    assert cfg.pull.backoff_seconds == 5.0
    assert cfg.launcher.command == ("jupyter", "lab")
    assert cfg.registry_login.password_env == "NGC_API_KEY"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.umask = "0077"


def test_optional_and_null_sections(make_config):
    cfg = config_module.load(str(make_config({"registry_login": None, "launcher.gpus": None,
                                              "launcher.servers.1": DELETE})))
    assert cfg.registry_login is None and cfg.launcher.gpus is None
    assert [(s.name, s.command) for s in cfg.launcher.servers] == [("jupyter", None)]
    assert cfg.launcher.command[:2] == ("jupyter", "lab") and cfg.launcher.group == "clara"


@pytest.mark.parametrize("command", [None, [], ""])
def test_launcher_command_is_required(make_config, tmp_path, command):
    """The image's entrypoint alone starts a shell that exits at once when detached (issue #16)."""
    proc = run_cli("--root", tmp_path, "--config", make_config({"launcher.command": command}), check_rc=2)
    assert "launcher.command: is required" in proc.stderr and "starts the main server" in proc.stderr


@pytest.mark.parametrize("key, value, expected", [
    ("launcher.workspace", "/srv/../etc", "launcher.workspace: expected an absolute folder"),
    ("launcher.workspace", "/srv/clara ws", "launcher.workspace"),
    ("launcher.group", "Clara Team", "launcher.group: expected a group name"),
    ("launcher.servers.1.command", [3], "launcher.servers[1].command[0]: expected a string"),
])
def test_bad_launcher_settings(make_config, tmp_path, key, value, expected):
    proc = run_cli("--root", tmp_path, "--config", make_config({key: value}), check_rc=2)
    assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_shared_workspace_may_be_absolute(make_config):
    cfg = config_module.load(str(make_config({"launcher.workspace": "/srv/clara-workspace"})))
    assert cfg.launcher.workspace == "/srv/clara-workspace"


def test_image_digests_env():
    digest = "sha256:" + "ef" * 32
    assert config_module.image_digests({"CLARA_IMAGE_DIGESTS": json.dumps({"a:1": digest})}) == {"a:1": digest}
    assert config_module.image_digests({"CLARA_IMAGE_DIGESTS": ""}) == {}
    with pytest.raises(config_module.ConfigError, match="a:1"):
        config_module.image_digests({"CLARA_IMAGE_DIGESTS": json.dumps({"a:1": "latest"})})


def test_summary_line_and_file(make_config, guest, tmp_path):
    out = tmp_path / "summary.json"
    proc = run_cli("--root", guest, "--config", make_config(), "--summary", out, check_rc=0)
    lines = proc.stdout.strip().splitlines()
    assert all(line.startswith("[provision] ") for line in lines[:-1])
    assert len(lines) == len(summary_of(proc)["steps"]) + 1          # one per step, then the JSON summary
    summary = summary_of(proc)
    assert json.loads(out.read_text()) == summary
    assert summary["failed"] is None
    assert summary["changed"] == sum(1 for s in summary["steps"] if s["status"] == "changed")
    assert [s["name"] for s in summary["steps"]] == [
        "driver_check", "security_updates", "fabric_manager", "umask", "docker_engine", "nvidia_runtime", "data_root", "compose",
        "registry_login", "pull",
        "host_driver_image", "launcher", "hydrate", "inventory", "sbom_collect", "generalize"]
    assert "[provision] registry_login: skipped (NGC_API_KEY not set)" in lines
    assert "[provision] pull: skipped (not the running system)" in lines


def test_only_runs_the_named_steps_in_order(make_config, guest):
    proc = run_cli("--root", guest, "--config", make_config(), "--only", "launcher,umask", check_rc=0)
    assert list(statuses(proc)) == ["umask", "launcher"]


def test_second_run_changes_nothing(make_config, guest):
    cfg = make_config()
    first = run_cli("--root", guest, "--config", cfg, check_rc=0)
    assert summary_of(first)["changed"] >= 5
    second = run_cli("--root", guest, "--config", cfg, check_rc=0)
    assert summary_of(second)["changed"] == 0
    assert set(statuses(second).values()) <= {"unchanged", "skipped"}

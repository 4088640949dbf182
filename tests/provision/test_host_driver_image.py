"""provision/steps/host_driver_image.py with a fake docker that builds what the Dockerfile says: the
derived image drops the compat LD_LIBRARY_PATH element, carries the digest label, takes the ref's tag,
the original keeps <ref>-original; a second run changes nothing; pull leaves the tag alone (#12)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from provision import config as config_module, fsutil, runner, system
from provision.steps import host_driver_image as step, inventory, pull
from tests.provision.test_pull_space import RunningRoot

REF = "nvcr.io/nvidia/clara-train-sdk:v4.1"
DIGEST = "sha256:" + "d" * 64
ENV = ["PATH=/usr/bin", "LD_LIBRARY_PATH=/usr/local/cuda/compat/lib:/usr/local/nvidia/lib:/usr/local/nvidia/lib64"]


class Docker:
    def __init__(self):
        original = {"Id": "sha256:" + "0" * 64, "RepoDigests": [f"nvcr.io/nvidia/clara-train-sdk@{DIGEST}"],
                    "Config": {"Env": list(ENV), "Labels": None}}
        self.images = {f"nvcr.io/nvidia/clara-train-sdk@{DIGEST}": original, REF: original}
        self.calls, self.dockerfiles = [], []

    def __call__(self, cmd, input_text=None, check=True, timeout=600, env=None):
        self.calls.append(list(cmd))
        rc, out = self.answer(list(cmd))
        if check and rc:
            raise AssertionError(f"unexpected failure of {cmd}")
        return subprocess.CompletedProcess(cmd, rc, out, "" if rc == 0 else "No such image")

    def answer(self, cmd):
        if cmd[:3] == ["docker", "image", "inspect"]:
            info = self.images.get(cmd[-1]) or next((i for i in self.images.values() if i["Id"] == cmd[-1]), None)
            return (0, json.dumps(info)) if info else (1, "")
        if cmd[:2] == ["docker", "tag"]:
            src = self.images.get(cmd[2]) or next(i for i in self.images.values() if i["Id"] == cmd[2])
            self.images[cmd[3]] = src
            return 0, ""
        if cmd[:3] == ["docker", "image", "ls"]:
            wanted = dict(f.split("=", 1)[1].split("=", 1) for f in cmd if f.startswith("label="))
            ids = {i["Id"] for i in self.images.values()
                   if all((i["Config"].get("Labels") or {}).get(k) == v for k, v in wanted.items())}
            return 0, "".join(i + "\n" for i in sorted(ids))
        if cmd[:2] == ["docker", "build"]:
            text = Path(cmd[cmd.index("--file") + 1]).read_text()
            self.dockerfiles.append(text)
            base = self.images[re.search(r"^FROM (\S+)$", text, re.M).group(1)]
            env = dict(e.split("=", 1) for e in base["Config"]["Env"])
            for name, value in re.findall(r'^ENV (\w+)="([^"]*)"$', text, re.M):
                env[name] = value
            labels = dict(re.findall(r'(\S+)="([^"]*)"', re.search(r"^LABEL (.*)$", text, re.M).group(1)))
            built = {"Id": "sha256:" + "1" * 64, "RepoDigests": [],
                     "Config": {"Env": [f"{k}={v}" for k, v in env.items()], "Labels": labels}}
            self.images[cmd[cmd.index("--tag") + 1]] = built
            return 0, built["Id"] + "\n"
        return 127, ""


@pytest.fixture
def docker(monkeypatch):
    d = Docker()
    monkeypatch.setattr(system, "run", d)
    return d


def context(make_config, guest, on=True, running=True, digest=DIGEST):
    cfg = config_module.load(str(make_config({
        "images": [{"ref": REF, "digest": digest}], "launcher.image": REF,
        "host_driver_image": {"enabled": on}})))
    return runner.Context(cfg, RunningRoot(str(guest)) if running else fsutil.Root(str(guest)), environ={})


def test_builds_the_derived_image_and_retags_the_ref(make_config, guest, docker):
    result = step.run(context(make_config, guest))
    assert result.status == "changed" and "dropped from LD_LIBRARY_PATH: /usr/local/cuda/compat/lib" in result.detail
    text, = docker.dockerfiles
    assert f"FROM nvcr.io/nvidia/clara-train-sdk@{DIGEST}\n" in text
    assert "rm -rf /usr/local/cuda/compat" in text and "ldconfig" in text and "/etc/ld.so.conf.d/*" in text
    tagged = docker.images[REF]
    assert tagged["Config"]["Labels"][pull.DERIVED_FROM] == DIGEST
    assert "LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64" in tagged["Config"]["Env"]
    assert docker.images[REF + "-original"]["RepoDigests"]            # the original keeps a tag
    build = next(c for c in docker.calls if c[:2] == ["docker", "build"])
    assert "--pull=false" in build


def test_a_second_run_changes_nothing_and_pull_leaves_the_tag(make_config, guest, docker):
    ctx = context(make_config, guest)
    step.run(ctx)
    builds = sum(1 for c in docker.calls if c[:2] == ["docker", "build"])
    again = step.run(ctx)
    assert again.status == "unchanged" and "host-driver image" in again.detail
    assert sum(1 for c in docker.calls if c[:2] == ["docker", "build"]) == builds
    assert pull.state(REF, DIGEST) == "ok"


def test_an_existing_derived_image_is_retagged_not_rebuilt(make_config, guest, docker):
    ctx = context(make_config, guest)
    step.run(ctx)
    docker.images["<none>"] = docker.images[REF]                  # untagged, still on the machine
    docker.images[REF] = docker.images[f"nvcr.io/nvidia/clara-train-sdk@{DIGEST}"]     # e.g. tagged by hand
    result = step.run(ctx)
    assert result.status == "changed" and "retagged" in result.detail
    assert sum(1 for c in docker.calls if c[:2] == ["docker", "build"]) == 1


def test_the_inventory_records_both_digests(make_config, guest, docker):
    ctx = context(make_config, guest)
    step.run(ctx)
    entry, = inventory.collect(ctx)["images"]
    assert entry["ref"] == REF and entry["digest"] == DIGEST
    assert entry["host_driver_image"] == {"id": "sha256:" + "1" * 64, "from": DIGEST}


def test_an_unpinned_image_derives_from_its_registry_digest(make_config, guest, docker):
    assert step.run(context(make_config, guest, digest=None)).status == "changed"
    assert docker.images[REF]["Config"]["Labels"][pull.DERIVED_FROM] == DIGEST


def test_skipped_with_reasons(make_config, guest, docker):
    off = "host_driver_image is off in the config (workload.host_driver_image: false)"
    for running in (True, False):      # off: that reason first, on any root
        result = step.run(context(make_config, guest, on=False, running=running))
        assert (result.status, result.detail) == ("skipped", off)
    result = step.run(context(make_config, guest, running=False))
    assert (result.status, result.detail) == ("skipped", "not the running system")
    assert not docker.calls


def test_dry_run_builds_nothing(make_config, guest, docker):
    ctx = context(make_config, guest)
    ctx.dry_run = True
    assert step.run(ctx).detail.startswith("would build " + REF)
    assert not any(c[:2] in (["docker", "build"], ["docker", "tag"]) for c in docker.calls)


def test_the_launchers_image_must_be_one_of_the_pulled_images(make_config):
    with pytest.raises(config_module.ConfigError, match=r"host_driver_image: is enabled, but launcher.image \"other:1\""):
        config_module.load(str(make_config({"host_driver_image": {"enabled": True}, "launcher.image": "other:1"})))

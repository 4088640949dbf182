"""A real local bake with a fake NGC key (the local registry login uses it, as nvcr.io would) and a
fake cloud secret: zero hits in every log, rendered file, report, the record and the golden image's
bytes; and the ready figures that real bake records for `invoke images`. Slow: it bakes and boots
a real image."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
import base64

CANARIES = (b"nvapi-CANARY-5f2c9e", b"azure-CANARY-7d41b0",
            base64.b64encode(b"clara:nvapi-CANARY-5f2c9e"))      # docker's stored form of a login
TOOLS = ("packer", "qemu-system-x86_64", "qemu-img", "mmdebstrap", "docker-registry")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS) or os.geteuid() != 0,
                                 reason="needs root and " + ", ".join(TOOLS) + " (./setup.sh installs them)")]


def data_extents(path: Path):
    """The allocated parts of a sparse file: holes read as zeros and hold no secret."""
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        offset = 0
        while offset < end:
            try:
                start = os.lseek(f.fileno(), offset, os.SEEK_DATA)
            except OSError:
                return
            stop = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            f.seek(start)
            while start < stop:
                chunk = f.read(min(8 << 20, stop - start))
                yield chunk
                start += len(chunk)
            offset = stop


# The same real bake also moves Docker's data-root on the default base (Debian 13, containerd's image
# store): containerd's root must follow it (provision/steps/data_root.py), which only a real guest shows.
DATA_ROOT = "/srv/docker"


def test_secrets_never_reach_logs_reports_record_or_the_image(tmp_path):
    env = {**os.environ, "CLARA_BUILD_DIR": str(tmp_path / "build"), "CLARA_RECORD_DIR": str(tmp_path / "record"),
           "NGC_API_KEY": CANARIES[0].decode(), "PKR_VAR_azure_client_secret": CANARIES[1].decode()}
    manifest = tmp_path / "moved.yaml"
    manifest.write_text(f"extends: {ROOT / 'manifests' / 'clara-train.yaml'}\ndocker:\n  data_root: {DATA_ROOT}\n")
    # The image's bytes are scanned whole, free blocks included: a secret written to disk and
    # deleted would still be found there.
    result = subprocess.run([sys.executable, "-m", "invoke", "bake", "--cloud", "local", "--force",
                             "--manifest", str(manifest)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for canary in CANARIES:
        assert canary.decode() not in result.stdout + result.stderr
    hits = [str(p) for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".qcow2"
            and any(c in p.read_bytes() for c in CANARIES)]
    assert hits == []
    record = json.loads((tmp_path / "record" / "clara-train.local.json").read_text())
    golden = Path(record["clouds"]["local"]["channels"]["candidate"])
    # What `invoke images` shows a team, each figure measured on the real test VM: seconds from the
    # launch to SSH, to Docker answering and to the first step (no GPU here: the workload's start).
    (entry,) = record["clouds"]["local"]["images"]
    ready = entry["ready"]
    assert ready["first_step"] == "workload start", ready
    assert 0 < ready["ssh_s"] <= ready["docker_s"] <= ready["first_step_s"], ready
    raw = tmp_path / "golden.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(golden), str(raw)], check=True)
    tail = b""
    for chunk in data_extents(raw):
        window = tail + chunk
        assert not any(c in window for c in CANARIES), "a secret is in the golden image"
        tail = chunk[-64:]
    # The login really happened in the VM, so the test proves the logout and removal, not an absence.
    log = next((tmp_path / "build" / "reports").rglob("local/bake.log")).read_text()
    assert "registry_login: changed" in log
    # The relocation on the containerd store, as the steps and the checks on the test VM saw it.
    assert f"containerd image store (overlayfs snapshotter) under {DATA_ROOT}/containerd-store" in log, log[-3000:]
    expect = json.loads(next((tmp_path / "build" / "reports").rglob("local/checks/expect.json")).read_text())
    assert expect["image_store"] == "containerd"
    junit = next((tmp_path / "build" / "reports").rglob("local/checks/junit.xml"))
    cases = {c.get("name", "").split("[")[0]: list(c) for c in ET.parse(junit).iter("testcase")}
    for check in ("test_image_layers_live_on_the_data_root", "test_hydration_runs_once_on_first_boot"):
        assert cases.get(check) == [], f"{check}: {cases.get(check, 'did not run')}"    # ran, nothing failed or skipped

"""The MONAI workload's stand-in (#12): built from manifests/images/monai-label.json, it serves
Jupyter and MONAI Label under the commands manifests/monai.yaml gives, as a member."""
from __future__ import annotations

import json
import shlex

import pytest

from clouds.local import standin
from manifests import DEFAULT, load_manifest
from tests.local.test_standin import in_container, needs_unshare

MONAI = load_manifest(DEFAULT.with_name("monai.yaml"))


@pytest.fixture(scope="module")
def image():
    return standin.build_standin(record=standin.RECORD.parent / MONAI.workload.record)


def test_the_monai_record_builds_its_own_image(image):
    clara = standin.build_standin()
    assert image.digest != clara.digest
    config = json.loads(image.config)["config"]
    assert config["WorkingDir"] == "/opt/monai" and config["Entrypoint"] == ["/opt/nvidia/nvidia_entrypoint.sh"]
    assert "monai-label.json" in json.loads(image.config)["config"]["Labels"]["org.opencontainers.image.description"]


def test_a_record_without_jupyter_is_refused(tmp_path):
    record = json.loads((standin.RECORD.parent / "monai-label.json").read_text())
    del record["behaviour"]["jupyter"]
    (tmp_path / "r.json").write_text(json.dumps(record))
    with pytest.raises(standin.PipelineError, match="behaviour.jupyter.value"):
        standin.build_standin(record=tmp_path / "r.json")


@needs_unshare
def test_monai_label_serves_under_the_manifests_command_as_a_member(image, tmp_path):
    server = MONAI.workload.servers["monailabel"]
    command = " ".join(shlex.quote(word) for word in server.command)
    out = in_container(image, tmp_path, f"""\
        mkdir -p $R/home/m $R/workspace && chown 1000:1000 $R/home/m $R/workspace
        HOME_IN=/home/m ctr --userspec=1000:1000 {command} > $R/../log 2>&1 &
        pid=$!
        waitport {server.container_port}/info/ || echo "== not up"
        echo "== info $(get {server.container_port}{server.probe})"
        echo "== app $(stat -c %u $R/workspace/apps/radiology)"
        kill -TERM $pid; wait $pid; echo "== rc $?"
        (ctr monailabel start_server --app /nowhere --studies /workspace); echo "== noapp rc $?"
        """)
    assert "== not up" not in out, out + (tmp_path / "log").read_text()
    assert '== info {"name": "radiology (stand-in)"' in out and "== app 1000" in out and "== rc 0" in out
    assert "App Directory NOT Found: '/nowhere'" in out and "== noapp rc 1" in out

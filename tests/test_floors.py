"""The SDK floors (#23 item 7): .ci/floors.txt is what pyproject.toml allows at the lowest, every requirement
names its floor, and the floors cover the parameters the code sends that botocore's older models lack
(botocore refuses a parameter its model does not know before anything is sent)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))
import floors  # noqa: E402  (.ci/floors.py)


def test_the_constraints_file_is_what_pyproject_says():
    result = subprocess.run([sys.executable, str(ROOT / ".ci" / "floors.py"), "--check"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (ROOT / ".ci" / "floors.txt").read_text() == floors.render(floors.floors())


def test_a_requirement_without_a_floor_is_refused(tmp_path):
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\nname = "x"\ndependencies = ["pyyaml"]\n')
    with pytest.raises(SystemExit, match="'pyyaml' needs exactly one '>=' floor"):
        floors.floors(bad)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


# (operation, parameter or member) the code sends, and the first botocore whose EC2 model has it, measured
# here: EbsBlockDevice.VolumeInitializationRate absent in 1.38.0, present in 1.38.20;
# DeregisterImage.DeleteAssociatedSnapshots absent in 1.38.23, present in 1.38.25.
SENT = [("DeregisterImage", "DeleteAssociatedSnapshots", "1.38.25"),
        ("EbsBlockDevice", "VolumeInitializationRate", "1.38.20")]


@pytest.mark.parametrize("shape, member, since", SENT)
def test_the_botocore_floor_knows_what_the_code_sends(shape, member, since):
    found = floors.floors()
    assert _version(found["botocore"]) >= _version(since)
    assert _version(found["boto3"]) >= _version(since)        # boto3 X.Y.Z requires botocore >= X.Y.Z
    import botocore.session
    model = botocore.session.get_session().get_service_model("ec2")
    if shape in model.operation_names:
        members = model.operation_model(shape).input_shape.members
    else:
        members = model.shape_for(shape).members
    assert member in members          # the installed botocore (>= the floor) has it

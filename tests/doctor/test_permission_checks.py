"""The doctor's permission lines come from the lists (clouds/*/permissions.py): AWS's DryRun checks are
the list's DRY_RUN actions and its note names every other listed action; GCP's and Azure's notes
name the roles their lists say grant them."""
from __future__ import annotations

from clouds.aws import Adapter
from clouds.aws import permissions as aws_permissions
from clouds.azure import permissions as azure_permissions
from clouds.gcp import permissions as gcp_permissions
from tests.clouds.aws_fixtures import aws_env, moto_url  # noqa: F401 - fixtures
from tests.doctor.conftest import one
from tests.doctor.test_aws import quotas


def test_aws_dry_runs_are_the_lists_and_the_note_names_the_rest(aws_env, manifest):  # noqa: F811
    adapter = Adapter(manifest, log=lambda line: None)
    quotas(adapter, 64)
    found = adapter.doctor()
    dry = one(found, "EC2 calls of the bake (DryRun)")
    assert dry.status == "ok"
    checked = [a.split(":")[1] for a in aws_permissions.DRY_RUN]
    allowed = dry.result.removeprefix("allowed: ").split(", ")
    assert set(allowed) <= set(checked)
    undecided = " ".join(f.result for f in found if f.check == "EC2 calls the doctor cannot check (DryRun)")
    assert [a for a in checked if a not in allowed and a not in undecided] == []    # each one was tried
    note = one(found, "actions checked only when called")
    for action in ("ec2:StopInstances", "ec2:DeleteVolume", "ec2:DeleteTags", "ec2:EnableFastSnapshotRestores",
                   "ssm:PutParameter"):
        assert action in note.result
    assert not set(aws_permissions.DRY_RUN) & set(note.result.split(": ", 1)[1].split(", "))


def test_gcp_and_azure_doctors_name_the_lists_roles():
    from clouds.azure import doctor as azure_doctor
    from clouds.gcp import doctor as gcp_doctor
    assert gcp_doctor.ROLES == gcp_permissions.ROLES
    assert azure_doctor.ROLES == azure_permissions.ROLES

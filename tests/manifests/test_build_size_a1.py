"""A1 is EC2's first Graviton family (arm64) although no "g" follows its generation digit (EC2 User
Guide, "Instance type naming conventions" and "General purpose instances": "A1 instances are powered by
AWS Graviton processors"): an x86_64 base AMI cannot boot on it, so it is refused as a build size."""
from manifests.load import load_manifest


def _aws(build_type):
    aws = load_manifest("manifests/clara-train.yaml").clouds.aws
    return aws.model_copy(update={"build_instance_type": build_type})


def test_a1_is_refused_for_an_x86_64_base():
    problems = list(_aws("a1.xlarge").build_problems())
    assert [(p[0], p[1]) for p in problems] == [(("build_instance_type",), "a1.xlarge")]
    assert "arm64 (Graviton)" in problems[0][2]


def test_an_x86_64_type_still_passes():
    assert list(_aws("m6i.2xlarge").build_problems()) == []

"""clouds/oci.py: tag → digest against a fake registry that signs in like nvcr.io, and against the
real registry (Debian's docker-registry) holding the local stand-in."""
from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import pytest

from clouds import image_config, oci
from core.errors import PipelineError
from manifests import DEFAULT, load_manifest
from manifests.fingerprint import fingerprint
from tests.fakes.registry import OCI_INDEX, FakeRegistry, manifest_body, recorded_config

CLARA = "nvcr.io/nvidia/clara-train-sdk:v4.1"


@pytest.fixture
def reg():
    with FakeRegistry(credentials=("$oauthtoken", "nvapi-secret")) as r:
        yield r


def test_a_public_tag_is_resolved_with_an_anonymous_token(reg):
    digest = reg.push("nvidia/clara-train-sdk", "v4.1", "one")
    got = oci.resolve(CLARA, endpoints={"nvcr.io": reg.url})
    served = reg.tags[("nvidia/clara-train-sdk", "v4.1")][1]
    assert got == digest == "sha256:" + hashlib.sha256(served).hexdigest()
    assert served == manifest_body("one", config=recorded_config("nvidia/clara-train-sdk", "v4.1"))
    methods = [(m, p.split("?")[0], a is not None) for m, p, a in reg.requests]
    assert methods == [("HEAD", "/v2/nvidia/clara-train-sdk/manifests/v4.1", False), ("GET", "/token", False),
                       ("HEAD", "/v2/nvidia/clara-train-sdk/manifests/v4.1", True)]


def test_a_private_image_signs_in_with_the_registry_login_and_a_wrong_key_is_named(reg):
    reg.private.add("nvidia/clara-train-sdk")
    digest = reg.push("nvidia/clara-train-sdk", "v4.1", "one")
    assert oci.resolve(CLARA, username="$oauthtoken", password="nvapi-secret",
                       endpoints={"nvcr.io": reg.url}) == digest
    with pytest.raises(oci.RegistryError) as info:
        oci.resolve(CLARA, username="$oauthtoken", password="wrong", endpoints={"nvcr.io": reg.url})
    assert "refused a pull token" in str(info.value) and "registry login" in str(info.value)
    assert "wrong" not in str(info.value)
    with pytest.raises(oci.RegistryError, match="refused a pull token .* anonymously"):
        oci.resolve(CLARA, endpoints={"nvcr.io": reg.url})


def test_a_missing_tag_names_the_image(reg):
    with pytest.raises(oci.RegistryError, match=r"nvcr.io/nvidia/clara-train-sdk:v9: the registry has no such tag"):
        oci.resolve("nvcr.io/nvidia/clara-train-sdk:v9", endpoints={"nvcr.io": reg.url})


def test_without_a_digest_header_the_manifest_is_hashed():
    with FakeRegistry(digest_header=False) as reg:
        digest = reg.push("nvidia/clara-train-sdk", "v4.1", "two")
        assert oci.resolve(CLARA, endpoints={"nvcr.io": reg.url}) == digest


def test_a_multi_platform_tag_is_pinned_as_its_index(reg):
    digest = reg.push("projectmonai/monai", "1.4.0", "idx", media_type=OCI_INDEX)
    assert oci.resolve("projectmonai/monai:1.4.0", endpoints={"docker.io": reg.url}) == digest


def test_transient_errors_are_retried(reg, monkeypatch):
    monkeypatch.setattr(oci.cancel, "sleep", lambda s: None)
    digest = reg.push("nvidia/clara-train-sdk", "v4.1", "one")
    reg.fail_next[:] = [503, 429]
    assert oci.resolve(CLARA, endpoints={"nvcr.io": reg.url}) == digest


def test_an_unreachable_registry_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(oci.cancel, "sleep", lambda s: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(oci.RegistryError, match=f"cannot reach the registry for {CLARA} at http://127.0.0.1:{port}"):
        oci.resolve(CLARA, endpoints={"nvcr.io": f"http://127.0.0.1:{port}"})


@pytest.mark.parametrize("ref, expected", [
    ("nvcr.io/nvidia/clara-train-sdk:v4.1", ("nvcr.io", "nvidia/clara-train-sdk", "v4.1")),
    ("busybox", ("docker.io", "library/busybox", "latest")),
    ("projectmonai/monai:1.4.0", ("docker.io", "projectmonai/monai", "1.4.0")),
    ("10.0.2.2:5000/clara/standin:v1", ("10.0.2.2:5000", "clara/standin", "v1")),
    ("localhost/x", ("localhost", "x", "latest")),
])
def test_references_are_normalised_as_docker_does(ref, expected):
    r = oci.parse(ref)
    assert (r.registry, r.repository, r.tag) == expected


def test_endpoints_from_the_environment_are_checked():
    assert oci.endpoints_from_env({"CLARA_REGISTRY_ENDPOINTS": "nvcr.io=http://127.0.0.1:1/"}) == {
        "nvcr.io": "http://127.0.0.1:1"}
    with pytest.raises(oci.RegistryError, match="not REGISTRY=http"):
        oci.endpoints_from_env({"CLARA_REGISTRY_ENDPOINTS": "nvcr.io"})


def test_pin_resolves_with_the_login_keeps_manifest_pins_and_a_repush_changes_the_fingerprint(reg, tmp_path):
    reg.private.add("nvidia/clara-train-sdk")
    site = tmp_path / "site.yaml"
    pinned = "sha256:" + "a" * 64
    site.write_text(f"extends: {DEFAULT}\nextra_images:\n  - image: nvcr.io/nvidia/other:1\n"
                    f"    digest: '{pinned}'\n")
    manifest = load_manifest(site)
    env = {"CLARA_REGISTRY_ENDPOINTS": f"nvcr.io={reg.url}", manifest.registry_login.password_env: "nvapi-secret"}
    first = reg.push("nvidia/clara-train-sdk", "v4.1", "one")
    digests = oci.pin(manifest, env)
    assert digests == {CLARA: first, "nvcr.io/nvidia/other:1": pinned}
    assert not any("/nvidia/other/" in p for _, p, _ in reg.requests)       # a manifest pin is not asked
    reg.push("nvidia/clara-train-sdk", "v4.1", "two")                         # NVIDIA re-pushes the tag
    again = oci.pin(manifest, env)
    assert again[CLARA] != first
    base = "base-image-1"
    assert fingerprint(manifest, "gcp", base_image=base, digests=digests) != \
        fingerprint(manifest, "gcp", base_image=base, digests=again)


@pytest.mark.skipif(not (shutil.which("docker-registry") or Path("/usr/bin/docker-registry").exists()),
                    reason="Debian's docker-registry is not installed (setup.sh installs it)")
def test_the_real_registry_gives_the_stand_ins_digest(tmp_path):
    from clouds.local import registry, standin
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    image = standin.build_standin()
    with registry.LocalRegistry(tmp_path / "registry", port, tmp_path / "registry.log") as reg:
        standin.push(image, reg.address, "clara/standin", "v1")
        ref = f"{reg.address}/clara/standin:v1"
        assert oci.resolve(ref, endpoints={reg.address: f"http://{reg.address}"}) == image.digest
        with pytest.raises(oci.RegistryError, match="no such tag"):
            oci.resolve(f"{reg.address}/clara/standin:v2", endpoints={reg.address: f"http://{reg.address}"})


# --- the workload's image against its record (clouds/image_config.py) ---------------------------

MONAI = Path(__file__).resolve().parents[2] / "manifests" / "monai.yaml"
# MONAI Label 0.8.5's config as its Dockerfile at tag 0.8.5 builds it: FROM ubuntu:22.04 (no
# ENTRYPOINT, CMD ["/bin/bash"]), WORKDIR /opt/monailabel, the maintainer label kept.
UBUNTU_0_8_5 = {"architecture": "amd64", "os": "linux", "config": {
    "Entrypoint": None, "Cmd": ["/bin/bash"], "WorkingDir": "/opt/monailabel",
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "Labels": {"maintainer": "monai.contact@gmail.com", "org.opencontainers.image.version": "22.04"}}}


def monai_site(tmp_path, tag="0.8.0"):
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {MONAI}\nworkload:\n  image: projectmonai/monailabel:{tag}\n")
    return load_manifest(site)


def test_an_image_matching_its_record_is_pinned(tmp_path):
    with FakeRegistry() as reg:
        # No config given: the fake serves what manifests/images/monai-label.json describes.
        digest = reg.push("projectmonai/monailabel", "0.8.0", "monai-label 0.8.0", media_type=OCI_INDEX)
        pinned = oci.pin(monai_site(tmp_path), {"CLARA_REGISTRY_ENDPOINTS": f"docker.io={reg.url}"})
    assert pinned == {"projectmonai/monailabel:0.8.0": digest}
    assert any("/blobs/sha256:" in p for _, p, _ in reg.requests)       # the config blob was read


def test_a_tag_built_on_another_base_is_refused_naming_what_differs(tmp_path):
    with FakeRegistry() as reg:
        reg.push("projectmonai/monailabel", "0.8.5", "monai-label 0.8.5", media_type=OCI_INDEX, config=UBUNTU_0_8_5)
        with pytest.raises(image_config.ImageMismatch) as info:
            oci.pin(monai_site(tmp_path, "0.8.5"), {"CLARA_REGISTRY_ENDPOINTS": f"docker.io={reg.url}"})
    text = str(info.value)
    assert "projectmonai/monailabel:0.8.5" in text and "manifests/images/monai-label.json" in text
    assert 'Entrypoint is null, the record says ["/opt/nvidia/nvidia_entrypoint.sh"]' in text
    assert 'WorkingDir is "/opt/monailabel", the record says "/opt/monai"' in text
    # Guesses are not held against the image: Cmd and Env are "uncertain" in the record.
    assert "Cmd" not in text and "Env" not in text and "maintainer" not in text


def test_labels_env_and_platform_are_compared_where_the_record_is_sure():
    record = {"config": {"Labels": {"value": {"maintainer": "m"}, "certainty": "documented"},
                         "Env": {"value": ["NVIDIA_VISIBLE_DEVICES=all"], "certainty": "convention"},
                         "Platform": {"value": {"os": "linux", "architecture": "amd64"}, "certainty": "convention"},
                         "User": {"value": "", "certainty": "documented"}}}
    same = {"os": "linux", "architecture": "amd64",
            "config": {"Labels": {"maintainer": "m", "extra": "x"}, "Env": ["A=1", "NVIDIA_VISIBLE_DEVICES=all"]}}
    assert image_config.differences(record, same) == []
    other = {"os": "linux", "architecture": "arm64", "config": {"Labels": {}, "User": "1000", "Env": ["A=1"]}}
    found = image_config.differences(record, other)
    assert found == ['label maintainer is null, the record says "m" (record: documented)',
                     "Env has no NVIDIA_VISIBLE_DEVICES, the record says NVIDIA_VISIBLE_DEVICES=all (record: convention)",
                     "platform is linux/arm64, the record says linux/amd64 (record: convention)",
                     'User is "1000", the record says "" (record: documented)']


def test_a_pinned_workload_digest_is_checked_too_and_clara_matches_its_record(reg, tmp_path):
    other = dict(UBUNTU_0_8_5, config={"Entrypoint": ["/bin/sh"], "WorkingDir": "/"})
    digest = reg.push("nvidia/clara-train-sdk", "v4.1-other", "other", config=other)
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {DEFAULT}\nworkload:\n  digest: '{digest}'\n")
    with pytest.raises(image_config.ImageMismatch, match=r"Entrypoint is \[\"/bin/sh\"\].*WorkingDir is \"/\""):
        oci.pin(load_manifest(site), {"CLARA_REGISTRY_ENDPOINTS": f"nvcr.io={reg.url}"})
    good = reg.push("nvidia/clara-train-sdk", "v4.1", "clara")
    assert oci.pin(load_manifest(DEFAULT), {"CLARA_REGISTRY_ENDPOINTS": f"nvcr.io={reg.url}"})[CLARA] == good


def test_a_blob_redirected_to_storage_is_read_without_the_registry_token(reg, tmp_path):
    reg.redirect_blobs = True          # to localhost:<port>/storage/..., which refuses an Authorization header
    reg.push("nvidia/clara-train-sdk", "v4.1", "clara")
    oci.pin(load_manifest(DEFAULT), {"CLARA_REGISTRY_ENDPOINTS": f"nvcr.io={reg.url}"})
    storage = [a for _, p, a in reg.requests if p.startswith("/storage/")]
    assert storage == [None]


def test_a_config_blob_that_does_not_hash_to_its_digest_is_refused(tmp_path):
    """OCI image spec, descriptor.md "Verification": content is checked against its digest before use
    (a blob can come from a redirect to another host)."""
    with FakeRegistry() as reg:
        reg.push("projectmonai/monailabel", "0.8.0", "monai-label 0.8.0", media_type=OCI_INDEX)
        for key in list(reg.blobs):             # the same digest, other bytes: the record's config tampered
            reg.blobs[key] = reg.blobs[key].replace(b"linux", b"LINUX")
        with pytest.raises(PipelineError) as info:
            oci.pin(monai_site(tmp_path), {"CLARA_REGISTRY_ENDPOINTS": f"docker.io={reg.url}"})
    assert "its config blob does not match its digest sha256:" in str(info.value)

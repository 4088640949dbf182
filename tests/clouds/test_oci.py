"""clouds/oci.py: tag → digest against a fake registry that signs in like nvcr.io, and against the
real registry (Debian's docker-registry) holding the local stand-in."""
from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import pytest

from clouds import oci
from manifests import DEFAULT, load_manifest
from manifests.fingerprint import fingerprint
from tests.fakes.registry import OCI_INDEX, FakeRegistry, manifest_body

CLARA = "nvcr.io/nvidia/clara-train-sdk:v4.1"


@pytest.fixture
def reg():
    with FakeRegistry(credentials=("$oauthtoken", "nvapi-secret")) as r:
        yield r


def test_a_public_tag_is_resolved_with_an_anonymous_token(reg):
    digest = reg.push("nvidia/clara-train-sdk", "v4.1", "one")
    got = oci.resolve(CLARA, endpoints={"nvcr.io": reg.url})
    assert got == digest == "sha256:" + hashlib.sha256(manifest_body("one")).hexdigest()
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

"""security/provenance.py and security/signing.py: the in-toto/SLSA statement, its DSSE envelope signed with
securesystemslib, the per-user key, and `verify` against the record, the SBOM file and the labels."""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import shutil
import stat

import pytest

from core.names import TAG_FINGERPRINT
from publish import record
from security import provenance, signing, store
from security.verify import verify

MANIFEST = "clara-train"
FP = hashlib.sha256(b"the fingerprint").hexdigest()
DIGEST = "sha256:" + hashlib.sha256(b"the container").hexdigest()


@pytest.fixture
def where(tmp_path, monkeypatch):
    """Record, keys and build folders under tmp_path; no CLARA_SIGNER from the environment."""
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path / "record"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CLARA_SIGNER", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    return tmp_path


def facts(image_id, *, cloud="aws", sbom="", image_file="", **over):
    base = dict(manifest=MANIFEST, cloud=cloud, image_id=image_id, fingerprint=FP, bake_id="b20261207180000-abc123",
                started="2026-12-07T18:00:00Z", finished="2026-12-07T18:40:00Z", git_commit="a" * 40,
                base_image="ami-0base", digests={"nvcr.io/nvidia/clara-train-sdk:v4.1": DIGEST},
                packer_version="1.6.6", plugins={"amazon": "built-in"}, region="us-east-1",
                sbom_digest=sbom, image_file=image_file)
    return provenance.BuildFacts(**{**base, **over})


def sbom_for(cloud, image_id, text=b'{"bomFormat": "CycloneDX"}\n'):
    path = store.sbom_path(MANIFEST, cloud, image_id)
    store.write_atomic(path, text)
    return store.digest(path)


def publish(cloud, image_id, signed, sbom, fp=FP, **extra):
    entry = {"id": image_id, "fingerprint": fp, "bake_id": "b20261207180000-abc123", "source_image": "ami-0base",
             "validation": {"passed": True}, "security": {"sbom": sbom, "provenance": signed.digest}, **extra}
    record.add_image(MANIFEST, cloud, entry, "candidate")


def labels_for(signed, sbom, fp=FP):
    return {TAG_FINGERPRINT: fp[:32], **provenance.image_labels(sbom, signed.digest)}


# --- the statement ------------------------------------------------------------------------------

def test_statement_is_in_toto_v1_with_slsa_provenance_v1(where):
    sbom = "sha256:" + "5b" * 32
    stmt = provenance.statement(facts("ami-0abc", sbom=sbom), environ={"USER": "ana"})
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == "https://slsa.dev/provenance/v1"
    assert stmt["subject"][0]["name"] == "ami-0abc"
    assert stmt["subject"][0]["digest"] == {"sha256": hashlib.sha256(b"aws:ami-0abc").hexdigest()}
    build = stmt["predicate"]["buildDefinition"]
    assert set(build) == {"buildType", "externalParameters", "internalParameters", "resolvedDependencies"}
    assert build["externalParameters"] == {"manifest": MANIFEST, "cloud": "aws", "fingerprint": FP}
    assert build["internalParameters"]["packer"] == {"version": "1.6.6", "plugins": {"amazon": "built-in"}}
    deps = {d["name"]: d for d in build["resolvedDependencies"]}
    assert deps["clara-bake"]["digest"] == {"gitCommit": "a" * 40}
    assert deps["provision/"]["digest"] == {"sha256": provenance.provision_hash()}
    assert deps["base-image:ami-0base"]["annotations"] == {"imageId": "ami-0base"}
    assert deps["nvcr.io/nvidia/clara-train-sdk:v4.1"]["digest"] == {"sha256": DIGEST.split(":")[1]}
    assert all("digest" in d or "uri" in d for d in build["resolvedDependencies"])     # ResourceDescriptor's minimum
    run = stmt["predicate"]["runDetails"]
    assert run["metadata"] == {"invocationId": "b20261207180000-abc123", "startedOn": "2026-12-07T18:00:00Z",
                               "finishedOn": "2026-12-07T18:40:00Z"}
    assert run["builder"]["id"].startswith("urn:clara-bake:builder:ana@")
    assert run["byproducts"] == [{"name": "sbom.cdx.json", "digest": {"sha256": "5b" * 32},
                                  "mediaType": "application/vnd.cyclonedx+json"}]


def test_builder_is_the_workflow_in_github_actions():
    env = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_WORKFLOW_REF": "org/clara-bake/.github/workflows/rebuild.yml@refs/heads/main"}
    assert provenance.builder_id(env) == "https://github.com/org/clara-bake/.github/workflows/rebuild.yml@refs/heads/main"


def test_provision_hash_follows_the_code(tmp_path):
    from manifests.fingerprint import PROVISION_DIR
    copy = tmp_path / "provision"
    shutil.copytree(PROVISION_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert provenance.provision_hash(copy) == provenance.provision_hash()
    (copy / "steps" / "umask.py").write_text((copy / "steps" / "umask.py").read_text() + "\n# changed\n")
    assert provenance.provision_hash(copy) != provenance.provision_hash()


def test_no_git_commit_leaves_the_dependency_out(where):
    deps = provenance.statement(facts("ami-0abc", git_commit="unknown"))["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert "clara-bake" not in {d["name"] for d in deps} and "provision/" in {d["name"] for d in deps}


# --- keys and signing ----------------------------------------------------------------------------

def test_per_user_key_made_once_0600_and_said(where):
    said = []
    first = signing.choose("", log=said.append)
    path = where / "config" / "clara-bake" / "signing" / "ed25519.pem"
    assert first.how == f"new key {path}" and str(path) in said[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = signing.choose("", log=said.append)
    assert again.how == f"key {path}" and len(said) == 1
    assert again.public_key.keyid == first.public_key.keyid


def test_manifest_key_used_and_bad_keys_refused(where):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    pem = lambda k: k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # noqa: E731
                                    serialization.NoEncryption())
    good = where / "site.pem"
    good.write_bytes(pem(ed25519.Ed25519PrivateKey.generate()))
    chosen = signing.choose(str(good), manifest_file="site.yaml")
    assert chosen.how == f"key {good}"
    assert not signing.user_key_path().exists()                    # no per-user key made
    ecdsa = where / "ec.pem"
    ecdsa.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(signing.SigningError, match=r"site.yaml: security.signing.key: .*ec.pem holds a .*expected an ed25519"):
        signing.choose(str(ecdsa), manifest_file="site.yaml")
    with pytest.raises(signing.SigningError, match=r"security.signing.key: .*missing.pem cannot be read"):
        signing.choose(str(where / "missing.pem"), manifest_file="site.yaml")
    (where / "junk.pem").write_text("not a key\n")
    with pytest.raises(signing.SigningError, match="not an unencrypted PEM private key"):
        signing.choose(str(where / "junk.pem"), manifest_file="site.yaml")


def test_sigstore_is_chosen_by_clara_signer_and_says_why_it_cannot_sign_here(where, monkeypatch):
    monkeypatch.setenv("CLARA_SIGNER", "sigstore")
    for name in ("GITHUB_WORKFLOW_REF", "GITHUB_REPOSITORY", "ACTIONS_ID_TOKEN_REQUEST_URL"):
        monkeypatch.delenv(name, raising=False)
    expected = ("not a GitHub Actions job" if importlib.util.find_spec("sigstore")
                else "needs the sigstore package")
    with pytest.raises(signing.SigningError, match=expected):
        signing.choose("")
    assert not signing.user_key_path().exists()                    # it did not fall back to a key
    monkeypatch.setenv("CLARA_SIGNER", "gpg")
    with pytest.raises(signing.SigningError, match="CLARA_SIGNER='gpg': expected `sigstore`"):
        signing.choose("")


def test_sigstore_in_github_actions_uses_the_workflow_identity(where, monkeypatch):
    import sys
    import types
    from securesystemslib.signer import SigstoreSigner
    monkeypatch.setitem(sys.modules, "sigstore", types.ModuleType("sigstore"))     # not installed offline
    seen = {}

    def from_uri(uri, public_key):
        seen.update(uri=uri, keyval=public_key.keyval)
        return "signer"
    monkeypatch.setattr(SigstoreSigner, "from_priv_key_uri", staticmethod(from_uri))
    env = {"CLARA_SIGNER": "sigstore", "GITHUB_REPOSITORY": "org/clara-bake",
           "GITHUB_WORKFLOW_REF": "org/clara-bake/.github/workflows/rebuild.yml@refs/heads/main",
           "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.example/"}
    chosen = signing.choose("", environ=env)
    assert seen == {"uri": "sigstore:", "keyval": {
        "identity": "https://github.com/org/clara-bake/.github/workflows/rebuild.yml@refs/heads/main",
        "issuer": "https://token.actions.githubusercontent.com"}}
    assert chosen.signer == "signer" and chosen.how.startswith("sigstore (GitHub Actions OIDC: https://github.com/org/")


def test_envelope_is_dsse_and_verifies_with_securesystemslib(where):
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    chosen = signing.choose("")
    stmt = provenance.statement(facts("ami-0abc"))
    data = provenance.envelope(stmt, chosen.signer)
    assert data["payloadType"] == "application/vnd.in-toto+json"
    assert json.loads(base64.b64decode(data["payload"])) == stmt
    Envelope.from_dict(json.loads(json.dumps(data))).verify([chosen.public_key], 1)
    forged = dict(json.loads(json.dumps(data)), payload=base64.b64encode(
        json.dumps(dict(stmt, subject=[{"name": "ami-0evil", "digest": {"sha256": "0" * 64}}])).encode()).decode())
    with pytest.raises(VerificationError):
        Envelope.from_dict(forged).verify([chosen.public_key], 1)


# --- verify --------------------------------------------------------------------------------------

def signed_image(cloud="aws", image_id="ami-0abc", **over):
    sbom = sbom_for(cloud, image_id)
    signed = provenance.sign_and_store(facts(image_id, cloud=cloud, sbom=sbom, **over), log=lambda _: None)
    return signed, sbom


def test_sign_and_store_beside_the_record(where):
    signed, sbom = signed_image()
    assert signed.path == store.provenance_path(MANIFEST, "aws", "ami-0abc")
    assert signed.key_path == signed.path.with_name("provenance.key.json")
    assert signed.digest == store.digest(signed.path)
    assert json.loads(signed.key_path.read_text())["keyid"] == signed.keyid
    assert provenance.image_labels(sbom, signed.digest) == {"clara-provenance": signed.digest, "clara-sbom": sbom}


def test_verify_passes_when_everything_agrees(where):
    signed, sbom = signed_image()
    publish("aws", "ami-0abc", signed, sbom)
    result = verify(MANIFEST, "aws", "ami-0abc", labels=labels_for(signed, sbom))
    assert result.ok, result.problems
    assert [c.name for c in result.checks] == ["signature", "subject", "record", "record provenance", "sbom file", "labels"]


def test_verify_names_a_changed_record(where):
    signed, sbom = signed_image()
    other = hashlib.sha256(b"another fingerprint").hexdigest()
    publish("aws", "ami-0abc", signed, sbom, fp=other)
    result = verify(MANIFEST, "aws", "ami-0abc", labels=labels_for(signed, sbom))
    assert not result.ok
    assert result.problems == [f"record: fingerprint is {other[:23]}..., the signed provenance says {FP[:23]}..."]


def test_verify_names_a_changed_label_and_a_missing_one(where):
    signed, sbom = signed_image()
    publish("aws", "ami-0abc", signed, sbom)
    labels = labels_for(signed, sbom)
    labels["clara-sbom"] = "sha256:" + "00" * 32
    del labels["clara-provenance"]
    (problem,) = verify(MANIFEST, "aws", "ami-0abc", labels=labels).problems
    assert problem.startswith("labels: clara-provenance is (missing), the signed provenance says sha256:")
    assert "clara-sbom is sha256:0000000000000000..., the signed provenance says " + sbom[:23] in problem


def test_verify_names_a_changed_sbom_file_and_a_record_without_the_image(where):
    signed, sbom = signed_image()
    sbom_for("aws", "ami-0abc", b'{"bomFormat": "CycloneDX", "tampered": true}\n')
    result = verify(MANIFEST, "aws", "ami-0abc", labels=None)
    assert any(p.startswith("record: ") and "has no image ami-0abc" in p for p in result.problems)
    assert any(p.startswith("sbom file: ") for p in result.problems)
    assert next(c for c in result.checks if c.name == "labels").ok is None     # a target without labels


def test_verify_refuses_a_rewritten_statement_and_another_key(where, tmp_path):
    signed, sbom = signed_image()
    publish("aws", "ami-0abc", signed, sbom)
    data = json.loads(signed.path.read_text())
    stmt = provenance.payload_of(data)
    stmt["predicate"]["buildDefinition"]["externalParameters"]["fingerprint"] = "f" * 64
    data["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    signed.path.write_text(json.dumps(data))
    result = verify(MANIFEST, "aws", "ami-0abc", labels=labels_for(signed, sbom))
    assert result.problems[0].startswith("signature: does not verify with key")
    # The genuine envelope, checked against a key the site trusts that did not sign it.
    signed, sbom = signed_image()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    other = tmp_path / "trusted.pub"
    other.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    result = verify(MANIFEST, "aws", "ami-0abc", labels=labels_for(signed, sbom), public_key=other)
    assert any(p.startswith("signature: does not verify") for p in result.problems)


def test_verify_local_rehashes_the_qcow2(where):
    disk = where / "images" / "clara-train-1.qcow2"
    disk.parent.mkdir()
    disk.write_bytes(b"QFI\xfb" + b"\0" * 4096)
    signed, sbom = signed_image("local", str(disk), image_file=str(disk), base_image="debian-13")
    publish("local", str(disk), signed, sbom, source_image="debian-13")
    assert verify(MANIFEST, "local", str(disk), labels=labels_for(signed, sbom)).ok
    with open(disk, "ab") as f:
        f.write(b"changed")
    problems = verify(MANIFEST, "local", str(disk), labels=labels_for(signed, sbom)).problems
    assert len(problems) == 1 and problems[0].startswith("image file: sha256 ")
    assert problems[0].endswith("the qcow2 changed since it was signed")


def test_verify_without_provenance(where):
    result = verify(MANIFEST, "aws", "ami-0none", labels={})
    assert not result.ok and result.problems[0].startswith("provenance: no provenance at ")

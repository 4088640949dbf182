"""security/sbom.py and security/spdx.py: the guest's raw inventory (written here by the real collector
from a fake root) as CycloneDX 1.6, valid against cyclonedx-python-lib's schema; contract 2's shapes
(SUPPLY.md): purls with distro and upstream, roles, nested container components; reproducible bytes;
the bad raw file refused by file and key; SPDX 2.3 through spdx-tools."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from provision import config as config_module, fsutil, runner
from provision.steps import sbom_collect
from security import sbom, spdx, store
from security.raw import SbomError
from tests.provision.provision_support import BASE_CONFIG

REPO = Path(__file__).resolve().parents[2]
DPKG_FIXTURE = REPO / "tests" / "provision" / "data" / "dpkg-status-debian12"
CREATED = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
DIGEST = "sha256:" + "cd" * 32
IMAGE = {"ref": "nvcr.io/nvidia/clara-train-sdk:v4.1", "digest": DIGEST,
         "os": {"id": "ubuntu", "version_id": "20.04", "pretty_name": "Ubuntu 20.04.3 LTS"},
         "packages": [{"name": "libssl1.1", "version": "1.1.1f-1ubuntu2.8", "arch": "amd64", "source": "openssl",
                       "source_version": "1.1.1f-1ubuntu2.8"}],
         "python": [{"name": "numpy", "version": "1.21.2", "location": "/opt/conda/lib/python3.8/site-packages"}]}


@pytest.fixture
def raw_file(tmp_path, monkeypatch):
    """sbom-raw.json as the guest step writes it, from a root with real Debian 12 dpkg entries."""
    monkeypatch.setenv("CLARA_RECORD_DIR", str(tmp_path / "published"))
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(DPKG_FIXTURE.read_text())
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    site = root / "usr/lib/python3/dist-packages"
    for name, version in (("PyYAML", "6.0"), ("ruamel.yaml", "0.17.21")):
        (site / f"{name}-{version}.dist-info").mkdir(parents=True)
        (site / f"{name}-{version}.dist-info/METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    plugin = root / "usr/local/lib/docker/cli-plugins/docker-compose"
    plugin.parent.mkdir(parents=True)
    plugin.write_bytes(b"compose binary")
    config = tmp_path / "provision.json"
    config.write_text(json.dumps(dict(BASE_CONFIG, compose=dict(BASE_CONFIG["compose"], file="x"))))
    ctx = runner.Context(config_module.load(str(config)), fsutil.Root(str(root)), environ={})
    data = sbom_collect.collect(ctx)
    data["images"] = [IMAGE, {"ref": "10.0.2.2:5000/clara/extra:1", "digest": None, "os": None, "packages": [],
                              "python": [], "unread": "not the running system"}]
    data["components"].update(nvidia_driver="535.183.01", nvidia_container_toolkit="1.17.8-1",
                              docker="26.1.5+dfsg1-9+b2")
    path = tmp_path / "sbom-raw.json"
    path.write_text(json.dumps(data))
    return path


def write(raw_file, image_id="ami-0123456789abcdef0"):
    return sbom.write(raw_file, manifest_name="clara-train", cloud="aws", image_id=image_id,
                      image_name="clara-train-20261207", created=CREATED)


def by_name(components):
    return {c["name"]: c for c in components}


def props(component):
    return {p["name"]: p["value"] for p in component.get("properties", [])}


def test_the_sbom_is_stored_beside_the_record_and_valid_against_the_schema(raw_file, tmp_path):
    path = write(raw_file)
    assert path == tmp_path / "published/security/clara-train/aws/ami-0123456789abcdef0/sbom.cdx.json"
    text = path.read_text()
    # The whole document, through the library's validator in one piece (sbom.validate slices it).
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    doc = json.loads(text)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    meta = doc["metadata"]["component"]
    assert (meta["type"], meta["name"], meta["version"]) == ("operating-system", "clara-train-20261207",
                                                             "ami-0123456789abcdef0")
    assert props(meta)["clara:image-id"] == "ami-0123456789abcdef0" and props(meta)["clara:os-id"] == "debian"
    assert store.digest(path) == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_host_package_purls_carry_distro_and_upstream(raw_file):
    doc = json.loads(write(raw_file).read_text())
    top = by_name(doc["components"])
    purls = {name: PackageURL.from_string(c["purl"]) for name, c in top.items() if c.get("purl")}
    assert purls["openssl"].qualifiers == {"arch": "amd64", "distro": "debian-12"}         # its own source
    assert purls["libssl3"].qualifiers["upstream"] == "openssl"                              # another source
    assert purls["python3-yaml"].qualifiers["upstream"] == "pyyaml@6.0-3"                    # binNMU: +b2
    assert purls["bash"].qualifiers["upstream"] == "bash@5.2.15-2"
    assert purls["zlib1g"].version == "1:1.2.13.dfsg-1" and purls["zlib1g"].namespace == "debian"
    assert purls["tzdata"].qualifiers["arch"] == "all"
    assert top["libssl3"]["type"] == "library" and purls["libssl3"].type == "deb"
    assert props(top["python3-yaml"])["clara:source"] == "pyyaml"
    # Python distributions: PEP 503 names.
    assert top["ruamel.yaml"]["purl"] == "pkg:pypi/ruamel-yaml@0.17.21"
    assert top["PyYAML"]["purl"] == "pkg:pypi/pyyaml@6.0"
    assert props(top["PyYAML"])["clara:location"] == "/usr/lib/python3/dist-packages"


def test_the_platform_components_have_roles_and_compose_its_checksum(raw_file):
    top = by_name(json.loads(write(raw_file).read_text())["components"])
    roles = {props(c).get("clara:role"): c for c in top.values() if c["type"] == "application"}
    assert set(roles) == {"nvidia-driver", "nvidia-container-toolkit", "docker", "compose"}   # no containerd found
    assert roles["compose"]["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(b"compose binary").hexdigest()}]
    assert roles["compose"]["purl"] == "pkg:golang/github.com/docker/compose/v2@v2.29.7"
    assert roles["nvidia-container-toolkit"]["purl"] == "pkg:golang/github.com/NVIDIA/nvidia-container-toolkit@v1.17.8"
    assert roles["nvidia-driver"]["version"] == "535.183.01"


def test_each_image_is_a_container_with_its_packages_nested(raw_file):
    top = json.loads(write(raw_file).read_text())["components"]
    clara, extra = sorted((c for c in top if c["type"] == "container"), key=lambda c: c["name"], reverse=True)
    assert clara["name"] == "nvcr.io/nvidia/clara-train-sdk" and clara["version"] == DIGEST
    purl = PackageURL.from_string(clara["purl"])
    assert (purl.type, purl.name, purl.version) == ("oci", "clara-train-sdk", DIGEST)
    assert purl.qualifiers == {"repository_url": "nvcr.io/nvidia/clara-train-sdk", "tag": "v4.1"}
    nested = by_name(clara["components"])
    assert PackageURL.from_string(nested["libssl1.1"]["purl"]).qualifiers == {
        "arch": "amd64", "distro": "ubuntu-20.04", "upstream": "openssl"}                  # the image's own OS
    assert nested["numpy"]["purl"] == "pkg:pypi/numpy@1.21.2"
    assert "libssl1.1" not in by_name(top) and "numpy" not in by_name(top)                 # never on the host
    # An image the guest could not read says so, and claims no packages.
    assert extra["name"] == "10.0.2.2:5000/clara/extra" and "components" not in extra
    assert props(extra)["clara:unread"] == "not the running system"


def test_same_raw_inventory_same_bytes(raw_file):
    first = write(raw_file).read_bytes()
    assert write(raw_file).read_bytes() == first
    other = write(raw_file, image_id="ami-0fedcba9876543210").read_text()
    assert json.loads(other)["serialNumber"] != json.loads(first)["serialNumber"]


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(schema=2), "key schema: expected 1, found 2"),
    (lambda d: d["packages"][0].pop("version"), "key packages.0.version: Field required"),
    (lambda d: d["images"][0].update(packages="none"), "key images.0.packages: Input should be a valid tuple"),
])
def test_a_bad_raw_inventory_names_the_file_and_key(raw_file, change, message):
    data = json.loads(raw_file.read_text())
    change(data)
    raw_file.write_text(json.dumps(data))
    with pytest.raises(SbomError, match=f"^{raw_file}: {message}"):
        write(raw_file)


def test_a_missing_or_broken_raw_file_is_one_clear_error(tmp_path):
    with pytest.raises(SbomError, match="no raw inventory .*sbom_collect step writes it"):
        sbom.write(tmp_path / "absent.json", manifest_name="m", cloud="aws", image_id="ami-1", image_name="n")
    (tmp_path / "broken.json").write_text('{"schema": 1,')
    with pytest.raises(SbomError, match="broken.json: not JSON"):
        sbom.write(tmp_path / "broken.json", manifest_name="m", cloud="aws", image_id="ami-1", image_name="n")


def test_the_sliced_validation_still_refuses_what_the_schema_refuses(raw_file):
    text = sbom.to_json(sbom.bom(sbom.read(raw_file), image_id="ami-1", image_name="n", created=CREATED))
    doc = json.loads(text)
    many = [dict(doc["components"][0], **{"bom-ref": f"filler-{i}", "name": f"filler-{i}"}) for i in range(80)]
    bad = dict(many[70], type="not-a-component-type")
    with pytest.raises(SbomError, match="not be valid CycloneDX 1.6: filler-70 type: 'not-a-component-type' is not one of"):
        sbom.validate(json.dumps(dict(doc, components=doc["components"] + many[:70] + [bad])))
    nested = next(c for c in doc["components"] if c["type"] == "container" and c.get("components"))
    deep = dict(nested, components=nested["components"] + many[:60] + [dict(many[61], version=7)])
    with pytest.raises(SbomError, match="not be valid CycloneDX 1.6: filler-61 version: 7 is not of type 'string'"):
        sbom.validate(json.dumps(dict(doc, components=[deep])))
    with pytest.raises(SbomError, match="components holds duplicates"):
        sbom.validate(json.dumps(dict(doc, components=doc["components"] + many[:1] + many[:1])))
    meta = dict(doc["metadata"], timestamp="yesterday")
    with pytest.raises(SbomError, match="not be valid CycloneDX 1.6: metadata timestamp: 'yesterday' is not a 'date-time'"):
        sbom.validate(json.dumps(dict(doc, metadata=meta, components=doc["components"] + many)))
    sbom.validate(json.dumps(dict(doc, components=doc["components"] + many)))        # valid slices pass


def test_a_failed_write_leaves_the_previous_sbom(raw_file, monkeypatch):
    path = write(raw_file)
    before = path.read_bytes()

    def fail(*_):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write(raw_file, image_id="ami-0123456789abcdef0")
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["sbom.cdx.json"]


def test_spdx_from_the_stored_sbom(raw_file):
    from spdx_tools.spdx.parser.json import json_parser
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    path = write(raw_file)
    out = path.parent / "sbom.spdx.json"
    out.write_text(spdx.from_cyclonedx(path.read_text(), str(path)))
    document = json_parser.parse_from_file(str(out))
    assert validate_full_spdx_document(document) == []
    assert document.creation_info.spdx_version == "SPDX-2.3"
    packages = {p.spdx_id: p for p in document.packages}
    names = {p.name: p for p in document.packages}
    assert [r.locator for r in names["libssl3"].external_references] == [
        PackageURL.from_string(json_component(path, "libssl3")["purl"]).to_string()]
    assert names["compose"].checksums[0].value == hashlib.sha256(b"compose binary").hexdigest()
    contains = {(r.spdx_element_id, r.related_spdx_element_id) for r in document.relationships}
    clara = names["nvcr.io/nvidia/clara-train-sdk"]
    assert (clara.spdx_id, names["libssl1.1"].spdx_id) in contains                 # nested under its container
    assert ("SPDXRef-image", names["libssl3"].spdx_id) in contains
    assert packages["SPDXRef-image"].version == "ami-0123456789abcdef0"


def json_component(path, name):
    return next(c for c in json.loads(path.read_text())["components"] if c["name"] == name)


def test_spdx_refuses_what_is_not_an_sbom(tmp_path):
    with pytest.raises(SbomError, match="x.json: not a CycloneDX SBOM with metadata.component"):
        spdx.from_cyclonedx('{"bomFormat": "CycloneDX"}', "x.json")

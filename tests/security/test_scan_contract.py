"""Contract 2 (SUPPLY.md) end to end: the SBOM security/sbom.py writes from a raw inventory of contract 1's
shape is what the scanner reads: host and container apart, deb packages by source, Go modules scanned."""
from __future__ import annotations

import pytest

from security import scan

from scan_support import FIXTURE

pytest.importorskip("cyclonedx", reason="security/sbom.py writes the SBOM with cyclonedx-python-lib")
from security import sbom as writer  # noqa: E402
from security.raw import RawInventory  # noqa: E402

RAW = {
    "schema": 1,
    "os": {"id": "debian", "version_id": "13", "pretty_name": "Debian GNU/Linux 13 (trixie)"},
    "packages": [{"name": "libapparmor1", "version": "3.0.8-3", "arch": "amd64", "source": "apparmor",
                  "source_version": "3.0.8-3"},
                 {"name": "bash", "version": "5.2.37-2+b5", "arch": "amd64", "source": "bash",
                  "source_version": "5.2.37-2"}],
    "python": [{"name": "PyYAML", "version": "6.0.1", "location": "/usr/lib/python3/dist-packages"}],
    "components": {"nvidia_driver": "535.183.01", "nvidia_container_toolkit": "1.17.8", "docker": "26.1.5+dfsg1",
                   "containerd": "1.7.24~ds1", "compose": {"version": "2.29.7", "sha256": "ab" * 32}},
    "images": [{"ref": "nvcr.io/nvidia/clara-train-sdk:v4.1", "digest": "sha256:" + "12" * 32,
                "os": {"id": "ubuntu", "version_id": "20.04"},
                "packages": [{"name": "libssl1.1", "version": "1.1.1f-1ubuntu2.20", "arch": "amd64",
                              "source": "openssl", "source_version": "1.1.1f-1ubuntu2.20"}],
                "python": [{"name": "PyYAML", "version": "5.3.1", "location": "/usr/local/lib/python3.8"}]}],
}


def test_the_sbom_writer_and_the_scanner_agree(tmp_path):
    model = writer.bom(RawInventory.parse(RAW, "raw"), image_id="img-25", image_name="clara-train-25")
    path = tmp_path / "sbom.cdx.json"
    path.write_text(writer.to_json(model))
    result = scan.scan(path, folder=FIXTURE)
    where = {p.name: (p.kind, p.ecosystem, p.source, p.source_version) for p in result.packages}
    assert where["libapparmor1"] == ("host", "Debian:13", "apparmor", "3.0.8-3")
    assert where["bash"] == ("host", "Debian:13", "bash", "5.2.37-2")            # the source version, not +b5
    assert where["libssl1.1"] == ("container", "Ubuntu:20.04", "openssl", "1.1.1f-1ubuntu2.20")
    assert where["github.com/NVIDIA/nvidia-container-toolkit"][:2] == ("host", "Go")
    found = {(f.id, f.kind) for f in result.findings}
    assert found == {("DEBIAN-CVE-2016-1585", "host"), ("CVE-2024-0727", "container"),
                     ("GHSA-8q59-q68h-6hv4", "container"), ("PYSEC-2021-142", "container")}
    assert any("docker" in u for u in result.unscanned)      # no purl: listed, not silently skipped

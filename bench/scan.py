"""The scan half of the supply-chain benchmark (issue #25: SBOM and scan of ~3,000 packages under 30 s).

An SBOM of contract 2's shape (SUPPLY.md) with ~3,000 packages (Debian 13 host packages and Python
distributions, an Ubuntu 20.04 container with its own) is scanned against OSV exports of about the real
exports' size (records shaped like the real ones in tests/fixtures/osv/, tens of thousands per ecosystem,
most naming packages the image does not carry) and judged by the default policy: what `gate.check` does,
timed from reading the SBOM to the verdict. The data is written to a temporary folder first, untimed.
"""
from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
import zipfile
from datetime import date
from pathlib import Path

from packageurl import PackageURL

from manifests.model import Security
from security import policy, scan

# Records per export: roughly OSV's Debian, Ubuntu and PyPI exports in 2026 (quick: a tenth).
RECORDS = {"Debian": 60_000, "Ubuntu": 50_000, "PyPI": 16_000}
PACKAGES = {"host_deb": 2_000, "host_pypi": 150, "container_deb": 650, "container_pypi": 200}
HIT_SHARE = 0.08          # records that name a package the image carries


def _deb(name: str, version: str, os_id: str, release: str, source: str) -> dict:
    qualifiers = {"arch": "amd64", "distro": f"{os_id}-{release}"}
    if source != name:
        qualifiers["upstream"] = source
    purl = PackageURL(type="deb", namespace=os_id, name=name, version=version, qualifiers=qualifiers).to_string()
    return {"type": "library", "name": name, "version": version, "purl": purl, "bom-ref": purl}


def _pypi(name: str, version: str) -> dict:
    purl = PackageURL(type="pypi", name=name, version=version).to_string()
    return {"type": "library", "name": name, "version": version, "purl": purl, "bom-ref": purl}


def _sbom(rng: random.Random, scale: float) -> tuple[dict, dict[str, list[str]]]:
    count = {k: max(1, int(v * scale)) for k, v in PACKAGES.items()}
    sources = {"Debian": [f"src{i}" for i in range(count["host_deb"] // 2)],
               "Ubuntu": [f"usrc{i}" for i in range(count["container_deb"] // 2)],
               "PyPI": [f"dist-{i}" for i in range(count["host_pypi"] + count["container_pypi"])]}
    host = [_deb(f"lib{s}-{i % 2}", f"{rng.randint(1, 9)}.{rng.randint(0, 20)}-{rng.randint(1, 5)}+deb13u1",
                 "debian", "13", s) for i, s in enumerate(sources["Debian"] * 2)]
    host += [_pypi(n, f"{rng.randint(0, 5)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}")
             for n in sources["PyPI"][:count["host_pypi"]]]
    inner = [_deb(f"lib{s}-{i % 2}", f"{rng.randint(1, 9)}.{rng.randint(0, 20)}-{rng.randint(1, 5)}ubuntu0.20.04.1",
                  "ubuntu", "20.04", s) for i, s in enumerate(sources["Ubuntu"] * 2)]
    inner += [_pypi(n, f"{rng.randint(0, 5)}.{rng.randint(0, 30)}") for n in sources["PyPI"][count["host_pypi"]:]]
    image = {"type": "container", "name": "nvcr.io/nvidia/clara-train-sdk", "version": "sha256:" + "0" * 64,
             "bom-ref": "clara", "components": inner}
    doc = {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
           "metadata": {"component": {"type": "operating-system", "name": "bench", "version": "img"}},
           "components": host + [image]}
    return doc, sources


def _record(rng: random.Random, export: str, n: int, name: str) -> dict:
    cve = f"CVE-20{rng.randint(10, 26)}-{n:05d}"
    fixed = f"{rng.randint(1, 9)}.{rng.randint(0, 20)}-{rng.randint(1, 5)}"
    details = "A flaw was found in the handling of crafted input that may lead to a denial of service. " * 4
    if export == "Debian":
        affected = [{"package": {"ecosystem": f"Debian:{r}", "name": name},
                     "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": f"{fixed}+deb{r}u1"}]}],
                     "ecosystem_specific": {"urgency": rng.choice(["low", "medium", "unimportant",
                                                                   "not yet assigned"])}}
                    for r in (11, 12, 13)]
        return {"id": f"DEBIAN-{cve}", "upstream": [cve], "details": details, "affected": affected,
                "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]}
    if export == "Ubuntu":
        affected = [{"package": {"ecosystem": eco, "name": name},
                     "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": f"{fixed}ubuntu0.1"}]}],
                     "versions": [f"{fixed[:-2]}-{i}ubuntu{j}" for i in range(1, 4) for j in range(1, 5)],
                     "ecosystem_specific": {"availability": "No subscription required"}}
                    for eco in ("Ubuntu:20.04:LTS", "Ubuntu:22.04:LTS", "Ubuntu:24.04:LTS", "Ubuntu:Pro:18.04:LTS")]
        return {"id": f"UBUNTU-{cve}", "upstream": [cve], "details": details, "affected": affected,
                "severity": [{"type": "Ubuntu", "score": rng.choice(["low", "medium", "high"])}]}
    return {"id": f"GHSA-{n:04x}-bench", "aliases": [cve], "details": details,
            "affected": [{"package": {"ecosystem": "PyPI", "name": name},
                          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"},
                                                                     {"fixed": f"{rng.randint(1, 6)}.0"}]}],
                          "versions": [f"0.{i}" for i in range(20)]}],
            "database_specific": {"severity": rng.choice(["LOW", "MODERATE", "HIGH", "CRITICAL"])}}


def _data(folder: Path, rng: random.Random, sources: dict[str, list[str]], scale: float) -> int:
    total = 0
    for export, count in RECORDS.items():
        (folder / export).mkdir(parents=True)
        with zipfile.ZipFile(folder / export / "all.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for n in range(int(count * scale)):
                name = rng.choice(sources[export]) if rng.random() < HIT_SHARE else f"other-{export.lower()}-{n}"
                record = _record(rng, export, n, name)
                archive.writestr(f"{record['id']}.json", json.dumps(record, indent=2))
                total += 1
    return total


def run(quick: bool) -> dict:
    scale, runs = (0.1, 1) if quick else (1.0, 3)
    rng = random.Random(25)
    with tempfile.TemporaryDirectory(prefix="clara-bench-scan-") as tmp:
        root = Path(tmp)
        doc, sources = _sbom(rng, 1.0)
        sbom = root / "sbom.cdx.json"
        sbom.write_text(json.dumps(doc))
        records = _data(root / "osv", rng, sources, scale)
        times, verdict = [], None
        for _ in range(runs):
            started = time.perf_counter()
            result = scan.scan(sbom, folder=root / "osv")
            verdict = policy.judge(result, Security(), today=date.today())
            times.append(time.perf_counter() - started)
            scan.parse_version.cache_clear()        # each run parses versions afresh, as a bake does
    return {"scan": {"packages": len(result.packages), "osv_records": records, "findings": len(verdict.rows),
                     "refusing": len(verdict.refusing()), "median_s": round(statistics.median(times), 2),
                     "max_s": round(max(times), 2), "runs": runs}}

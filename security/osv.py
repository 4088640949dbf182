"""OSV vulnerability data per ecosystem: from a folder (`security.vuln_data`, `--vuln-data DIR`) or
downloaded from OSV's public exports into the cache, with the date it was fetched.

OSV publishes one `<ecosystem>/all.zip` per ecosystem (osv.dev docs/data.md, "Data dumps"). Since October
2024 only the main ecosystems are exported ("OSV.dev has stopped exporting entries for ecosystems with
prefixes ... refer only to the main ecosystem", google/osv.dev PR #2734): `Debian/all.zip` holds the records
of every Debian release (`affected[].package.ecosystem` says `Debian:12`, `Debian:13`), `Ubuntu/all.zip`
every Ubuntu release (`Ubuntu:20.04:LTS`, `Ubuntu:Pro:...`), `PyPI/all.zip` PyPI's, `Go/all.zip` Go modules'
(the SBOM names the NVIDIA Container Toolkit and compose as Go modules). The scanner
(security/scan.py) picks the release from each record's `affected` entries.

A folder of data holds, per ecosystem, `<ecosystem>/all.zip` or `<ecosystem>/*.json` (one record per
file); a release-scoped folder name such as `Debian:13/` counts for `Debian`.
"""
from __future__ import annotations

import fcntl
import json
import mmap
import re
import struct
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional

from core import settings
from core.errors import PipelineError

EXPORTS = ("Debian", "Ubuntu", "PyPI", "Go")
# A cached export younger than this is used as it is; older, the bake asks OSV again (a conditional GET).
FRESH_FOR = timedelta(hours=12)
STALE_AFTER = timedelta(days=7)     # unreachable OSV: an older cached copy counts as no data (security.offline decides)
TIMEOUT_S = 60
# Every package name a record mentions, read without parsing the JSON: only records naming a package the
# SBOM holds are parsed (the Debian export has tens of thousands of records).
_NAME = re.compile(rb'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')


class VulnDataError(PipelineError):
    """The vulnerability data given cannot be read."""


@dataclass(frozen=True)
class Source:
    """Where one ecosystem's data came from and when it was fetched (ISO 8601, UTC)."""
    ecosystem: str
    origin: str
    fetched: str
    note: str = ""


@dataclass(frozen=True)
class Missing:
    """An ecosystem the scan needed and has no data for, and why."""
    ecosystem: str
    reason: str


@dataclass(frozen=True)
class Data:
    """The records that name the packages asked for, per (ecosystem, name)."""
    records: Mapping[tuple[str, str], tuple[dict, ...]] = field(default_factory=dict)
    sources: tuple[Source, ...] = ()
    missing: tuple[Missing, ...] = ()

    def for_package(self, ecosystem: str, name: str) -> tuple[dict, ...]:
        return self.records.get((ecosystem, name), ())


def normalize(ecosystem: str, name: str) -> str:
    """The name OSV matches on: PyPI names as PEP 503 normalizes them, others as they are."""
    return re.sub(r"[-_.]+", "-", name).lower() if ecosystem == "PyPI" else name


def load(wanted: Mapping[str, Iterable[str]], *, folder: str | Path | None = None, now: Optional[datetime] = None,
         cache: Optional[Path] = None, base_url: Optional[str] = None) -> Data:
    """The records for `wanted` ({ecosystem: package names}) from `folder`, else from OSV's exports
    (downloaded into `cache`, default <cache dir>/osv). An ecosystem whose data cannot be had is listed in
    `missing` with the reason; a `folder` that is not one raises VulnDataError."""
    now = now or datetime.now(timezone.utc)
    records: dict[tuple[str, str], list[dict]] = {}
    sources, missing = [], []
    root = _folder(folder) if folder else None
    for ecosystem in sorted(wanted):
        if ecosystem not in EXPORTS:
            missing.append(Missing(ecosystem, f"no OSV export is read for {ecosystem} (this scanner reads "
                                              f"{', '.join(EXPORTS)})"))
            continue
        names = {normalize(ecosystem, n) for n in wanted[ecosystem]}
        if root is not None:
            files, source, why = _from_folder(root, ecosystem)
        else:
            files, source, why = _from_osv(ecosystem, cache or settings.cache_dir() / "osv",
                                           base_url or settings.osv_url(), now)
        if source is None:
            missing.append(Missing(ecosystem, why))
            continue
        for record in _records(files, ecosystem, names):
            for name in _names_in(record, ecosystem) & names:
                records.setdefault((ecosystem, name), []).append(record)
        sources.append(source)
    return Data({key: tuple(found) for key, found in records.items()}, tuple(sources), tuple(missing))


# --- a folder ------------------------------------------------------------------------------------------

def _folder(folder: str | Path) -> Path:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise VulnDataError(f"vulnerability data {root}: not a folder; expected a folder holding "
                            f"<ecosystem>/all.zip or <ecosystem>/*.json for {', '.join(EXPORTS)} "
                            "(security.vuln_data or --vuln-data)")
    return root


def _from_folder(root: Path, ecosystem: str):
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and d.name.split(":", 1)[0] == ecosystem)
    files = [f for d in dirs for f in sorted(d.rglob("*")) if f.is_file() and f.suffix in (".zip", ".json")]
    if not files:
        return [], None, (f"{root} has no OSV data for {ecosystem} (expected {root}/{ecosystem}/all.zip or "
                          f"{root}/{ecosystem}/*.json)")
    newest = max(f.stat().st_mtime for f in files)
    fetched = datetime.fromtimestamp(newest, timezone.utc).isoformat(timespec="seconds")
    return files, Source(ecosystem, str(root), fetched, "a folder of OSV data (its newest file's time)"), ""


# --- OSV's exports, cached -----------------------------------------------------------------------------

def export_url(ecosystem: str, base_url: Optional[str] = None) -> str:
    return f"{(base_url or settings.osv_url()).rstrip('/')}/{urllib.request.quote(ecosystem)}/all.zip"


def _from_osv(ecosystem: str, cache: Path, base_url: str, now: datetime):
    folder = cache / ecosystem
    # Clouds bake in parallel threads, and two bakes may share the cache: one downloads, the others wait
    # for it and then find a fresh copy.
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch(ecosystem, folder, export_url(ecosystem, base_url), now)


def _fetch(ecosystem: str, folder: Path, url: str, now: datetime):
    archive, meta_path = folder / "all.zip", folder / "fetched.json"
    meta = _meta(meta_path) if archive.is_file() else None
    if meta and meta.get("url") == url and now - _when(meta) < FRESH_FOR:
        return [archive], Source(ecosystem, url, meta["fetched"], "cached"), ""
    try:
        meta = _download(url, folder, archive, meta_path, meta, now)
    except (OSError, urllib.error.URLError, zipfile.BadZipFile, ValueError) as exc:
        reason = _reason(exc)
        if meta and now - _when(meta) > STALE_AFTER:     # too old to stand for the day's data: missing
            return [], None, (f"OSV data for {ecosystem} could not be downloaded from {url} ({reason}) and the "
                              f"cached copy is from {meta['fetched']}, older than {STALE_AFTER.days} days")
        if meta:
            return [archive], Source(ecosystem, url, meta["fetched"],
                                     f"OSV unreachable ({reason}): the cached copy fetched {meta['fetched']}"), ""
        return [], None, f"OSV data for {ecosystem} could not be downloaded from {url}: {reason}"
    return [archive], Source(ecosystem, url, meta["fetched"], "downloaded"), ""


def _download(url: str, folder: Path, archive: Path, meta_path: Path, meta: Optional[dict], now: datetime) -> dict:
    headers = {"User-Agent": "clara-bake vulnerability scan"}
    if meta and meta.get("url") == url and meta.get("etag"):
        headers["If-None-Match"] = meta["etag"]
    request = urllib.request.Request(url, headers=headers)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = now.astimezone(timezone.utc).isoformat(timespec="seconds")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 304 and meta:           # unchanged since the cached copy: it is today's data
            meta = {**meta, "fetched": stamp}
            _write_json(meta_path, meta)
            return meta
        raise
    with response:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".all.zip.")
        try:
            with open(fd, "wb") as handle:
                while block := response.read(1 << 20):
                    handle.write(block)
            if not zipfile.is_zipfile(tmp):
                raise zipfile.BadZipFile(f"{url} did not answer with a zip archive")
            Path(tmp).replace(archive)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        meta = {"url": url, "fetched": stamp, "etag": response.headers.get("ETag", ""),
                "last_modified": response.headers.get("Last-Modified", ""), "bytes": archive.stat().st_size}
    _write_json(meta_path, meta)
    return meta


def fetched_at(ecosystem: str, cache: Optional[Path] = None) -> Optional[str]:
    """When the cached export of `ecosystem` was fetched, if there is one."""
    meta = _meta((cache or settings.cache_dir() / "osv") / ecosystem / "fetched.json")
    return meta.get("fetched") if meta else None


def _meta(path: Path) -> Optional[dict]:
    try:
        meta = json.loads(path.read_text())
        _when(meta)
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _when(meta: dict) -> datetime:
    return datetime.fromisoformat(meta["fetched"])


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


# --- records -------------------------------------------------------------------------------------------

def _records(files: list[Path], ecosystem: str, names: set[str]) -> Iterator[dict]:
    for path in files:
        try:
            if path.suffix == ".zip":
                for member, raw in _members(path):
                    yield from _parsed(raw, ecosystem, names, f"{path}:{member}")
            else:
                yield from _parsed(path.read_bytes(), ecosystem, names, str(path))
        except (OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise VulnDataError(f"{path}: cannot read OSV data ({exc}); expected a zip of OSV JSON records "
                                "or one OSV JSON record") from None


def _members(path: Path) -> Iterator[tuple[str, bytes]]:
    """Each `.json` member's bytes. Read straight from a memory map (ZipFile.read's per-member machinery
    was most of a scan's time on an export of 100,000 records); CRC-checked; anything but plain stored or
    deflated members goes through zipfile."""
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            for info in archive.infolist():
                if not info.filename.endswith(".json"):
                    continue
                at = info.header_offset
                if (info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
                        or view[at:at + 4] != b"PK\x03\x04"):
                    yield info.filename, archive.read(info)
                    continue
                name_len, extra_len = struct.unpack_from("<HH", view, at + 26)
                start = at + 30 + name_len + extra_len
                raw = view[start:start + info.compress_size]
                data = zlib.decompress(raw, -15) if info.compress_type == zipfile.ZIP_DEFLATED else raw
                if zlib.crc32(data) != info.CRC:
                    raise zipfile.BadZipFile(f"member {info.filename} fails its CRC check")
                yield info.filename, data


def _parsed(raw: bytes, ecosystem: str, names: set[str], where: str) -> Iterator[dict]:
    mentioned = {normalize(ecosystem, found.decode("utf-8", "replace")) for found in set(_NAME.findall(raw))}
    if not mentioned & names:
        return
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise VulnDataError(f"{where}: not an OSV JSON record ({exc})") from None
    if isinstance(record, dict) and isinstance(record.get("affected"), list) and not record.get("withdrawn"):
        yield record


def _names_in(record: dict, ecosystem: str) -> set[str]:
    found = set()
    for affected in record["affected"]:
        package = affected.get("package") if isinstance(affected, dict) else None
        if isinstance(package, dict) and str(package.get("ecosystem", "")).split(":", 1)[0] == ecosystem:
            found.add(normalize(ecosystem, str(package.get("name", ""))))
    return found

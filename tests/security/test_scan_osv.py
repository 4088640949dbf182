"""OSV data: from a folder (records or all.zip), or downloaded from the export bucket (a server on 127.0.0.1
here, through CLARA_OSV_URL) into the cache with its fetch date; unreachable: said, never a silent pass."""
from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core import settings
from security import osv

from scan_support import FIXTURE, zipped

NOW = datetime(2026, 12, 7, 18, 0, tzinfo=timezone.utc)
WANTED = {"Debian": {"apparmor"}, "PyPI": {"PyYAML"}}


class Bucket(ThreadingHTTPServer):
    """OSV's export bucket: GET /<ecosystem>/all.zip, with an ETag and 304 for If-None-Match."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = {f"/{e}/all.zip": zipped(e) for e in ("Debian", "PyPI", "Ubuntu")}
        self.requests: list[tuple[str, str]] = []
        self.status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        bucket: Bucket = self.server
        bucket.requests.append((self.path, self.headers.get("If-None-Match", "")))
        body = bucket.files.get(self.path)
        if bucket.status != 200 or body is None:
            self.send_error(bucket.status if bucket.status != 200 else 404)
            return
        etag = '"' + hashlib.md5(body).hexdigest() + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def bucket(monkeypatch):
    server = Bucket()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("CLARA_OSV_URL", server.url)
    yield server
    server.shutdown()
    server.server_close()


def test_the_default_is_osvs_public_bucket(monkeypatch):
    monkeypatch.delenv("CLARA_OSV_URL", raising=False)
    assert osv.export_url("Debian") == "https://osv-vulnerabilities.storage.googleapis.com/Debian/all.zip"


def test_downloaded_into_the_cache_with_the_fetch_date(bucket, tmp_path):
    data = osv.load(WANTED, now=NOW, cache=tmp_path)
    assert [r["id"] for r in data.for_package("Debian", "apparmor")] == ["DEBIAN-CVE-2016-1585", "DEBIAN-CVE-2017-6507"]
    assert {r["id"] for r in data.for_package("PyPI", "pyyaml")} == {"GHSA-8q59-q68h-6hv4", "PYSEC-2021-142"}
    assert [(s.ecosystem, s.origin, s.fetched, s.note) for s in data.sources] == [
        ("Debian", f"{bucket.url}/Debian/all.zip", "2026-12-07T18:00:00+00:00", "downloaded"),
        ("PyPI", f"{bucket.url}/PyPI/all.zip", "2026-12-07T18:00:00+00:00", "downloaded")]
    assert (tmp_path / "Debian" / "all.zip").read_bytes() == bucket.files["/Debian/all.zip"]
    assert osv.fetched_at("Debian", tmp_path) == "2026-12-07T18:00:00+00:00"
    assert sorted(p for p, _ in bucket.requests) == ["/Debian/all.zip", "/PyPI/all.zip"]


def test_a_fresh_cache_is_used_and_a_stale_one_asked_again(bucket, tmp_path):
    osv.load({"Debian": {"apparmor"}}, now=NOW, cache=tmp_path)
    later = NOW + timedelta(hours=1)
    data = osv.load({"Debian": {"apparmor"}}, now=later, cache=tmp_path)
    assert len(bucket.requests) == 1 and data.sources[0].note == "cached"
    assert data.sources[0].fetched == "2026-12-07T18:00:00+00:00"
    next_day = NOW + timedelta(days=1)
    data = osv.load({"Debian": {"apparmor"}}, now=next_day, cache=tmp_path)
    assert bucket.requests[-1][1].startswith('"')                 # asked with the cached copy's ETag
    assert data.sources[0].fetched == "2026-12-08T18:00:00+00:00"   # unchanged (304): today's data
    assert data.for_package("Debian", "apparmor")


def test_unreachable_with_a_cached_copy_says_so_and_uses_it(bucket, tmp_path):
    osv.load({"Debian": {"apparmor"}}, now=NOW, cache=tmp_path)
    bucket.status = 503
    data = osv.load({"Debian": {"apparmor"}}, now=NOW + timedelta(days=2), cache=tmp_path)
    (source,) = data.sources
    assert source.fetched == "2026-12-07T18:00:00+00:00"
    assert source.note.startswith("OSV unreachable (HTTP 503") and "cached copy fetched 2026-12-07" in source.note
    assert data.for_package("Debian", "apparmor") and not data.missing


def test_unreachable_with_a_cached_copy_older_than_a_week_is_missing(bucket, tmp_path):
    """An old copy standing in for the day's data would bypass security.offline: it counts as none."""
    osv.load({"Debian": {"apparmor"}}, now=NOW, cache=tmp_path)
    bucket.status = 503
    data = osv.load({"Debian": {"apparmor"}}, now=NOW + timedelta(days=8), cache=tmp_path)
    assert data.sources == ()
    (missing,) = data.missing
    assert "cached copy is from 2026-12-07" in missing.reason and "older than 7 days" in missing.reason


def test_unreachable_without_a_cache_is_missing_with_the_reason(bucket, tmp_path):
    bucket.status = 404
    data = osv.load({"Ubuntu": {"openssl"}}, now=NOW, cache=tmp_path)
    assert data.sources == () and data.records == {}
    (missing,) = data.missing
    assert missing.ecosystem == "Ubuntu"
    assert f"could not be downloaded from {bucket.url}/Ubuntu/all.zip: HTTP 404" in missing.reason


def test_nothing_listening_is_missing_too(tmp_path, monkeypatch):
    server = Bucket()                       # bound, then closed: the port refuses connections
    url = server.url
    server.server_close()
    monkeypatch.setenv("CLARA_OSV_URL", url)
    (missing,) = osv.load({"PyPI": {"pyyaml"}}, now=NOW, cache=tmp_path).missing
    assert "could not be downloaded" in missing.reason and "refused" in missing.reason.lower()
    assert not (tmp_path / "PyPI" / "all.zip").exists()


def test_an_answer_that_is_not_a_zip_is_not_kept(bucket, tmp_path):
    bucket.files["/PyPI/all.zip"] = b"<html>captive portal</html>"
    (missing,) = osv.load({"PyPI": {"pyyaml"}}, now=NOW, cache=tmp_path).missing
    assert "did not answer with a zip archive" in missing.reason
    assert not list((tmp_path / "PyPI").glob("*.zip")) and not list((tmp_path / "PyPI").glob(".all.zip.*"))


def test_a_folder_of_zips_and_release_scoped_folders(tmp_path):
    (tmp_path / "PyPI").mkdir()
    (tmp_path / "PyPI" / "all.zip").write_bytes(zipped("PyPI"))
    (tmp_path / "Debian:13").mkdir()
    (tmp_path / "Debian:13" / "r.json").write_bytes((FIXTURE / "Debian" / "DEBIAN-CVE-2016-1585.json").read_bytes())
    data = osv.load({"PyPI": {"pyyaml"}, "Debian": {"apparmor"}, "Ubuntu": {"openssl"}}, folder=tmp_path)
    assert len(data.for_package("PyPI", "pyyaml")) == 2 and len(data.for_package("Debian", "apparmor")) == 1
    assert data.sources[0].origin == str(tmp_path)
    assert [m.ecosystem for m in data.missing] == ["Ubuntu"]
    assert f"{tmp_path}/Ubuntu/all.zip" in data.missing[0].reason


def test_a_folder_that_is_not_one_is_an_error(tmp_path):
    with pytest.raises(osv.VulnDataError, match="not a folder.*--vuln-data"):
        osv.load(WANTED, folder=tmp_path / "nowhere")


def test_a_broken_record_is_named(tmp_path):
    (tmp_path / "PyPI").mkdir()
    (tmp_path / "PyPI" / "bad.json").write_text('{"id": "X", "affected": [{"package": {"name": "pyyaml"}}')
    with pytest.raises(osv.VulnDataError, match="bad.json: not an OSV JSON record"):
        osv.load({"PyPI": {"pyyaml"}}, folder=tmp_path)


def test_the_setting_is_a_known_variable(monkeypatch):
    monkeypatch.setenv("CLARA_OSV_URL", "http://127.0.0.1:9/osv/")
    assert settings.osv_url() == "http://127.0.0.1:9/osv"


def test_parallel_bakes_download_once(bucket, tmp_path):
    results = []
    threads = [threading.Thread(target=lambda: results.append(osv.load({"PyPI": {"pyyaml"}}, now=NOW, cache=tmp_path)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [p for p, _ in bucket.requests] == ["/PyPI/all.zip"]
    assert sorted(r.sources[0].note for r in results) == ["cached", "cached", "cached", "downloaded"]

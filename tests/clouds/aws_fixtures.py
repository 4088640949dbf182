"""Fixtures for tests/clouds/test_aws.py: moto's server on 127.0.0.1 (in a subprocess, so our own
base AMIs with our own dates load through MOTO_AMIS_PATH) and botocore event hooks that count
calls and inject faults. Imported explicitly by the test module (no conftest here: shared folder)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs

import pytest

ACCOUNT = "123456789012"            # moto's default account: "self"
DLAMI_OWNER = "898082745236"
DLAMI = "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) "
SSM_BASE = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


def _ami(ami_id, name, created, owner=DLAMI_OWNER, arch="x86_64", description=None, deprecation_time=None):
    ami = {"ami_id": ami_id, "state": "available", "public": True, "owner_id": owner,
           "image_location": f"amazon/{name}", "root_device_type": "ebs", "root_device_name": "/dev/sda1",
           "description": description or name, "image_type": "machine", "architecture": arch, "name": name,
           "virtualization_type": "hvm", "hypervisor": "xen", "sriov": "simple",
           "creation_date": created}
    if deprecation_time:
        ami["deprecation_time"] = deprecation_time
    return ami


# The newest x86_64 DLAMI of DLAMI_OWNER is ami-0dl20250301; every newer one is wrong in one way.
BASE_AMIS = [
    _ami("ami-0dl20240101", DLAMI + "20240101", "2024-01-01T10:00:00.000Z"),
    _ami("ami-0dl20250301", DLAMI + "20250301", "2025-03-01T10:00:00.000Z"),
    _ami("ami-0dl20241201", DLAMI + "20241201", "2024-12-01T10:00:00.000Z"),
    _ami("ami-0arm20250601", DLAMI + "20250601", "2025-06-01T10:00:00.000Z", arch="arm64"),
    _ami("ami-0other20250701", DLAMI + "20250701", "2025-07-01T10:00:00.000Z", owner="111111111111"),
    _ami("ami-0u2420250801", "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20250801",
         "2025-08-01T10:00:00.000Z"),
    _ami("ami-0long20250901", DLAMI + "20250901-rc1", "2025-09-01T10:00:00.000Z"),
    # The newest of all, but deprecated (DeprecationTime passed): hidden from the name filter (#12).
    _ami("ami-0dep20251001", DLAMI + "20251001", "2025-10-01T10:00:00.000Z", deprecation_time="2025-12-01T00:00:00Z"),
]

# Base images with the driver in their description, as DLAMI descriptions say it (#12); their own owner
# keeps them out of the tests above. tests/clouds/test_aws_base_image.py uses them.
DRIVER_OWNER = "222222222222"
DRIVER_AMIS = [
    _ami("ami-0drv470", DLAMI + "20220101", "2022-01-01T10:00:00.000Z", owner=DRIVER_OWNER,
         description="Supported EC2 instances: G4dn, G5. NVIDIA driver 470.256.02, CUDA 11.4"),
    _ami("ami-0drv580", DLAMI + "20260106", "2026-01-06T10:00:00.000Z", owner=DRIVER_OWNER,
         description="Supported EC2 instances: G4dn, G5, G6. NVIDIA driver 580.105.08, CUDA 12.9"),
    _ami("ami-0drv595", DLAMI + "20260724", "2026-07-24T10:00:00.000Z", owner=DRIVER_OWNER,
         description="Supported EC2 instances: G4dn, G5, G6, P5. NVIDIA driver 595.71.05, CUDA 13.0"),
    _ami("ami-0drv610", "Future DLAMI 610", "2026-09-01T10:00:00.000Z", owner=DRIVER_OWNER,
         description="NVIDIA driver 610.10.01"),
    _ami("ami-0drvnone", "Plain Ubuntu 22.04 20260101", "2026-01-01T10:00:00.000Z", owner=DRIVER_OWNER),
    _ami("ami-0drvdep", DLAMI + "20250101", "2025-01-01T10:00:00.000Z", owner=DRIVER_OWNER,
         description="NVIDIA driver 570.133.20", deprecation_time="2025-06-01T00:00:00Z"),
]

# moto 5.2 parses each AMI's creation_date in place when a region's backend loads, so the second
# region fails on the already-parsed datetime; the bootstrap lets datetimes through.
_BOOT = """
import datetime, sys
import moto.ec2.models.amis as amis
_parse = amis.parse_timestamp
amis.parse_timestamp = lambda v: v if isinstance(v, datetime.datetime) else _parse(v)
# moto 5.2 has no AMI deprecation: an AMI keeps `deprecation_time` (served as DescribeImages'
# DeprecationTime), and, as EC2 documents, a deprecated AMI "does not appear in DescribeImages API calls
# unless you specify its ID" or IncludeDeprecated, for anyone but its owner (EC2 User Guide, Deprecate an
# AMI; DescribeImages IncludeDeprecated: "If you are the AMI owner, all deprecated AMIs appear").
_init = amis.Ami.__init__
def _ami_init(self, *args, deprecation_time=None, **kwargs):
    _init(self, *args, **kwargs)
    self.deprecation_time = deprecation_time
amis.Ami.__init__ = _ami_init
from moto.ec2.responses import amis as responses
_describe = responses.AmisResponse.describe_images
def _is_deprecated(ami):
    when = getattr(ami, "deprecation_time", None)
    return bool(when) and datetime.datetime.fromisoformat(when.replace("Z", "+00:00")) <= \
        datetime.datetime.now(datetime.timezone.utc)
def describe_images(self):
    result = _describe(self)
    if not self._get_param("ImageIds", []) and str(self._get_param("IncludeDeprecated", "")).lower() != "true":
        result.result["Images"] = [a for a in result.result["Images"]
                                   if not _is_deprecated(a) or a.owner_id == self.current_account]
    return result
responses.AmisResponse.describe_images = describe_images
from moto.server import main
main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("moto")
    amis = folder / "amis.json"
    amis.write_text(json.dumps(BASE_AMIS + DRIVER_AMIS))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(MOTO_AMIS_PATH=str(amis), AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", _BOOT, "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {(folder / 'server.log').read_text()[-2000:]}")
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class Hooks:
    """Wraps clients.aws: counts every call per (region, service, operation) and lets a test
    register botocore event handlers (faults) on every client, present or future."""

    def __init__(self):
        self.calls: Counter = Counter()
        self.sends: Counter = Counter()          # HTTP attempts (retries included)
        self.handlers: list[tuple[str, str | None, object]] = []
        self.clients: list[tuple[str, str, object]] = []
        self.lock = threading.Lock()

    def wrap(self, real):
        def aws(service, region):
            client = real(service, region)
            client.meta.events.register("before-parameter-build", self._counter(region))
            client.meta.events.register("before-send", self._sender(region))
            with self.lock:
                self.clients.append((service, region, client))
                for event, want, handler in self.handlers:
                    if want in (None, region):
                        client.meta.events.register(event, handler)
            return client
        return aws

    def _counter(self, region):
        def count(event_name, **kwargs):
            _, service, op = event_name.split(".", 2)
            with self.lock:
                self.calls[(region, service, op)] += 1
        return count

    def _sender(self, region):
        def count(event_name, **kwargs):
            _, service, op = event_name.split(".", 2)
            with self.lock:
                self.sends[(region, service, op)] += 1
        return count

    def add(self, event: str, handler, region: str | None = None):
        with self.lock:
            self.handlers.append((event, region, handler))
            for _, r, client in self.clients:
                if region in (None, r):
                    client.meta.events.register(event, handler)

    def count(self, op: str, region: str | None = None) -> int:
        return sum(n for (r, _, o), n in self.calls.items() if o == op and region in (None, r))

    def creates(self) -> int:
        mutating = ("Create", "Run", "Copy", "Import", "Register", "Put", "Modify", "Authorize", "Delete",
                    "Deregister", "Terminate")
        return sum(n for (_, _, op), n in self.calls.items() if op.startswith(mutating))


def error_response(code: str, message: str, status: int = 400):
    """A (http, parsed) pair a before-call handler returns to make the call fail with `code`."""
    from botocore.awsrequest import AWSResponse
    return (AWSResponse("http://127.0.0.1/", status, {}, None),
            {"Error": {"Code": code, "Message": message},
             "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": 0}})


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **kwargs):
        yield self.body


def ec2_http_error(code: str, message: str, status: int):
    """A raw EC2 XML error a before-send handler returns: botocore parses and retries it."""
    from botocore.awsrequest import AWSResponse
    body = (f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
            f"<Message>{message}</Message></Error></Errors><RequestID>fault</RequestID></Response>").encode()
    return AWSResponse("http://127.0.0.1/", status, {"Content-Type": "text/xml"}, _Raw(body))


def query_params(request) -> dict[str, str]:
    """The EC2 query parameters of a before-send request."""
    body = request.body
    if isinstance(body, bytes):
        body = body.decode()
    return {k: v[0] for k, v in parse_qs(body or "").items()}


@pytest.fixture
def aws_env(moto_url, monkeypatch):
    """Environment for clouds.aws against moto, state reset, and botocore back-off recorded but
    not slept (the retry count is what the tests assert)."""
    import botocore.retries.standard as standard
    from clouds import clients

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("CLARA_POLL_INTERVAL", "0")
    monkeypatch.delenv("CLARA_TEST_VM_ADDRESS", raising=False)
    req = urllib.request.Request(f"{moto_url}/moto-api/reset", data=b"", method="POST")
    urllib.request.urlopen(req, timeout=10).read()

    delays: list[float] = []
    real_delay = standard.ExponentialBackoff.delay_amount

    def no_sleep(self, context):
        delays.append(real_delay(self, context))
        return 0
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", no_sleep)
    hooks = Hooks()
    hooks.delays = delays
    monkeypatch.setattr(clients, "aws", hooks.wrap(clients.aws))
    yield hooks


@pytest.fixture
def boto(aws_env):
    """Plain boto3 clients for the tests' own setup and assertions (not counted)."""
    import boto3
    cache: dict = {}

    def client(service: str, region: str = "us-east-1"):
        if (service, region) not in cache:
            cache[(service, region)] = boto3.client(service, region_name=region)
        return cache[(service, region)]
    return client


def site_manifest(tmp_path: Path, aws_yaml: str):
    """The default manifest with clouds.aws fields overridden (aws_yaml: indented by 4)."""
    from manifests import DEFAULT, load_manifest
    site = tmp_path / "site.yaml"
    site.write_text(f"extends: {Path(DEFAULT).resolve()}\nclouds:\n  aws:\n{aws_yaml}")
    return load_manifest(site)

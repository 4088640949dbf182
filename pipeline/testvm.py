"""Launch a test VM from a new image, run the checks in validate/ over SSH, always tear it down.

Used by `invoke bake` after Packer and by `invoke test --cloud X --image ID` on its own. The
checks run as a pytest subprocess (the same command a person runs by hand), writing junit XML;
this module reads the counts back. Teardown runs on success, failure, exceptions and interrupts.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

from clouds import clients
from core import cancel, settings
from core.sshkey import ephemeral_keypair
from core.errors import ValidationFailed
from core.names import TEST_PREFIX
from core.run import run

CHECKS = Path(__file__).resolve().parent.parent / "validate"     # the testinfra checks run on the VM


@dataclass(frozen=True)
class CheckResult:
    passed: int
    failed: int
    skipped: int
    skip_reasons: tuple[str, ...]
    failures: tuple[str, ...]
    junit: str
    metrics: dict
    ready: dict = field(default_factory=dict)     # ready_figures(): what a team waits for

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.passed > 0

    def summary(self) -> dict:
        return {"passed": self.passed, "failed": self.failed, "skipped": self.skipped,
                "skip_reasons": list(self.skip_reasons), "failures": list(self.failures),
                "junit": self.junit, **self.metrics, "ready": self.ready}


def ready_figures(launched_at: float, ssh_at: float, metrics: dict) -> dict:
    """Seconds from the launch call to SSH answering, to `docker info` answering and to the first
    step in the workload container (a CUDA op where a GPU is, else the workload's start until its
    servers answer). All stamps are this runner's wall clock (the checks run here, over SSH); a
    figure the checks could not measure (their test failed or was skipped) is None."""
    def since(key):
        value = metrics.get(key)
        return round(value - launched_at, 1) if isinstance(value, (int, float)) else None
    step = "torch.cuda" if since("gpu_step_at") is not None else "workload start"
    return {"ssh_s": round(ssh_at - launched_at, 1), "docker_s": since("docker_ready_at"),
            "first_step_s": since("gpu_step_at") if step == "torch.cuda" else since("service_ready_at"),
            "first_step": step}


def wait_for_ssh(host: str, port: int, user: str, key: Path, timeout_s: float, what: str = "the test VM") -> None:
    import logging
    import paramiko
    # While sshd is still starting, paramiko's transport thread logs every refused banner with a
    # traceback; the last error is reported below if the wait runs out.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        cancel.check(f"waiting for {what}")
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(host, port=port, username=user, key_filename=str(key), timeout=10,
                           banner_timeout=10, auth_timeout=10, look_for_keys=False, allow_agent=False)
            client.exec_command("true", timeout=10)[1].channel.recv_exit_status()
            return
        except (OSError, paramiko.SSHException, EOFError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        cancel.sleep(1)   # ssh_s is a recorded figure: a coarse poll would add to it
    raise ValidationFailed(f"{what} at {host}:{port} did not answer SSH as {user} within "
                           f"{timeout_s:.0f} s (last: {last})")


def run_checks(host: str, port: int, user: str, key: Path, expect: dict, out_dir: Path,
               log_file: Path) -> CheckResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    expect_file = out_dir / "expect.json"
    expect_file.write_text(json.dumps(expect, indent=2, sort_keys=True) + "\n")
    junit, metrics_file = out_dir / "junit.xml", out_dir / "metrics.json"
    cmd = [sys.executable, "-m", "pytest", str(CHECKS), f"--hosts=paramiko://{user}@{host}:{port}",
           f"--ssh-identity-file={key}", f"--expect={expect_file}", f"--metrics={metrics_file}",
           f"--junitxml={junit}", "-rs", "-p", "no:cacheprovider", "--no-header"]
    with open(log_file, "a") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        run(cmd, what="the checks", cwd=CHECKS.parent, stdout=log, check=False)
    cancel.check("the checks")
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    return _read_junit(junit, metrics, log_file)


def _read_junit(junit: Path, metrics: dict, log_file: Path) -> CheckResult:
    if not junit.exists():
        raise ValidationFailed("the checks did not run (no junit report)", log=str(log_file))
    passed = failed = skipped = 0
    reasons, failures = [], []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        skip = case.find("skipped")
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            failed += 1
            failures.append(f"{name}: {(bad.get('message') or '').splitlines()[0][:200] if bad.get('message') else ''}")
        elif skip is not None:
            skipped += 1
            reasons.append(f"{name}: {skip.get('message', '')}")
        else:
            passed += 1
    return CheckResult(passed, failed, skipped, tuple(reasons), tuple(failures), str(junit), metrics)


def check_image(adapter, image, *, expect_for, bake_id: str, user_override: str | None = None,
               ssh_timeout_s: float, out_dir: Path, log_file: Path, log=print) -> CheckResult:
    """The whole lifecycle: key, VM, SSH, checks, teardown (always)."""
    keydir = Path(tempfile.mkdtemp(prefix=f"{TEST_PREFIX}key-"))
    vm = None
    try:
        key, public_file = ephemeral_keypair(keydir)
        public_key = public_file.read_text().strip()
        # Only a cloud VM needs a firewall rule for this runner's address.
        cidr = clients.runner_cidr() if adapter.needs_runner_cidr else "127.0.0.1/32"
        launched_at = time.time()       # the launch call, as a team's RunInstances/insert starts
        vm = adapter.launch_test_vm(image, public_key, bake_id, cidr)
        user = user_override or settings.test_vm_user() or vm.user
        log(f"test VM {vm.id} at {vm.host}:{vm.port}: waiting for SSH")
        wait_for_ssh(vm.host, vm.port, user, key, ssh_timeout_s)
        ssh_at = time.time()
        log("running the checks")
        result = run_checks(vm.host, vm.port, user, key, expect_for(public_key, vm.size), out_dir, log_file)
        result = replace(result, ready=ready_figures(launched_at, ssh_at, result.metrics))
        log("ready: " + ", ".join(f"{k} {v}" for k, v in result.ready.items()))
        (out_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
        return result
    finally:
        try:
            if vm is not None:
                log(f"tearing down test VM {vm.id}")
                with cancel.shielded():
                    adapter.teardown(vm)
        finally:
            shutil.rmtree(keydir, ignore_errors=True)

"""`invoke launch`: a team member's VM from a published image, on any target (issue #30, item 6).

The channel (default `stable`) names the image: what the cloud says points at it (adapter.published())
or, where the cloud cannot say (an account the image is only shared with cannot read the publisher's
SSM parameters or list its images), the record `published/<manifest>.json`. The adapter launches
it with the manifest's size and disk, SSH from the caller's address only (CLARA_RUNNER_CIDR, else
as checkip sees it) and the caller's public key; this waits for SSH and prints how to log in,
start the notebook and tunnel to it. A failure after the launch deletes what it created. Launched
VMs carry no expiry and their own name prefix and tag (core.names.LAUNCH_PREFIX, TAG_LAUNCH):
`invoke sweep` never reaps them; `--delete NAME` does.
"""
from __future__ import annotations

import getpass
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from clouds.base import CloudAdapter, Launched, adapter as adapter_for
from clouds.common import rolled_back_on_failure
from core import cancel
from core.errors import PipelineError
from core.names import TAG_LAUNCH

# A GCE instance name and an Azure VM name at once ([a-z]([-a-z0-9]*[a-z0-9])?), short enough that
# clara-launch-<name>-osdisk and the GCE firewall clara-launch-<name> stay within 63 characters.
NAME = re.compile(r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?")
DEFAULT_KEYS = ("~/.ssh/id_ed25519.pub", "~/.ssh/id_rsa.pub")
SSH_TIMEOUT_S = 900.0          # a GPU VM's first boot with a large image can take minutes

Log = Callable[[str], None]
Wait = Callable[[Launched, Path | None, float], None]


def default_name(now: datetime | None = None, user: str | None = None) -> str:
    """clara-<user>-<yyyymmdd-hhmm> (UTC), the user name cut to what NAME allows."""
    who = re.sub(r"[^a-z0-9]+", "-", (user or getpass.getuser()).lower()).strip("-")[:16].strip("-") or "me"
    return f"clara-{who}-{(now or datetime.now(timezone.utc)).strftime('%Y%m%d-%H%M')}"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or ""):
        raise PipelineError(f"--name {name!r}: expected 1-40 lowercase letters, digits and hyphens, starting with "
                            "a letter and not ending with a hyphen (a name GCE and Azure both accept), e.g. "
                            "clara-alice")
    return name


def read_public_key(path: str = "") -> tuple[str, Path]:
    """The caller's public key (one OpenSSH line) and its file: --key, else the first default that exists."""
    candidates = [Path(path).expanduser()] if path else [Path(p).expanduser() for p in DEFAULT_KEYS]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        if path:
            raise PipelineError(f"--key {path}: no such file; give the public key (.pub) you log in with")
        raise PipelineError(f"no SSH public key at {' or '.join(str(p) for p in candidates)}: create one with "
                            "`ssh-keygen -t ed25519` or give --key PATH.pub")
    try:
        text = found.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"--key {found}: cannot read it ({exc})") from None
    if not text or "\n" in text or not text.startswith(("ssh-", "ecdsa-", "sk-")) or len(text.split()) < 2:
        raise PipelineError(f"--key {found}: expected one OpenSSH public key line (ssh-ed25519 AAAA... you@host); "
                            "is it the private key? Give the .pub file")
    return text, found


def image_for_channel(manifest, cloud: str, adapter: CloudAdapter, channel: str) -> tuple[str, str]:
    """(image ID, where it was found) of the channel's image: the cloud's word first, else the record."""
    from publish import record
    published = adapter.published() or []
    pointing = [p for p in published if channel in p.channels]
    if pointing:
        return pointing[-1].id, "the cloud"
    path = record.record_path(manifest.name, cloud)
    image = record.section(manifest.name, cloud).get("channels", {}).get(channel)
    if image:
        return image, str(path)
    raise PipelineError(f"{cloud}: the {channel!r} channel holds no image: the cloud lists none and the record "
                        f"{path} names none. Bake one (`invoke bake --cloud {cloud}`, it publishes to candidate) "
                        f"and promote it (`invoke promote --cloud {cloud} --to {channel}`), or give --channel "
                        "candidate")


def notebook_port(manifest) -> tuple[int, str]:
    """The main server's port and URL path for the first member on a VM (slot 0: port + 0;
    provision/steps/launcher.py gives member slot s port + s)."""
    server = manifest.workload.servers[manifest.workload.main_server()]
    return server.port, server.url


def private_key_for(public: Path) -> Path | None:
    """The private key beside `public` when paramiko can use it unattended (no passphrase)."""
    import paramiko
    private = public.with_suffix("") if public.suffix == ".pub" else None
    if private is None or not private.is_file():
        return None
    try:
        paramiko.PKey.from_path(str(private))
    except (paramiko.SSHException, OSError, ValueError, TypeError):   # TypeError: "password-protected"
        return None                      # encrypted or unreadable: the SSH wait takes the banner instead
    return private


def wait_until_ssh(vm: Launched, private_key: Path | None, timeout_s: float) -> None:
    """Logs in with the caller's key where it can (pipeline.testvm.wait_for_ssh); with a key it cannot
    use (a passphrase, an agent), until sshd sends its banner."""
    if private_key is not None:
        from pipeline.testvm import wait_for_ssh
        wait_for_ssh(vm.host, vm.port, vm.user, private_key, timeout_s, what=f"{vm.cloud} VM {vm.name}")
        return
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        cancel.check(f"waiting for {vm.name}")
        try:
            with socket.create_connection((vm.host, vm.port), timeout=10) as s:
                s.settimeout(10)
                if s.recv(64).startswith(b"SSH-"):
                    return
                last = "no SSH banner"
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        cancel.sleep(2)
    raise PipelineError(f"{vm.cloud}: {vm.name} at {vm.host}:{vm.port} did not answer SSH within {timeout_s:.0f} s "
                        f"(last: {last})")


def launch(manifest, cloud: str, *, channel: str = "stable", name: str = "", size: str = "", key: str = "",
           log: Log = print, wait: Wait = wait_until_ssh, ssh_timeout_s: float = SSH_TIMEOUT_S,
           adapter: CloudAdapter | None = None) -> Launched:
    """Launch, wait for SSH, print how to use it; a failure after the launch deletes the VM again."""
    from clouds import clients
    name = check_name(name or default_name())
    public_key, key_file = read_public_key(key)
    adapter = adapter or adapter_for(cloud, manifest, log=log)
    image_id, source = image_for_channel(manifest, cloud, adapter, channel)
    log(f"{cloud}: launching {name} from {image_id} (the {channel} channel, from {source})")
    cidr = clients.runner_cidr() if adapter.needs_runner_cidr else "127.0.0.1/32"
    vm = adapter.launch(image_id, name, public_key, cidr, size)
    with rolled_back_on_failure(cloud, log, lambda _: rolled_back(adapter, vm), what=f"VM {vm.name}") as created:
        created.append(vm.name)
        wait(vm, private_key_for(key_file), ssh_timeout_s)
    for line in instructions(manifest, adapter, vm, key_file if key else None):
        log(line)
    return vm


def rolled_back(adapter: CloudAdapter, vm: Launched) -> list[str]:
    """Deletes the VM that did not answer, by what launch recorded (adapter.delete_launched_vm); what
    it could not delete is named in the error, with the command that deletes it later."""
    from core.errors import CloudError
    try:
        return adapter.delete_launched_vm(vm)
    except Exception as exc:  # noqa: BLE001 - any failure leaves the VM: say what is left
        left = ", ".join(vm.resources or (vm.id,))
        raise CloudError(f"{vm.cloud}: could not delete {vm.name} ({_first_line(exc)}): delete {left} yourself, "
                         f"or `invoke launch --cloud {vm.cloud} --delete {vm.name}` once it is listed") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def instructions(manifest, adapter: CloudAdapter, vm: Launched, key_file: Path | None = None) -> list[str]:
    """How to log in, start the notebook, tunnel to it and delete the VM."""
    import shlex
    port, url = notebook_port(manifest)
    command, title = manifest.workload.name, manifest.workload.main_server()    # e.g. clara-train, jupyterlab
    tunnel = adapter.tunnel_command(vm, port, port)
    # The private key is the public one's name without .pub; of another name it is unknown (never -i the .pub).
    private = key_file.with_suffix("") if key_file is not None and key_file.suffix == ".pub" else None
    notes = []
    if key_file is not None and private is None:
        notes.append(f"  (no -i: {key_file} does not end in .pub, so its private key is unknown: add -i PRIVATE_KEY "
                     "where ssh does not find it)")
    if getpass.getuser() == "root" and vm.user != "root":
        notes.append(f"  (you run as root; on the VM you log in as {vm.user})")
    if tunnel[0] == "gcloud":
        if private is not None:     # else gcloud uses (and imports) its own ~/.ssh/google_compute_engine
            # (`gcloud compute ssh [--ssh-key-file=SSH_KEY_FILE] ... [-- SSH_ARGS]`, gcloud reference)
            split = tunnel.index("--")
            tunnel = [*tunnel[:split], "--ssh-key-file", str(private), *tunnel[split:]]
        login = tunnel[:tunnel.index("--")]
    else:
        identity = ["-i", str(private)] if private is not None else []
        if identity:
            tunnel = [tunnel[0], *identity, *tunnel[1:]]
        login = _without_forwarding(tunnel)      # the same options (a host key alias, the port) as the tunnel
    return [f"{vm.cloud}: {vm.name} is up at {vm.host} ({vm.id}{', ' + vm.zone if vm.zone else ''})",
            f"  log in:    {shlex.join(login)}",
            *notes,
            f"  on the VM: {command} start    (starts your own {title} and prints your port and URL with its token)",
            f"  tunnel:    {shlex.join(tunnel)}",
            f"  notebook:  http://localhost:{port}{url}?token=... (the first member on a VM gets port {port}, the "
            f"next {port + 1}...; use the port and token `{command} start` printed)",
            f"  delete:    invoke launch --cloud {vm.cloud} --delete {vm.name}"]


def _without_forwarding(tunnel: list[str]) -> list[str]:
    """`ssh -N -L a:b:c OPTIONS user@host` -> `ssh OPTIONS user@host`."""
    out, skip = [], False
    for word in tunnel:
        if skip:
            skip = False
        elif word == "-L":
            skip = True
        elif word != "-N":
            out.append(word)
    return out


def delete(manifest, cloud: str, name: str, log: Log = print) -> list[str]:
    removed = adapter_for(cloud, manifest, log=log).delete_launched(check_name(name))
    log(f"{cloud}: deleted {name}: " + ", ".join(removed))
    return removed


def listing(manifest, cloud: str, log: Log = print) -> list[Launched]:
    found = adapter_for(cloud, manifest, log=log).launched()
    if not found:
        log(f"{cloud}: no VMs launched with `invoke launch` (tag {TAG_LAUNCH})")
    for vm in found:
        log(f"{cloud}: {vm.name}  {vm.user}@{vm.host}:{vm.port}  {vm.id}  {vm.zone}  image {vm.image_id}")
    return found

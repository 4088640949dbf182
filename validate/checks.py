"""Pure helpers for the image checks: no host, no pytest, unit-testable.

Everything here takes text (what a command printed, what a file held) and returns plain data or
raises ``CheckError`` with a message meant for the person reading the test report.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
import re
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence


class CheckError(ValueError):
    """Input that cannot be checked (bad JSON, unparsable output...)."""


class ExpectError(Exception):
    """The expect.json file is missing, unreadable or malformed."""


# ---------------------------------------------------------------------------------------------
# expect.json


def freeze(value: Any) -> Any:
    """A read-only deep copy: dicts become mappingproxies, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze` (plain dicts and lists), e.g. for json.dumps."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def load_expect(path: str | None) -> Mapping[str, Any]:
    """Read and freeze expect.json; raise ExpectError naming the file on any problem."""
    if not path:
        raise ExpectError("--expect FILE is required (the expect.json written by the pipeline)")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ExpectError(f"cannot read expect file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ExpectError(f"expect file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ExpectError(f"expect file {path} must hold a JSON object, got {type(data).__name__}")
    return freeze(data)


# ---------------------------------------------------------------------------------------------
# small parsers


def parse_json_object(text: str, what: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CheckError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def parse_daemon_json(text: str) -> dict:
    return parse_json_object(text, "/etc/docker/daemon.json")


def runtime_path(daemon: Mapping, name: str = "nvidia") -> str | None:
    runtimes = daemon.get("runtimes") or {}
    if not isinstance(runtimes, Mapping):
        return None
    entry = runtimes.get(name)
    if not isinstance(entry, Mapping):
        return None
    return entry.get("path")


def default_runtime(daemon: Mapping) -> str:
    """Docker's effective default runtime: "runc" unless daemon.json says otherwise."""
    return daemon.get("default-runtime") or "runc"


def normalize_version(text: str) -> str:
    """'v2.29.1\\n' -> '2.29.1'; 'Docker Compose version v2.29.1' -> '2.29.1'."""
    text = (text or "").strip()
    m = re.search(r"v?(\d+(?:\.\d+)*(?:[-+][0-9A-Za-z.+-]+)?)\s*$", text)
    if m:
        return m.group(1)
    return text[1:] if text[:1] in ("v", "V") else text


def versions_equal(actual: str, expected: str) -> bool:
    return normalize_version(actual) == normalize_version(str(expected))


def parse_umask(output: str) -> int:
    """The last octal number printed (interactive shells may print noise first)."""
    for line in reversed((output or "").strip().splitlines()):
        line = line.strip()
        if re.fullmatch(r"0?[0-7]{1,4}", line):
            return int(line, 8)
    raise CheckError(f"no umask value in output {output!r}")


def umask_text(value: str | int) -> int:
    return value if isinstance(value, int) else int(str(value), 8)


def parse_uptime(text: str) -> float:
    """Seconds since boot from /proc/uptime ('1597.82 3082.59')."""
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        raise CheckError(f"cannot parse /proc/uptime: {text!r}") from None


def parse_clock(text: str) -> tuple[float, float]:
    """Output of `date +%s; cat /proc/uptime` -> (now_epoch, boot_epoch)."""
    lines = [l for l in (text or "").split("\n") if l.strip()]
    if len(lines) < 2:
        raise CheckError(f"cannot parse clock output {text!r}")
    try:
        now = float(lines[0].strip())
    except ValueError:
        raise CheckError(f"cannot parse epoch {lines[0]!r}") from None
    up = parse_uptime(lines[1])
    return now, now - up


def parse_stat_lines(text: str) -> list[tuple[float, str]]:
    """Lines "<epoch[.frac]> <path>" (stat -c '%Y %n' / find -printf '%T@ %p\\n')."""
    out = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        stamp, _, path = line.partition(" ")
        try:
            out.append((float(stamp), path))
        except ValueError:
            raise CheckError(f"cannot parse stat line {line!r}") from None
    return out


def older_than(entries: Iterable[tuple[float, str]], epoch: float, slack: float = 0.0) -> list[str]:
    """Paths whose mtime is before ``epoch - slack`` (i.e. baked into the image)."""
    return [path for mtime, path in entries if mtime < epoch - slack]


# ---------------------------------------------------------------------------------------------
# paths and mounts


def is_under(path: str, prefixes: Sequence[str]) -> str | None:
    """The first prefix that ``path`` is equal to or inside of (component-wise), else None."""
    norm = posixpath.normpath(path or "/")
    for prefix in prefixes or ():
        p = posixpath.normpath(prefix)
        if p == "/":
            return prefix
        if norm == p or norm.startswith(p + "/"):
            return prefix
    return None


# ---------------------------------------------------------------------------------------------
# images and digests

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def is_digest(text: str | None) -> bool:
    return bool(text) and bool(_DIGEST.match(text))


def repo_digests(value) -> list[str]:
    """An image's RepoDigests as `docker image inspect` gives it (a list, or null) -> list."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise CheckError(f"RepoDigests is not a list: {value!r}")
    return [str(x) for x in value]


def digest_in(repo_digests: Iterable[str], digest: str) -> bool:
    """True when one of the "repo@sha256:..." entries carries exactly ``digest``."""
    want = digest.strip().lower()
    for entry in repo_digests:
        _, _, d = entry.rpartition("@")
        if d.strip().lower() == want:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# registry credentials


def docker_auths(text: str, path: str = "config.json") -> list[str]:
    """Registries with an ``auths`` entry in a docker config.json (empty file -> none)."""
    if not (text or "").strip():
        return []
    data = parse_json_object(text, path)
    auths = data.get("auths") or {}
    if isinstance(auths, Mapping):
        return sorted(auths)
    return ["<auths is not an object>"]


# ---------------------------------------------------------------------------------------------
# ssh keys


def key_id(line: str) -> tuple[str, str] | None:
    """(type, base64-blob) of an authorized_keys / .pub line, ignoring options and comment."""
    line = (line or "").strip()
    if not line or line.startswith("#"):
        return None
    # The key type is the first token that looks like one; options may precede it and may
    # contain quoted spaces, so scan tokens rather than split on the first blank.
    tokens = _split_keyline(line)
    for i, tok in enumerate(tokens[:-1]):
        if _looks_like_keytype(tok):
            blob = tokens[i + 1]
            try:
                base64.b64decode(blob, validate=True)
            except (binascii.Error, ValueError):
                continue
            return tok, blob
    return None


def _looks_like_keytype(tok: str) -> bool:
    return tok.startswith(("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-")) and "=" not in tok


def _split_keyline(line: str) -> list[str]:
    tokens, cur, quoted = [], [], False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch in " \t" and not quoted:
            if cur:
                tokens.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
    if cur:
        tokens.append("".join(cur))
    return tokens


def fingerprint(pubkey_line: str) -> str:
    """OpenSSH SHA256 fingerprint ('SHA256:...') of a public key line, as ssh-keygen -l."""
    kid = key_id(pubkey_line)
    if kid is None:
        raise CheckError(f"not an SSH public key: {pubkey_line[:60]!r}")
    raw = base64.b64decode(kid[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def foreign_keys(authorized_keys_text: str, allowed: Iterable[str]) -> list[str]:
    """Lines of an authorized_keys file whose key is not one of ``allowed`` (public key lines)."""
    allowed_ids = {key_id(a) for a in allowed}
    allowed_ids.discard(None)
    bad = []
    for line in (authorized_keys_text or "").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        kid = key_id(stripped)
        if kid is None or kid not in allowed_ids:
            bad.append(_abbrev(stripped))
    return bad


def _abbrev(line: str, n: int = 70) -> str:
    return line if len(line) <= n else line[: n - 3] + "..."


# ---------------------------------------------------------------------------------------------
# GPUs, machine id, release file


def gpu_names(text: str) -> list[str]:
    return [l.strip() for l in (text or "").splitlines() if l.strip()]


def model_in_name(model: str, name: str) -> bool:
    """The family (T4, A100, L4) is a whole word of nvidia-smi's name ("NVIDIA A100-SXM4-40GB"): a
    substring would take L4 for "NVIDIA L40S", A10 for an A100 and P4 for "Tesla P40"."""
    words = [w.lower() for w in re.split(r"[^A-Za-z0-9]+", name or "") if w]
    return model.lower() in words


def gpu_mismatches(names: Sequence[str], model: str, count: int) -> list[str]:
    problems = []
    if count is not None and len(names) != int(count):
        problems.append(f"expected {count} GPU(s), nvidia-smi lists {len(names)}: {list(names)}")
    if model:
        wrong = [n for n in names if not model_in_name(model, n)]
        if wrong:
            problems.append(f"GPU(s) not matching model {model!r}: {wrong}")
    return problems


def driver_problems(text: str, low: int, high: int, also: Iterable[int] = ()) -> list[str]:
    """nvidia-smi's driver_version lines (e.g. 570.172.08) against the workload's supported branch
    range, plus the single branches it also supports (`workload.driver.also`, e.g. datacenter R535)."""
    problems = []
    for line in gpu_names(text):
        match = re.match(r"(\d+)\.", line)
        if not match:
            raise CheckError(f"cannot read a driver version from nvidia-smi: {line!r}")
        branch = int(match.group(1))
        if not (low <= branch <= high or branch in set(also)):
            extra = f" or {', '.join(map(str, sorted(set(also))))}" if also else ""
            problems.append(f"host driver {line} (branch {branch}) is outside the workload's "
                            f"supported range {low}-{high}{extra}")
    return problems


def valid_machine_id(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{32}", (text or "").strip()))


def release_problems(text: str, expect: Mapping) -> list[str]:
    """Differences between /etc/clara-image-release and expect (fingerprint, schema, images)."""
    rel = parse_json_object(text, "/etc/clara-image-release")
    problems = []
    if rel.get("schema") != 1:
        problems.append(f"schema is {rel.get('schema')!r}, expected 1")
    if rel.get("fingerprint") != expect.get("fingerprint"):
        problems.append(
            f"fingerprint is {rel.get('fingerprint')!r}, expected {expect.get('fingerprint')!r}"
        )
    if expect.get("compose_version") and rel.get("compose_version") is not None:
        if not versions_equal(str(rel["compose_version"]), expect["compose_version"]):
            problems.append(
                f"compose_version is {rel['compose_version']!r}, "
                f"expected {expect['compose_version']!r}"
            )
    rel_refs = {i.get("ref") for i in rel.get("images") or () if isinstance(i, Mapping)}
    for img in expect.get("images") or ():
        if img.get("ref") not in rel_refs:
            problems.append(f"image {img.get('ref')!r} not listed in the release file")
    return problems

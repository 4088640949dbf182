"""The NVIDIA Container Toolkit: which version is installed, NVIDIA's apt repository, versions compared.

Installed the way NVIDIA's install guide says (docs.nvidia.com/datacenter/cloud-native/
container-toolkit/latest/install-guide.html, "With apt"): the repository key dearmored into
KEYRING, the repository's list with `signed-by=KEYRING`, `apt-get install nvidia-container-toolkit`.
Also read by validate/test_image.py (one version rule for the bake and the checks).
"""
import base64
import re
import urllib.error
import urllib.request

from .report import StepError

KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
LIST = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
# All four carry the toolkit's version (nvidia-container-toolkit depends on -base "= version");
# a fix may land in any of them, so the lowest installed one is the toolkit's version.
PACKAGES = ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
            "libnvidia-container1")
DPKG_FORMAT = "${Package}\\t${Version}\\t${db:Status-Abbrev}\\n"
_VERSION = re.compile(r"^(?:\d+:)?(\d+)\.(\d+)\.(\d+)(~?)")


def parse_version(text):
    """(major, minor, patch, final) from a Debian or plain version ("1.17.8-1", "1:1.18.0~rc.1-1",
    "v1.17.8"); final is 0 for a `~` pre-release, which sorts before the release. None if unreadable."""
    match = _VERSION.match((text or "").strip().lstrip("v"))
    if not match:
        return None
    return tuple(int(x) for x in match.groups()[:3]) + (0 if match.group(4) else 1,)


def at_least(version, minimum):
    """True when `version` is a readable version not older than `minimum` ("1.17.8")."""
    got, want = parse_version(version), parse_version(minimum)
    if want is None:
        raise ValueError("not a version: {!r}".format(minimum))
    return got is not None and got >= want


def dpkg_versions(output):
    """{package: version} of the installed packages in `dpkg-query -W -f DPKG_FORMAT` output."""
    found = {}
    for line in (output or "").splitlines():
        fields = line.split("\t")
        # Status-Abbrev "ii ": wanted install, installed. "rc " (removed, config kept) is not installed.
        if len(fields) >= 3 and fields[0] in PACKAGES and fields[2].startswith("ii"):
            found[fields[0]] = fields[1].strip()
    return found


def lowest(versions):
    """The lowest of the versions (None for none); an unreadable version counts as lowest."""
    values = list(versions)
    if not values:
        return None
    return min(values, key=lambda v: parse_version(v) or (-1,))


def ctk_version(output):
    """The version from `nvidia-ctk --version` ("NVIDIA Container Toolkit CLI version 1.17.8\\ncommit: ...")."""
    for line in (output or "").splitlines():
        match = re.search(r"version\s+v?(\d+\.\d+\.\d+\S*)", line, re.IGNORECASE)
        if match:
            return match.group(1)
    return None


def dearmor(data, what):
    """Binary OpenPGP from an ASCII-armored block (what `gpg --dearmor` does, RFC 4880 section 6);
    data that is already binary is returned as is. StepError if it is neither."""
    text = data.decode("ascii", errors="replace") if isinstance(data, bytes) else data
    if "-----BEGIN PGP" not in text:
        if isinstance(data, bytes) and data and data[0] & 0x80:     # an OpenPGP packet tag
            return data
        raise StepError("{} is not an OpenPGP key (no armor, no binary packet)".format(what))
    lines = text.split("-----BEGIN PGP", 1)[1].splitlines()[1:]
    body, in_headers = [], True
    for line in lines:
        line = line.strip()
        if line.startswith("-----END PGP"):
            break
        if in_headers:                      # "Key: value" armor headers end at the first blank line
            if not line or ":" not in line:
                in_headers = False
                if not line:
                    continue
            else:
                continue
        if line.startswith("=") and len(line) == 5:     # the CRC-24 line
            crc = line[1:]
            break
        body.append(line)
    else:
        crc = None
    try:
        raw = base64.b64decode("".join(body), validate=True)
    except ValueError:
        raise StepError("{} has a damaged armor (bad base64)".format(what))
    if crc is not None and base64.b64encode(_crc24(raw).to_bytes(3, "big")).decode() != crc:
        raise StepError("{} has a damaged armor (CRC-24 mismatch)".format(what))
    if not raw:
        raise StepError("{} holds no key".format(what))
    return raw


def _crc24(data):
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def signed_list(text, keyring, url):
    """NVIDIA's list with `[signed-by=keyring]` after every `deb https://` (the guide's sed, which
    edits the commented experimental line too). StepError if no line names a repository (an
    error page instead of the list)."""
    out, repos = [], 0
    for line in text.splitlines():
        line = line.replace("deb https://", "deb [signed-by={}] https://".format(keyring))
        if re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?https://", line):
            repos += 1
        out.append(line)
    if not repos:
        raise StepError("{} lists no `deb https://` repository; got: {!r}".format(url, text.strip()[:200]))
    return "\n".join(out) + "\n"


def repository_urls(list_text):
    """The repository URLs named by the `deb` lines of an apt list."""
    urls = []
    for line in list_text.splitlines():
        match = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
        if match:
            urls.append(match.group(1).replace("$(ARCH)", "").rstrip("/"))
    return urls


def fetch(url, what, timeout=60):
    """The bytes at `url` (https, or file for tests and mirrors); StepError naming it on failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise StepError("cannot download {} from {}: {}".format(what, url, reason))

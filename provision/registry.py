"""A small registry client (standard library only): the compressed size of an image, from its manifest.

Why not `docker manifest inspect -v`: Debian 12's docker 20.10 CLI cannot read OCI manifests ("no
such manifest", fixed in docker CLI 23.0: moby#44898, docker/cli#3990) and needed the experimental
CLI on some builds. This client speaks the OCI distribution API directly, with the credentials that
`docker login` left in the client config, and the Bearer-token flow of Docker's "Token
Authentication Specification" that nvcr.io and Docker Hub use.
"""
import base64
import hashlib
import json
import platform
import re
import urllib.error
import urllib.parse
import urllib.request

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
TIMEOUT = 30
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class RegistryError(Exception):
    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class RegistryUnreachable(RegistryError):
    """No answer at all (DNS, refused, timed out): worth another try."""


class TokenRefused(RegistryError):
    """The registry's token service refused the credentials (or their absence)."""


def split_ref(ref):
    """(registry host, repository, tag or digest) the way docker reads a reference."""
    name, digest = (ref.split("@", 1) + [None])[:2]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = first, rest
    else:
        host, path = "registry-1.docker.io", name
        if "/" not in path:
            path = "library/" + path
    tag = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, tag = path.rsplit(":", 1)
    return host, path, digest or tag or "latest"


def credentials(config_text, host):
    """(user, password) for `host` from a docker client config.json text, or None."""
    try:
        auths = (json.loads(config_text or "{}") or {}).get("auths") or {}
    except ValueError:
        return None
    aliases = {host, "index.docker.io", "docker.io"} if host == "registry-1.docker.io" else {host}
    for key, entry in auths.items():
        bare = key.split("://", 1)[-1].split("/", 1)[0]
        if bare in aliases and isinstance(entry, dict) and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return user, password
    return None


def host_arch():
    return _ARCH.get(platform.machine().lower(), platform.machine().lower())


class Client:
    """One registry, signed in on its first 401 (Basic, or a Bearer token from the challenge's realm).
    `base` overrides where its API is (a mirror, or a fake in tests)."""

    def __init__(self, host, creds=None, insecure=False, base=None):
        self.base = base or "{}://{}".format("http" if insecure else "https", host)
        self.creds = creds
        self.auth = None            # the Authorization header once a challenge was answered

    def request(self, method, url, accept):
        """(status, headers, body); an HTTP error is an answer too, a network error raises."""
        for _ in range(2):
            request = urllib.request.Request(url, method=method, headers={"Accept": accept})
            if self.auth:
                request.add_header("Authorization", self.auth)
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                    return answer.status, answer.headers, answer.read()
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and self.auth is None:
                    self.auth = self._answer(exc.headers.get("WWW-Authenticate", ""))
                    continue
                return exc.code, exc.headers, exc.read()
            except (urllib.error.URLError, OSError) as exc:
                raise RegistryUnreachable("{}: {}".format(url, getattr(exc, "reason", exc)))
        return 401, {}, b""

    def get_json(self, url, accept):
        status, headers, body = self.request("GET", url, accept)
        if status != 200:
            raise RegistryError("{} answered HTTP {}: {}".format(url, status, error_text(body) or status))
        try:
            return json.loads(body.decode("utf-8")), headers.get("Content-Type", "").split(";")[0].strip()
        except ValueError as exc:
            raise RegistryError("{}: {}".format(url, exc))

    def digest(self, repo, reference):
        """What `repo:reference` names now: the `Docker-Content-Digest` of a HEAD (OCI distribution
        spec, "Checking if content exists"), else the sha256 of the manifest's bytes. None for 404."""
        url = "{}/v2/{}/manifests/{}".format(self.base, repo, urllib.parse.quote(reference, safe=""))
        status, headers, _ = self.request("HEAD", url, ACCEPT)
        found = headers.get("Docker-Content-Digest", "") if status == 200 else ""
        if re.fullmatch(r"sha256:[0-9a-f]{64}", found):
            return found
        if status in (200, 405):               # the header is optional: hash what GET serves
            status, _, body = self.request("GET", url, ACCEPT)
            if status == 200:
                return "sha256:" + hashlib.sha256(body).hexdigest()
        if status == 404:
            return None
        raise RegistryError("{} answered HTTP {}".format(url, status), status)

    def _answer(self, challenge):
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not self.creds:
                raise RegistryError("{} needs a login".format(self.base))
            return "Basic " + _basic(self.creds)
        if scheme.lower() != "bearer":
            raise RegistryError("{}: unknown auth challenge {!r}".format(self.base, challenge[:80]))
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if "realm" not in fields:
            raise RegistryError("{}: Bearer challenge without a realm".format(self.base))
        query = urllib.parse.urlencode([(k, fields[k]) for k in ("service", "scope") if k in fields])
        request = urllib.request.Request(fields["realm"] + ("?" + query if query else ""))
        if self.creds:
            request.add_header("Authorization", "Basic " + _basic(self.creds))
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                token = json.loads(answer.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            raise TokenRefused("token from {} refused: HTTP {}".format(fields["realm"], exc.code), exc.code)
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryUnreachable("token from {}: {}".format(fields["realm"], getattr(exc, "reason", exc)))
        except ValueError as exc:
            raise RegistryError("token from {}: {}".format(fields["realm"], exc))
        value = token.get("token") or token.get("access_token") if isinstance(token, dict) else None
        if not value:
            raise RegistryError("token from {} has no token".format(fields["realm"]))
        return "Bearer " + value


def compressed_size(ref, creds=None, insecure=False, arch=None):
    """Sum of the layer (and config) sizes in the image manifest of `ref` for linux/`arch`: the
    bytes a pull downloads. An index is resolved to the platform's manifest first."""
    host, repo, reference = split_ref(ref)
    client = Client(host, creds, insecure)
    url = "{}/v2/{}/manifests/{}".format(client.base, repo, reference)
    doc, kind = client.get_json(url, ACCEPT)
    kind = doc.get("mediaType") or kind
    if kind in (OCI_INDEX, DOCKER_LIST) or "manifests" in doc:
        digest = pick_platform(doc, arch or host_arch(), ref)
        doc, _ = client.get_json("{}/v2/{}/manifests/{}".format(client.base, repo, digest),
                                 ", ".join((OCI_MANIFEST, DOCKER_MANIFEST)))
    return layers_size(doc, ref)


def pick_platform(index, arch, ref):
    for entry in index.get("manifests") or ():
        plat = entry.get("platform") or {}
        if plat.get("os") == "linux" and plat.get("architecture") == arch and entry.get("digest"):
            return entry["digest"]
    raise RegistryError("{}: the index has no linux/{} manifest".format(ref, arch))


def layers_size(manifest, ref):
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        raise RegistryError("{}: the manifest lists no layers (schema {})".format(ref, manifest.get("schemaVersion")))
    try:
        total = sum(int(layer["size"]) for layer in layers)
        return total + int((manifest.get("config") or {}).get("size") or 0)
    except (KeyError, TypeError, ValueError):
        raise RegistryError("{}: a layer in the manifest has no size".format(ref))


def _basic(creds):
    return base64.b64encode("{}:{}".format(*creds).encode("utf-8")).decode("ascii")


def error_text(body):
    """The registry's `{"errors": [{"code", "message"}]}` (OCI distribution spec, "Error Codes")."""
    try:
        errors = json.loads(body.decode("utf-8")).get("errors") or []
        return "; ".join("{} {}".format(e.get("code", ""), e.get("message", "")).strip() for e in errors)[:200]
    except (ValueError, AttributeError):
        return ""

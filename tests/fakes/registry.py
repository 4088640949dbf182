"""A fake container registry on 127.0.0.1 that signs in the way nvcr.io and Docker Hub do.

Rules it enforces, with their sources:
- Manifests are read at `/v2/<name>/manifests/<reference>` (a tag, or a digest: what `put` stores is
  served by its digest too) with GET or HEAD; a HEAD answers the headers of
  the GET without a body, including `Docker-Content-Digest` (OCI distribution spec, "Pulling
  manifests" and "Checking if content exists in the registry").
- The manifest's media type must be one the client lists in `Accept`; otherwise the registry
  answers 404 MANIFEST_UNKNOWN for that representation (OCI distribution spec: "the registry MUST
  ... return a 404" when it cannot serve an accepted type; Docker Hub does the same for an index
  the client does not accept).
- Without a token it answers 401 with `WWW-Authenticate: Bearer realm="...",service="...",
  scope="repository:<name>:pull"`; the token comes from GET on the realm with those parameters, with
  HTTP Basic credentials when the image is private (Docker "Token Authentication Specification").
  nvcr.io's username for an API key is `$oauthtoken` (NGC documentation, "docker login nvcr.io").
- Errors are `{"errors": [{"code", "message", "detail"}]}` (OCI distribution spec, "Error Codes").
- An image manifest names its config blob by digest (OCI image spec, manifest.md `config`); the blob is
  read at `/v2/<name>/blobs/<digest>` with GET or HEAD, behind the same token (OCI distribution spec,
  "Pulling blobs"); its JSON holds `architecture`, `os` and `config` {Entrypoint, Cmd, Env, Labels,
  WorkingDir, User, ExposedPorts} (OCI image spec, config.md). A registry may answer a blob GET with a
  redirect to storage elsewhere ("307 Temporary Redirect", ibid.); `redirect_blobs` does, to a host
  name that refuses an Authorization header, as S3's presigned URLs do ("Only one auth mechanism
  allowed").
- `push` without a config serves the config the repository's image record (manifests/images/*.json)
  describes: the image as the pipeline believes it is; tests give another config to make it differ.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
RECORDS = Path(__file__).resolve().parents[2] / "manifests" / "images"
CONFIG_FIELDS = ("Entrypoint", "Cmd", "Env", "ExposedPorts", "User", "WorkingDir", "Labels")


def config_from_record(path: Path) -> dict:
    """The image config JSON a registry would serve if the record (manifests/images/*.json) were true."""
    record = json.loads(Path(path).read_text())["config"]
    platform = (record.get("Platform") or {}).get("value") or {"os": "linux", "architecture": "amd64"}
    return {"architecture": platform["architecture"], "os": platform["os"],
            "config": {k: record[k]["value"] for k in CONFIG_FIELDS if k in record}}


def recorded_config(repository: str, tag: str) -> dict | None:
    """The config of the record whose `image` is `<registry>/<repository>:<tag>` (Docker Hub's
    `library/` and bare names too), or None."""
    for path in sorted(RECORDS.glob("*.json")):
        image = json.loads(path.read_text()).get("image", "")
        names = {image, "docker.io/" + image, "docker.io/library/" + image}
        if any(n.endswith("/" + f"{repository}:{tag}") for n in names):
            return config_from_record(path)
    return None


def document_body(doc: dict) -> bytes:
    """The bytes the fake serves for a JSON manifest or index document."""
    return json.dumps(doc, sort_keys=True).encode()


def digest_of(doc: dict) -> str:
    """The digest a registry gives `doc` (the sha256 of the bytes it serves)."""
    return "sha256:" + hashlib.sha256(document_body(doc)).hexdigest()


def config_body(config: dict | None) -> bytes:
    return document_body(config or {"architecture": "amd64", "os": "linux", "config": {}})


def manifest_doc(seed: str, config: dict | None = None, media_type: str = MANIFEST_V2) -> dict:
    body = config_body(config)
    return {"schemaVersion": 2, "mediaType": media_type,
            "config": {"mediaType": CONFIG_V1, "size": len(body), "digest": "sha256:" + hashlib.sha256(body).hexdigest()},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": 15_000_000_000, "digest": "sha256:" + hashlib.sha256(seed.encode()).hexdigest()}]}


def manifest_body(seed: str, media_type: str = MANIFEST_V2, config: dict | None = None) -> bytes:
    """What `push` serves for a tag: an image manifest, or an index naming one linux manifest."""
    if media_type == OCI_INDEX:
        child = manifest_doc(seed, config, OCI_MANIFEST)
        arch = (config or {}).get("architecture", "amd64")
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "size": len(document_body(child)), "digest": digest_of(child),
             "platform": {"architecture": arch, "os": "linux"}}]}
        return document_body(doc)
    return document_body(manifest_doc(seed, config, media_type))


class FakeRegistry:
    """`tags[(repository, reference)] = (media_type, body)`, the reference a tag or a digest (`push`
    makes up a manifest, `put` serves a given document); `private` repositories need `credentials`."""

    def __init__(self, credentials: tuple[str, str] | None = None, digest_header: bool = True):
        self.tags: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}              # (repository, digest) -> content
        self.redirect_blobs = False
        self.private: set[str] = set()
        self.credentials = credentials
        self.digest_header = digest_header
        self.requests: list[tuple[str, str, str | None]] = []    # (method, path, Authorization)
        self.fail_next: list[int] = []
        self._tokens: dict[str, str] = {}                         # token -> repository
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)                # a quick shutdown at the test's end

    @property
    def host(self) -> str:
        """host:port, as an image reference names the registry."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def push(self, repository: str, tag: str, seed: str, media_type: str = MANIFEST_V2,
             config: dict | None = None) -> str:
        """Serve an image under `tag` (a manifest, or an index naming one), with its config blob:
        `config`, else the one its record describes (`recorded_config`), else a bare linux/amd64 one."""
        config = config if config is not None else recorded_config(repository, tag)
        body = manifest_body(seed, media_type, config)
        self.tags[(repository, tag)] = (media_type, body)
        self.tags[(repository, "sha256:" + hashlib.sha256(body).hexdigest())] = (media_type, body)
        blob = config_body(config)
        self.blobs[(repository, "sha256:" + hashlib.sha256(blob).hexdigest())] = blob
        if media_type == OCI_INDEX:
            child = manifest_doc(seed, config, OCI_MANIFEST)
            self.tags[(repository, digest_of(child))] = (OCI_MANIFEST, document_body(child))
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def put(self, repository: str, media_type: str, doc: dict, *tags: str) -> str:
        """Serve the document `doc` (an image manifest or an index) by its digest, as a registry
        does, and under each of `tags`; returns the digest."""
        digest = digest_of(doc)
        for reference in (digest, *tags):
            self.tags[(repository, reference)] = (media_type, document_body(doc))
        return digest

    def __enter__(self) -> "FakeRegistry":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._serve(body=True)

            def do_HEAD(self):
                self._serve(body=False)

            def _serve(self, body: bool):
                registry.requests.append((self.command, self.path, self.headers.get("Authorization")))
                if registry.fail_next:
                    return self._error(registry.fail_next.pop(0), "UNAVAILABLE", "injected failure", body)
                path = urlsplit(self.path).path
                if path == "/token":
                    return self._token()
                if path.startswith("/storage/"):
                    return self._storage(body)
                if path.startswith("/v2/") and "/blobs/" in path:
                    return self._blob(path, body)
                if not (path.startswith("/v2/") and "/manifests/" in path):
                    return self._error(404, "NAME_UNKNOWN", "no such endpoint", body)
                repository, _, tag = path[len("/v2/"):].partition("/manifests/")
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if registry._tokens.get(token) != repository:
                    scope = f"repository:{repository}:pull"
                    return self._error(401, "UNAUTHORIZED", "authentication required", body, {
                        "WWW-Authenticate": f'Bearer realm="{registry.url}/token",service="fake-registry",'
                                            f'scope="{scope}"'})
                found = registry.tags.get((repository, tag))
                if found is None:
                    return self._error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {tag}", body)
                media_type, content = found
                accepted = [a.strip().split(";")[0] for a in (self.headers.get("Accept") or "").split(",")]
                if media_type not in accepted:
                    return self._error(404, "MANIFEST_UNKNOWN", f"no {accepted} representation", body)
                headers = {"Content-Type": media_type, "Content-Length": str(len(content))}
                if registry.digest_header:
                    headers["Docker-Content-Digest"] = "sha256:" + hashlib.sha256(content).hexdigest()
                self._answer(200, headers, content if body else b"")

            def _authorized(self, repository, body) -> bool:
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if registry._tokens.get(token) == repository:
                    return True
                self._error(401, "UNAUTHORIZED", "authentication required", body, {
                    "WWW-Authenticate": f'Bearer realm="{registry.url}/token",service="fake-registry",'
                                        f'scope="repository:{repository}:pull"'})
                return False

            def _blob(self, path, body):
                repository, _, digest = path[len("/v2/"):].partition("/blobs/")
                if not self._authorized(repository, body):
                    return
                content = registry.blobs.get((repository, digest))
                if content is None:
                    return self._error(404, "BLOB_UNKNOWN", f"blob unknown: {digest}", body)
                if registry.redirect_blobs:
                    # Storage under another host name (localhost, not 127.0.0.1), as registries' CDNs.
                    port = registry._server.server_address[1]
                    return self._answer(307, {"Location": f"http://localhost:{port}/storage/{repository}/{digest}"}, b"")
                self._answer(200, {"Content-Type": "application/octet-stream", "Content-Length": str(len(content)),
                                   "Docker-Content-Digest": digest}, content if body else b"")

            def _storage(self, body):
                if self.headers.get("Authorization"):
                    return self._error(400, "InvalidArgument", "Only one auth mechanism allowed", body)
                repository, _, digest = urlsplit(self.path).path[len("/storage/"):].rpartition("/")
                content = registry.blobs.get((repository, digest))
                if content is None:
                    return self._error(404, "NoSuchKey", "no such object", body)
                self._answer(200, {"Content-Type": "application/octet-stream", "Content-Length": str(len(content))},
                             content if body else b"")

            def _token(self):
                query = parse_qs(urlsplit(self.path).query)
                scope = (query.get("scope") or [""])[0]
                if query.get("service") != ["fake-registry"] or not scope.endswith(":pull"):
                    return self._error(400, "DENIED", "service and a pull scope are required", True)
                repository = scope.split(":")[1]
                if repository in registry.private:
                    given = self.headers.get("Authorization") or ""
                    expected = "Basic " + base64.b64encode(":".join(registry.credentials or ("", "")).encode()).decode()
                    if not registry.credentials or given != expected:
                        return self._error(401, "UNAUTHORIZED", "bad credentials", True)
                token = secrets.token_hex(8)
                registry._tokens[token] = repository
                self._answer(200, {"Content-Type": "application/json"}, json.dumps({"token": token}).encode())

            def _error(self, status, code, message, body, headers=None):
                content = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()
                self._answer(status, {"Content-Type": "application/json", **(headers or {})},
                             content if body else b"")

            def _answer(self, status, headers, content):
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if content:
                    self.wfile.write(content)

        return Handler

"""The pull checks free space where the layers land against the image's size from its registry
manifest, and never retries a full disk. The fake registry on 127.0.0.1 (tests/fakes/registry.py)
stands in for nvcr.io; `docker` and `containerd` are answered by a fake (as in test_running_system.py)."""
import base64
import json
import subprocess

import pytest

from provision import config as config_module
from provision import fsutil, registry, runner, storage, system
from provision.config import ConfigError
from provision.report import StepError
from provision.steps import pull
from tests.fakes.registry import FakeRegistry, digest_of, document_body

USER, PASSWORD = "$oauthtoken", "nvapi-secret"
REPOSITORY = "nvidia/clara-train-sdk"
AMD64 = [4 * 10 ** 9, 10 ** 8]            # layer sizes of the linux/amd64 image: 4.1 GB compressed
ARM64 = [7 * 10 ** 9]
CONFIG_SIZE = 7000


def _image(sizes):
    return {"schemaVersion": 2, "mediaType": registry.OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": CONFIG_SIZE,
                       "digest": "sha256:" + "c" * 64},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": s,
                        "digest": "sha256:" + "%064x" % i} for i, s in enumerate(sizes)]}


# The image as nvcr.io serves it: an index of per-platform manifests, each listing its layers' compressed
# sizes (OCI image spec, image-index.md, manifest.md); tag "single" is a Docker v2 manifest without an index.
PLATFORMS = {"arm64": _image(ARM64), "amd64": _image(AMD64)}
INDEX = {"schemaVersion": 2, "mediaType": registry.OCI_INDEX, "manifests": [
    {"mediaType": registry.OCI_MANIFEST, "digest": digest_of(doc), "size": len(document_body(doc)),
     "platform": {"os": "linux", "architecture": arch}} for arch, doc in PLATFORMS.items()]}
DIGEST = digest_of(INDEX)


class RunningRoot(fsutil.Root):
    """A temporary root that claims to be the running system, so the command paths run."""

    @property
    def running(self):
        return True


class FakeDocker:
    """`docker info` storage details, `docker pull`, `docker image inspect`, `containerd config dump`."""

    def __init__(self, containerd_store=False, pull_error=None, unpacked=9 * 10 ** 9):
        self.calls = []
        self.containerd_store = containerd_store
        self.pull_error = pull_error
        self.unpacked = unpacked
        self.images = {}

    def __call__(self, cmd, input_text=None, check=True, timeout=600, env=None):
        self.calls.append(list(cmd))
        rc, out, err = self.answer(list(cmd))
        if check and rc != 0:
            raise StepError("`{}` failed (exit {}): {}".format(" ".join(cmd[:4]), rc, err))
        return subprocess.CompletedProcess(cmd, rc, out, err)

    def answer(self, cmd):
        if cmd[:2] == ["docker", "info"]:
            status = [["driver-type", "io.containerd.snapshotter.v1"]] if self.containerd_store \
                else [["Backing Filesystem", "extfs"]]
            driver = "overlayfs" if self.containerd_store else "overlay2"
            return 0, '"/var/lib/docker"\t"{}"\t{}\n'.format(driver, json.dumps(status)), ""
        if cmd[:3] == ["containerd", "config", "dump"]:
            return 0, 'version = 3\nroot = "/data/containerd"\n', ""
        if cmd[:2] == ["docker", "pull"]:
            if self.pull_error:
                return 1, "", self.pull_error
            self.images[cmd[-1]] = {"Id": "sha256:image", "Size": self.unpacked,
                                    "RepoDigests": ["{}@{}".format(pull.repository(cmd[-1]), DIGEST)]}
            return 0, cmd[-1] + "\n", ""
        if cmd[:3] == ["docker", "image", "inspect"]:
            info = self.images.get(cmd[-1])
            return (0, json.dumps(info), "") if info else (1, "", "No such image")
        if cmd[:2] == ["docker", "tag"]:
            self.images[cmd[3]] = self.images[cmd[2]]
            return 0, "", ""
        return 127, "", "unexpected command"


@pytest.fixture
def reg():
    """tests/fakes/registry.py with the image above, private: a token needs the NGC credentials."""
    with FakeRegistry(credentials=(USER, PASSWORD)) as r:
        r.private.add(REPOSITORY)
        for doc in PLATFORMS.values():
            r.put(REPOSITORY, registry.OCI_MANIFEST, doc)
        r.put(REPOSITORY, registry.OCI_INDEX, INDEX, "v4.1")
        r.put(REPOSITORY, registry.DOCKER_MANIFEST, dict(_image([5 * 10 ** 8]), mediaType=registry.DOCKER_MANIFEST),
              "single")
        yield r


@pytest.fixture
def free(monkeypatch):
    """storage.free_bytes, answering `free.bytes` and recording the paths asked about."""
    class Free:
        bytes = 10 ** 12
        asked = []
    monkeypatch.setattr(storage, "free_bytes", lambda path: Free.asked.append(path) or Free.bytes)
    return Free


def setup(monkeypatch, make_config, guest, reg, docker, ref_tag="v4.1", digest=None, login=True):
    monkeypatch.setattr(system, "run", docker)
    monkeypatch.setattr(pull, "_sleep", lambda seconds: docker.calls.append(["sleep", seconds]))
    if login:
        path = guest / "run/clara-docker/config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        auth = base64.b64encode("{}:{}".format(USER, PASSWORD).encode()).decode()
        path.write_text(json.dumps({"auths": {"http://" + reg.host: {"auth": auth}}}))
    ref = "{}/nvidia/clara-train-sdk:{}".format(reg.host, ref_tag)
    cfg = make_config({"images": [{"ref": ref, "digest": digest}], "docker.insecure_registries": [reg.host],
                       "launcher.image": ref, "launcher.command": ["jupyter", "lab"], "pull.retries": 3})
    return runner.Context(config_module.load(str(cfg)), RunningRoot(str(guest)), environ={}), ref


def pulls(docker):
    return [c for c in docker.calls if c[:2] == ["docker", "pull"]]


# --- the registry client -----------------------------------------------------------------------

def test_size_from_an_index_with_token_auth(reg):
    ref = reg.host + "/nvidia/clara-train-sdk:v4.1"
    assert registry.compressed_size(ref, (USER, PASSWORD), insecure=True, arch="amd64") == sum(AMD64) + CONFIG_SIZE
    assert registry.compressed_size(ref, (USER, PASSWORD), insecure=True, arch="arm64") == sum(ARM64) + CONFIG_SIZE
    token_asks = [path for _, path, _ in reg.requests if path.startswith("/token")]
    assert token_asks and "service=fake-registry" in token_asks[0]


def test_size_by_digest_and_of_a_single_manifest(reg):
    assert registry.compressed_size(reg.host + "/nvidia/clara-train-sdk@" + DIGEST, (USER, PASSWORD), True,
                                    "amd64") == sum(AMD64) + CONFIG_SIZE
    assert registry.compressed_size(reg.host + "/nvidia/clara-train-sdk:single", (USER, PASSWORD), True) == \
        5 * 10 ** 8 + CONFIG_SIZE


@pytest.mark.parametrize("ref, creds, message", [
    ("/nvidia/clara-train-sdk:v4.1", ("x", "wrong"), "refused: HTTP 401"),
    ("/nvidia/clara-train-sdk:v9", (USER, PASSWORD), "HTTP 404: MANIFEST_UNKNOWN manifest unknown"),
    ("/nvidia/clara-train-sdk:v4.1", None, "refused: HTTP 401"),
])
def test_registry_errors_are_clear(reg, ref, creds, message):
    with pytest.raises(registry.RegistryError, match=message):
        registry.compressed_size(reg.host + ref, creds, insecure=True, arch="amd64")


def test_index_without_the_platform(reg):
    with pytest.raises(registry.RegistryError, match="the index has no linux/s390x manifest"):
        registry.compressed_size(reg.host + "/nvidia/clara-train-sdk:v4.1", (USER, PASSWORD), True, "s390x")


@pytest.mark.parametrize("ref, parts", [
    ("nvcr.io/nvidia/clara-train-sdk:v4.1", ("nvcr.io", "nvidia/clara-train-sdk", "v4.1")),
    ("10.0.2.2:5000/clara@sha256:" + "e" * 64, ("10.0.2.2:5000", "clara", "sha256:" + "e" * 64)),
    ("ubuntu", ("registry-1.docker.io", "library/ubuntu", "latest")),
    ("localhost/a/b:1", ("localhost", "a/b", "1")),
])
def test_split_ref(ref, parts):
    assert registry.split_ref(ref) == parts


def test_credentials_from_the_docker_config():
    auth = base64.b64encode(b"$oauthtoken:key:with:colons").decode()
    text = json.dumps({"auths": {"https://nvcr.io": {"auth": auth}, "https://index.docker.io/v1/": {"auth": auth}}})
    assert registry.credentials(text, "nvcr.io") == ("$oauthtoken", "key:with:colons")
    assert registry.credentials(text, "registry-1.docker.io") == ("$oauthtoken", "key:with:colons")
    assert registry.credentials(text, "other.io") is None
    assert registry.credentials("not json", "nvcr.io") is None


# --- the pull step ---------------------------------------------------------------------------

def test_too_little_space_fails_before_pulling(monkeypatch, make_config, guest, reg, free, capsys):
    docker = FakeDocker()
    ctx, ref = setup(monkeypatch, make_config, guest, reg, docker)
    free.bytes = 5 * 10 ** 9
    results, failed = runner.run(ctx, {"pull"})
    assert failed == "pull" and pulls(docker) == []
    needed = int((sum(AMD64) + CONFIG_SIZE) * 2.5) + 1024 ** 3
    err = capsys.readouterr().err
    assert "{}: not enough space at /var/lib/docker (overlay2 storage driver under /var/lib/docker): " \
           "5000000000 bytes free (5.0 GB), about {} bytes needed (compressed 4.1 GB x 2.5 + 1.1 GB margin)" \
           .format(ref, needed) in err
    assert free.asked == [str(guest / "var/lib/docker")]


def test_containerd_store_is_checked_at_containerds_root(monkeypatch, make_config, guest, reg, free, capsys):
    docker = FakeDocker(containerd_store=True)
    ctx, ref = setup(monkeypatch, make_config, guest, reg, docker)
    # Enough for the classic store's 2.5x, not for the containerd store's 3.5x (it keeps the compressed
    # layers as well: https://docs.docker.com/engine/storage/containerd/#disk-space-usage).
    free.bytes = 13 * 10 ** 9
    assert runner.run(ctx, {"pull"})[1] == "pull"
    err = capsys.readouterr().err
    assert "not enough space at /data/containerd (containerd image store (overlayfs snapshotter) under " \
           "/data/containerd)" in err
    assert "x 3.5 (the containerd image store keeps the compressed layers too)" in err
    assert free.asked == [str(guest / "data/containerd")]


def test_enough_space_pulls_and_reports_the_measured_ratio(monkeypatch, make_config, guest, reg, free):
    docker = FakeDocker(unpacked=9225 * 10 ** 6)
    ctx, ref = setup(monkeypatch, make_config, guest, reg, docker)
    free.bytes = 12 * 10 ** 9
    results, failed = runner.run(ctx, {"pull"})
    assert failed is None
    assert results[0].detail == "pulled {}, compressed 4.1 GB, unpacked 9.2 GB (x2.25)".format(ref)
    # the registry was asked with the login's credentials, over HTTP since the registry is insecure
    assert any((auth or "").startswith("Basic ") for _, p, auth in reg.requests if p.startswith("/token"))


def test_containerd_store_reports_what_the_pull_used_on_the_disk(monkeypatch, make_config, guest, reg):
    """On the containerd store `docker image inspect`'s Size is the packed size (moby
    daemon/containerd image.go, size(): "the total size of the image's packed resources"): the
    unpacked ratio from it would read x1.00, as a real Debian 13 guest showed. The pull reports
    what it used on the disk instead (compressed + unpacked) beside the estimate."""
    docker = FakeDocker(containerd_store=True, unpacked=4100 * 10 ** 6)     # Size = packed
    ctx, ref = setup(monkeypatch, make_config, guest, reg, docker)
    free = iter([40 * 10 ** 9, 26 * 10 ** 9])                                # before and after the pull
    monkeypatch.setattr(storage, "free_bytes", lambda path: next(free))
    results, failed = runner.run(ctx, {"pull"})
    assert failed is None
    assert results[0].detail == ("pulled {}, compressed 4.1 GB, 14.0 GB used at /data/containerd (unpacked about "
                                 "x2.41; estimated 14.4 GB)".format(ref))


def test_a_full_disk_is_not_retried(monkeypatch, make_config, guest, reg, free, capsys):
    docker = FakeDocker(pull_error="failed to register layer: write /var/lib/docker/overlay2/x/diff/lib/a.so: "
                                   "no space left on device")
    ctx, ref = setup(monkeypatch, make_config, guest, reg, docker)
    free.bytes = 20 * 10 ** 9        # the check passed, yet the disk filled (another writer, a bad estimate)
    assert runner.run(ctx, {"pull"})[1] == "pull"
    assert len(pulls(docker)) == 1 and not [c for c in docker.calls if c[0] == "sleep"]
    err = capsys.readouterr().err
    assert "docker pull {}: the disk is full at /var/lib/docker (20000000000 bytes free, about {} bytes needed " \
           "(compressed 4.1 GB x 2.5 + 1.1 GB margin)); not retried: ".format(
               ref, int((sum(AMD64) + CONFIG_SIZE) * 2.5) + 1024 ** 3) in err
    assert "no space left on device" in err


def test_other_pull_errors_are_still_retried(monkeypatch, make_config, guest, reg, free):
    docker = FakeDocker(pull_error="net/http: TLS handshake timeout")
    ctx, _ = setup(monkeypatch, make_config, guest, reg, docker)
    assert runner.run(ctx, {"pull"})[1] == "pull"
    assert len(pulls(docker)) == 3


def test_unknown_size_skips_the_check_and_pulls(monkeypatch, make_config, guest, reg, free, capsys):
    docker = FakeDocker()
    ctx, ref = setup(monkeypatch, make_config, guest, reg, docker, login=False)
    free.bytes = 10 ** 9
    results, failed = runner.run(ctx, {"pull"})
    assert failed is None and len(pulls(docker)) == 1
    out = capsys.readouterr().out
    assert "size of {} unknown, free-space check skipped: token from http://{}/token refused: HTTP 401".format(
        ref, reg.host) in out


def test_pinned_digest_is_sized_by_digest(monkeypatch, make_config, guest, reg, free):
    docker = FakeDocker()
    ctx, ref = setup(monkeypatch, make_config, guest, reg, docker, digest=DIGEST)
    free.bytes = 5 * 10 ** 9
    assert runner.run(ctx, {"pull"})[1] == "pull"
    assert any(p.endswith("/manifests/" + DIGEST) for _, p, _ in reg.requests)


# --- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, ok", [(2.5, True), (1, True), (0.5, False), ("2", False), (True, False)])
def test_unpack_factor_is_checked(make_config, value, ok):
    path = str(make_config({"pull.unpack_factor": value, "launcher.command": ["jupyter", "lab"]}))
    if ok:
        assert config_module.load(path).pull.unpack_factor == float(value)
    else:
        with pytest.raises(ConfigError, match=r"pull.unpack_factor: expected (a|an integer or a) number"):
            config_module.load(path)


def test_unpack_factor_defaults_to_2_5(make_config):
    assert config_module.load(str(make_config({"launcher.command": ["x"]}))).pull.unpack_factor == 2.5

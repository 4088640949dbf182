"""Who signs an image's provenance: an ed25519 key on this machine, or Sigstore's keyless signing in CI.

Through securesystemslib's signer API (securesystemslib 1.x, `securesystemslib.signer`):
- a key: `CryptoSigner` over a PEM (PKCS#8) ed25519 private key, the manifest's `security.signing.key`,
  or else the per-user key `<config>/clara-bake/signing/ed25519.pem` (`$XDG_CONFIG_HOME`, default
  ~/.config), created on first use with mode 0600 in a 0700 folder and its path said;
- keyless: with `CLARA_SIGNER=sigstore` (the scheduled workflow sets it, with `permissions: id-token:
  write`), `SigstoreSigner` signs with the workflow's ambient GitHub Actions OIDC identity
  (`SigstoreSigner.import_("https://github.com/<GITHUB_WORKFLOW_REF>", the Actions issuer)`, then
  `from_priv_key_uri`). That
  path needs the `sigstore` package and Fulcio/Rekor on the network: it cannot run offline, so the tests
  check only that it is chosen and what it says when it cannot be (docs/FIDELITY.md).

The public key goes beside each envelope (`provenance.key.json`, securesystemslib's key dict with its
keyid), so `invoke verify` can check the signature; `--key` pins the key a site trusts instead.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from core import settings
from core.errors import PipelineError

KEY_NAME = "ed25519.pem"
SIGSTORE = "sigstore"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


class SigningError(PipelineError):
    """No signer can be had: the key is unreadable or not ed25519, or keyless signing is not possible here."""


@dataclass(frozen=True)
class Chosen:
    """A signer and how it was chosen, for the bake's log and the report."""
    signer: object            # securesystemslib.signer.Signer
    public_key: object        # securesystemslib.signer.Key
    how: str                  # "key /path" | "new key /path" | "sigstore (GitHub Actions OIDC: <identity>)"


def user_key_path(environ: Mapping[str, str] | None = None) -> Path:
    """The per-user signing key: $XDG_CONFIG_HOME/clara-bake/signing/ed25519.pem (default ~/.config)."""
    env = os.environ if environ is None else environ
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "clara-bake" / "signing" / KEY_NAME


def _crypto():
    try:
        from securesystemslib.signer import CryptoSigner, SSlibKey
    except ImportError:
        raise SigningError("signing the provenance needs securesystemslib with its crypto extra: "
                           "pip install -e . (it depends on securesystemslib[crypto])") from None
    return CryptoSigner, SSlibKey


def _create_key(path: Path) -> None:
    """A new ed25519 key, written 0600 (created so, never widened) in a 0700 folder."""
    CryptoSigner, _ = _crypto()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    pem = CryptoSigner.generate_ed25519().private_bytes
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def key_signer(path: Path, *, what: str) -> tuple[object, object]:
    """(CryptoSigner, its public SSlibKey) of a PEM ed25519 private key file; SigningError naming `what`."""
    CryptoSigner, SSlibKey = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        private = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{what} {path} is not an unencrypted PEM private key ({exc}); expected an ed25519 "
                           "key in PKCS#8 PEM, e.g. `openssl genpkey -algorithm ed25519`") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise SigningError(f"{what} {path} holds a {type(private).__name__}; expected an ed25519 key")
    public = SSlibKey.from_crypto(private.public_key(), scheme="ed25519")
    return CryptoSigner(private, public), public


def _sigstore(environ: Mapping[str, str]) -> Chosen:
    """Keyless: the workflow's ambient OIDC token (GitHub Actions sets ACTIONS_ID_TOKEN_REQUEST_URL and
    _TOKEN only with `permissions: id-token: write`)."""
    try:
        from securesystemslib.signer import SigstoreSigner
        import sigstore  # noqa: F401 - SigstoreSigner imports it only when signing
    except ImportError:
        raise SigningError("CLARA_SIGNER=sigstore needs the sigstore package: pip install "
                           "'securesystemslib[sigstore]'") from None
    workflow_ref = environ.get("GITHUB_WORKFLOW_REF", "")       # owner/repo/.github/workflows/x.yml@refs/heads/main
    repo = environ.get("GITHUB_REPOSITORY", "")
    if not (workflow_ref and repo and environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")):
        raise SigningError("CLARA_SIGNER=sigstore signs with GitHub Actions' OIDC identity, and this is not a "
                           "GitHub Actions job with `permissions: id-token: write` (GITHUB_WORKFLOW_REF, "
                           "GITHUB_REPOSITORY or ACTIONS_ID_TOKEN_REQUEST_URL is unset); unset CLARA_SIGNER to "
                           "sign with a key")
    # The certificate's identity for a workflow, as newer securesystemslib's import_github_actions spells
    # it; import_ exists since 1.0, the floor.
    uri, public = SigstoreSigner.import_(f"https://github.com/{workflow_ref}", GITHUB_ISSUER, ambient=True)
    try:
        signer = SigstoreSigner.from_priv_key_uri(uri, public)
    except Exception as exc:  # noqa: BLE001 - sigstore's own errors (network, token) as one line
        raise SigningError(f"Sigstore keyless signing could not start: {type(exc).__name__}: {exc}") from None
    return Chosen(signer, public, f"sigstore (GitHub Actions OIDC: {public.keyval['identity']}, "
                                  f"issuer {GITHUB_ISSUER})")


def choose(key_setting: str, *, manifest_file: str = "the manifest",
           environ: Mapping[str, str] | None = None, log=print) -> Chosen:
    """The signer for this bake: Sigstore when CLARA_SIGNER=sigstore; else `security.signing.key`;
    else the per-user key, created on first use (its path is logged)."""
    env = os.environ if environ is None else environ
    mode = (settings.value("CLARA_SIGNER", env) or "key").lower()
    if mode == SIGSTORE:
        return _sigstore(env)
    if mode != "key":
        raise SigningError(f"CLARA_SIGNER={mode!r}: expected `sigstore` (keyless, in GitHub Actions) or `key` "
                           "(the default)")
    if key_setting:
        path = Path(key_setting).expanduser()
        signer, public = key_signer(path, what=f"{manifest_file}: security.signing.key:")
        return Chosen(signer, public, f"key {path}")
    path = user_key_path(env)
    how = f"key {path}"
    if not path.exists():
        _create_key(path)
        log(f"created a signing key for the provenance at {path} (mode 0600); keep it, or set security.signing.key")
        how = f"new key {path}"
    signer, public = key_signer(path, what="the per-user signing key")
    return Chosen(signer, public, how)


# --- public keys ---------------------------------------------------------------------------------

def allow_sigstore_keys() -> None:
    """securesystemslib reads Sigstore keys only after an opt-in ("Keys with currently unstable metadata
    formats, not supported by default", securesystemslib/signer/__init__.py)."""
    from securesystemslib.signer import KEY_FOR_TYPE_AND_SCHEME, SigstoreKey
    KEY_FOR_TYPE_AND_SCHEME[(SigstoreKey.DEFAULT_KEY_TYPE, SigstoreKey.DEFAULT_SCHEME)] = SigstoreKey


def public_key_json(key) -> str:
    return json.dumps({"keyid": key.keyid, **key.to_dict()}, indent=2, sort_keys=True) + "\n"


def load_public_key(path: Path):
    """A public key as `public_key_json` wrote it (or a PEM ed25519 public key); SigningError otherwise."""
    from securesystemslib.signer import Key, SSlibKey
    try:
        text = path.read_text()
    except OSError as exc:
        raise SigningError(f"public key {path} cannot be read: {exc.strerror or exc}") from None
    if text.lstrip().startswith("-----BEGIN PUBLIC KEY-----"):
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
        try:
            return SSlibKey.from_crypto(load_pem_public_key(text.encode()), scheme="ed25519")
        except (ValueError, TypeError) as exc:
            raise SigningError(f"public key {path} is not a PEM ed25519 public key: {exc}") from None
    try:
        data = json.loads(text)
        keyid = data.pop("keyid")
        if SIGSTORE in str(data.get("keytype", "")):
            allow_sigstore_keys()
        return Key.from_dict(keyid, data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SigningError(f"public key {path} is not a key file `invoke verify` reads (securesystemslib's key "
                           f"JSON with a keyid, or a PEM public key): {exc}") from None

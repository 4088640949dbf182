"""A Sigstore signature in the provenance's DSSE envelope: SigstoreSigner.sign returns the bundle's
messageSignature.signature (base64, protobuf JSON) as `sig`, while securesystemslib's Envelope.to_dict
reads every `sig` as hex. The signer here returns exactly that shape; Sigstore itself needs the network."""
import base64

from securesystemslib.dsse import Envelope
from securesystemslib.signer import Signature, Signer

from security import provenance

RAW_SIG = bytes(range(70))          # an ECDSA signature's length


class BundleSigner(Signer):
    """Returns what securesystemslib's SigstoreSigner.sign returns: the keyid, the bundle's base64
    signature and the bundle under `bundle`."""

    public_key = None

    @classmethod
    def from_priv_key_uri(cls, priv_key_uri, public_key, secrets_handler=None):
        raise NotImplementedError

    def sign(self, payload: bytes) -> Signature:
        b64 = base64.b64encode(RAW_SIG).decode()
        return Signature("sigstore-key", b64, {"bundle": {"messageSignature": {"signature": b64}}})


def test_a_sigstore_signature_is_written_as_dsse_base64_with_its_bundle():
    signed = provenance.envelope({"_type": provenance.STATEMENT_TYPE}, BundleSigner())
    (sig,) = signed["signatures"]
    assert base64.b64decode(sig["sig"]) == RAW_SIG            # DSSE: sig is the base64 of the raw signature
    assert sig["bundle"]["messageSignature"]["signature"] == base64.b64encode(RAW_SIG).decode()
    again = Envelope.from_dict(signed)                          # what `invoke verify` reads back
    assert again.signatures["sigstore-key"].unrecognized_fields["bundle"] == sig["bundle"]

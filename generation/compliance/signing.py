"""C2PA content credentials: every picture signed with the company's certificate.

The Commission's code of practice on marking AI-generated content asks for signed metadata;
C2PA manifests are what cameras, editors and platforms read for that. The manifest says
what the bot did, and no more (`generation.compliance.claims`): created (`c2pa.created`)
by a trained model (IPTC's `trainedAlgorithmicMedia`) with imgbot; or, for a picture made
from one the bot did not make, opened (the source as its `parentOf` ingredient) and then
edited with AI (`compositeWithTrainedAlgorithmicMedia`) or only resized (no digital source
type). It carries no thumbnail (the picture is its own, and an ingredient's would be
someone's picture), no prompt unless the operator asks for it (`compliance.embed_prompt`),
and no source's address unless the operator asks for that (`compliance.embed_sources`).

Signing is the very last step: any later change to the pixels or the metadata breaks the
signature, which is the point. Nothing here touches the network: remote manifests and OCSP
are never fetched; a time-stamp authority is asked only when one is configured.

A certificate C2PA would refuse is refused when it is loaded (the bot does not start),
never discovered at the first picture, and the bot never sends a picture unsigned in place
of a signed one: a signing failure is an error of that picture.
"""

from __future__ import annotations

import datetime
import io
import threading
from pathlib import Path
from typing import Any

from ..errors import ComplianceError
from .claims import MADE, OPENED, Claim

# The extended key usages C2PA accepts for a signer of content (besides time-stamping and
# OCSP signing, which are for other roles): document signing and e-mail protection.
DOCUMENT_SIGNING = "1.3.6.1.5.5.7.3.36"
EMAIL_PROTECTION = "1.3.6.1.5.5.7.3.4"
OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}


class SigningError(ComplianceError):
    """A C2PA signature cannot be made: the certificate or key cannot sign manifests (at
    the start), or c2pa refused to sign a picture (which is then not sent); the words say
    why."""


class TimestampUnavailable(SigningError):
    """The configured time-stamp authority did not answer: an outage, not a config error."""


def certificate_problems(cert_pem: bytes, key_pem: bytes) -> list[str]:
    """Why C2PA would refuse this certificate chain and key for es256 signing; [] if fine.
    Checked here, with readable reasons, before c2pa's own trial (whose errors are terse)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtensionOID

    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        return ["c2pa.cert holds no PEM certificate"]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        return [f"c2pa.key holds no unencrypted PEM private key ({exc})"]
    cert, problems = chain[0], []

    def extension(oid):
        try:
            return cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            return None

    if cert.issuer == cert.subject:
        problems.append(
            "the certificate is self-signed; C2PA needs an end-entity "
            "certificate issued by the company's CA (have the CA issue one; "
            "the CA's certificates then follow it in the same file)"
        )
    basic = extension(ExtensionOID.BASIC_CONSTRAINTS)
    if basic is not None and basic.ca:
        problems.append(
            "the certificate is a CA certificate (CA:TRUE); sign with an "
            "end-entity certificate issued by it"
        )
    usage = extension(ExtensionOID.KEY_USAGE)
    if usage is None or not usage.digital_signature:
        problems.append("the certificate's key usage lacks digitalSignature")
    eku = extension(ExtensionOID.EXTENDED_KEY_USAGE)
    if eku is None or not {o.dotted_string for o in eku} & {DOCUMENT_SIGNING, EMAIL_PROTECTION}:
        problems.append(
            "the certificate's extended key usage needs documentSigning "
            f"({DOCUMENT_SIGNING}) or emailProtection ({EMAIL_PROTECTION})"
        )
    if extension(ExtensionOID.AUTHORITY_KEY_IDENTIFIER) is None:
        problems.append("the certificate has no authority key identifier")
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        problems.append(
            f"the certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d}"
            f" to {cert.not_valid_after_utc:%Y-%m-%d})"
        )
    public = cert.public_key()
    if not (isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"):
        problems.append("the certificate's key is not an EC P-256 key (es256 needs one)")
    elif key.public_key() != public:
        problems.append("c2pa.key is not the key of the certificate in c2pa.cert")
    return problems


def _pkcs8(key_pem: bytes) -> bytes:
    """The key as PKCS#8 PEM, the only form c2pa takes; `openssl ecparam -genkey` writes
    SEC1 ("EC PRIVATE KEY"), which is converted here rather than refused."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class C2paSigner:
    """Signs encoded pictures (PNG, JPEG) with one certificate chain, thread-safe."""

    def __init__(
        self, cert_pem: bytes, key_pem: bytes, tsa_url: str | None = None, version: str = ""
    ):
        problems = certificate_problems(cert_pem, key_pem)
        if problems:
            raise SigningError("; ".join(problems))
        import c2pa

        self._c2pa = c2pa
        self._version = version
        key_pem = _pkcs8(key_pem)
        self._context = c2pa.Context.from_dict(
            {**OFFLINE, "builder": {"thumbnail": {"enabled": False}}}
        )
        self._signer = self._native(cert_pem, key_pem, tsa_url)
        # The native signer is shared; pictures of different jobs are encoded in parallel
        # threads, and a signature takes a few milliseconds, so one at a time is enough.
        self._lock = threading.Lock()
        try:
            self._trial()
        except SigningError:
            if tsa_url is None:
                raise
            # Tell a time-stamp authority that does not answer from a certificate C2PA
            # refuses: the first is an outage, the second a config to fix.
            self._signer = self._native(cert_pem, key_pem, None)
            self._trial()
            raise TimestampUnavailable(
                f"the time-stamp authority {tsa_url} (c2pa.tsa_url) gave no time-stamp; "
                "pictures are not sent unstamped"
            ) from None

    def _native(self, cert_pem: bytes, key_pem: bytes, tsa_url: str | None):
        c2pa = self._c2pa
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, cert_pem, key_pem, tsa_url)
        try:
            return c2pa.Signer.from_info(info)
        except c2pa.C2paError as exc:
            raise SigningError(f"C2PA refuses the certificate or key: {exc}") from None

    @classmethod
    def from_files(
        cls, cert: Path, key: Path, tsa_url: str | None = None, version: str = ""
    ) -> C2paSigner:
        try:
            cert_pem = Path(cert).expanduser().read_bytes()
        except OSError as exc:
            raise SigningError(f"cannot read c2pa.cert {exc.filename}: {exc.strerror}") from None
        try:
            key_pem = Path(key).expanduser().read_bytes()
        except OSError as exc:
            raise SigningError(f"cannot read c2pa.key {exc.filename}: {exc.strerror}") from None
        return cls(cert_pem, key_pem, tsa_url, version)

    def _trial(self) -> None:
        """Sign a tiny picture once, so that what c2pa itself refuses stops the start."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="PNG")
        try:
            self.sign(buffer.getvalue(), "image/png")
        except self._c2pa.C2paError as exc:
            raise SigningError(f"C2PA cannot sign with this certificate: {exc}") from None

    def manifest(
        self,
        parameters: dict[str, Any] | None = None,
        claim: Claim = MADE,
        titles: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """The manifest of a picture that makes `claim`. A derived picture's ingredients are
        titled `titles` (its parent first; one untitled parent when none are given)."""
        agent = {"name": "imgbot", **({"version": self._version} if self._version else {})}
        done: dict[str, Any] = {"action": claim.action, "softwareAgent": agent}
        if claim.source_type is not None:
            done["digitalSourceType"] = claim.source_type
        if parameters:  # only with compliance.embed_prompt
            done["parameters"] = {"org.imgbot.generation": parameters}
        actions, ingredients = [done], []
        if claim.derived:
            titles = titles or ("the picture it was made from",)
            ingredients = [
                {
                    "title": title,
                    "format": "image/png",
                    "label": f"source-{index}",
                    "relationship": "parentOf" if index == 0 else "componentOf",
                }
                for index, title in enumerate(titles)
            ]
            # C2PA's first action of an edit opens its parent; `placed` the pictures an
            # edit took parts from.
            actions = [{"action": OPENED, "parameters": {"ingredientIds": ["source-0"]}}, done]
            if len(titles) > 1:
                actions.append(
                    {
                        "action": "c2pa.placed",
                        "parameters": {
                            "ingredientIds": [f"source-{i}" for i in range(1, len(titles))]
                        },
                    }
                )
        return {
            "claim_generator_info": [{"name": "imgbot", "version": self._version or "0"}],
            "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
            **({"ingredients": ingredients} if ingredients else {}),
        }

    def sign(
        self,
        data: bytes,
        mimetype: str,
        parameters: dict[str, Any] | None = None,
        claim: Claim = MADE,
        titles: tuple[str, ...] = (),
    ) -> bytes:
        """The picture with its manifest embedded. Raises c2pa.C2paError."""
        with self._lock:
            builder = self._c2pa.Builder(
                self.manifest(parameters, claim, titles), context=self._context
            )
            out = io.BytesIO()
            builder.sign(self._signer, mimetype, io.BytesIO(data), out)
        return out.getvalue()

"""A minimal RFC 3161 time-stamp authority on 127.0.0.1, for the tests of
`compliance.c2pa.tsa_url`.

A time stamp proves a signature existed before its certificate expired (or was revoked),
so a verifier can still trust the picture later. The real authorities are on the internet
and the tests are offline, so this one answers on a free loopback port: it takes a DER
TimeStampReq (POST, application/timestamp-query) and grants a TimeStampResp whose token is
a CMS SignedData over a TSTInfo (the request's imprint and nonce, the time now, a serial),
signed with a time-stamping certificate (EKU id-kp-timeStamping, critical) issued by a root
of its own: tests.helpers.pki.make_ca keeps its root's key to itself, so the authority has its own
root, which a verifier trusts alongside the company's. It counts the requests it served.
"""

from __future__ import annotations

import datetime
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ, useful
from pyasn1_modules import rfc3161, rfc5035, rfc5280, rfc5652

POLICY = univ.ObjectIdentifier("1.3.6.1.4.1.99999.1")  # a made-up test policy
SHA256 = univ.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
ECDSA_SHA256 = univ.ObjectIdentifier("1.2.840.10045.4.3.2")


def _certificate(
    subject: str, key, issuer: x509.Certificate | None, issuer_key, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, subject),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example TSA"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, ca, ca, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if not ca:  # RFC 3161 2.3: the only EKU, and critical
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
        )
    return builder.sign(issuer_key, hashes.SHA256())


class TimeStampAuthority:
    """`with TimeStampAuthority() as tsa:` serves at `tsa.url`; `tsa.root_pem` is its root,
    `tsa.requests` how many requests it answered, `tsa.times` the times it granted. Set
    `tsa.status` to a PKIStatus (2: rejection) to refuse instead of granting."""

    def __init__(self) -> None:
        root_key = ec.generate_private_key(ec.SECP256R1())
        self._key = ec.generate_private_key(ec.SECP256R1())
        root = _certificate("Example TSA Root", root_key, None, root_key, ca=True)
        self.cert = _certificate("Example TSA", self._key, root, root_key, ca=False)
        self.root_pem = root.public_bytes(serialization.Encoding.PEM).decode()
        self.requests, self.status, self.times = 0, 0, []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_port}/"

    def __enter__(self) -> TimeStampAuthority:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_error(415)
                    return
                reply = tsa.respond(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):  # quiet
                pass

        return Handler

    def respond(self, query: bytes) -> bytes:
        """The DER TimeStampResp for a DER TimeStampReq: granted, unless `status`."""
        request, _ = decoder.decode(query, asn1Spec=rfc3161.TimeStampReq())
        self.requests += 1
        response = rfc3161.TimeStampResp()
        response["status"]["status"] = self.status
        if self.status not in (0, 1):  # refused: a status and no token
            return encoder.encode(response)
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        self.times.append(now)
        info = rfc3161.TSTInfo()
        info["version"] = 1
        info["policy"] = POLICY
        info["messageImprint"] = request["messageImprint"]
        info["serialNumber"] = len(self.times)
        info["genTime"] = useful.GeneralizedTime(now.strftime("%Y%m%d%H%M%SZ"))
        if request["nonce"].isValue:
            info["nonce"] = request["nonce"]
        content = encoder.encode(info)

        cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        essid = rfc5035.ESSCertIDv2()  # hashAlgorithm left out: sha256 is its default
        essid["certHash"] = hashlib.sha256(cert_der).digest()
        signing_cert = rfc5035.SigningCertificateV2()
        signing_cert["certs"].append(essid)
        signer = rfc5652.SignerInfo()
        signer["version"] = 1
        sid = signer["sid"]["issuerAndSerialNumber"]
        tbs, _ = decoder.decode(cert_der, asn1Spec=rfc5280.Certificate())
        sid["issuer"] = tbs["tbsCertificate"]["issuer"]
        sid["serialNumber"] = tbs["tbsCertificate"]["serialNumber"]
        signer["digestAlgorithm"]["algorithm"] = SHA256
        for oid, value in (
            (rfc5652.id_contentType, rfc3161.id_ct_TSTInfo),
            (rfc5652.id_messageDigest, univ.OctetString(hashlib.sha256(content).digest())),
            (rfc5035.id_aa_signingCertificateV2, signing_cert),
        ):
            attribute = rfc5652.Attribute()
            attribute["attrType"] = oid
            attribute["attrValues"].append(univ.Any(encoder.encode(value)))
            signer["signedAttrs"].append(attribute)
        # RFC 5652 5.4: the signature covers the attributes' DER as a SET (tag 0x31).
        signed = b"\x31" + encoder.encode(signer["signedAttrs"])[1:]
        signer["signatureAlgorithm"]["algorithm"] = ECDSA_SHA256
        signer["signature"] = self._key.sign(signed, ec.ECDSA(hashes.SHA256()))

        data = rfc5652.SignedData()
        data["version"] = 3  # the content is not id-data
        digest = data["digestAlgorithms"].getComponentByPosition(0, instantiate=True)
        digest["algorithm"] = SHA256
        data["encapContentInfo"]["eContentType"] = rfc3161.id_ct_TSTInfo
        data["encapContentInfo"]["eContent"] = content
        if request["certReq"]:
            choice = data["certificates"].getComponentByPosition(0, instantiate=True)
            choice["certificate"] = tbs
        data["signerInfos"].append(signer)
        response["timeStampToken"]["contentType"] = rfc5652.id_signedData
        response["timeStampToken"]["content"] = univ.Any(encoder.encode(data))
        return encoder.encode(response)

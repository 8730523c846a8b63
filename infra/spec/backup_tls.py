"""The certificates pgBackRest's TLS server and its clients present to each other, when the
repository lives on a repository host (docs/backup.md, "Where the repository lives").

They are derived from one stack secret, not generated: an Ed25519 key is 32 bytes, which HMAC
gives from the secret and the certificate's name, and an Ed25519 signature is deterministic, so the
same secret gives the same CA, keys and certificates on every `pulumi up` (no change to roll out),
with no TLS provider to install and no key material in the state beyond the secret outputs that
carry them. Rotating the secret rotates them all, in the one `up` that rolls every role using them.

Each certificate names one role by its network alias (CN and DNS SAN) and serves both ends: the
server's identity (pgBackRest checks the host it dialled against it) and the client's (the server
admits a client by its CN: `tls-server-auth`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Fixed validity: a certificate made at another moment would differ, and roll every role.
NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2126, 1, 1, tzinfo=UTC)
CA_NAME = "taskstack pgBackRest CA"


@dataclass(frozen=True)
class TlsFiles:
    """One role's PEM files: the CA it trusts, its certificate and its private key."""

    ca: str
    certificate: str
    key: str


def _key(secret: str, name: str) -> ed25519.Ed25519PrivateKey:
    seed = hmac.new(secret.encode(), f"taskstack pgbackrest tls {name}".encode(), hashlib.sha256)
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed.digest())


def _serial(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:16], "big") >> 1


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _ca(secret: str) -> tuple[ed25519.Ed25519PrivateKey, x509.Certificate]:
    key = _key(secret, "ca")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial(CA_NAME))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, None)
    )
    return key, certificate


def tls_files(secret: str, alias: str) -> TlsFiles:
    """The CA, and the certificate and key of the role reached (and known) as `alias`."""
    ca_key, ca = _ca(secret)
    key = _key(secret, alias)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, alias)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(_serial(alias))
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(alias)]), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, None)
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return TlsFiles(ca=_pem(ca), certificate=_pem(certificate), key=key_pem)

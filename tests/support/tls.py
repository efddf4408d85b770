"""Throwaway certificates for TLS tests: a CA, and leaves for 127.0.0.1 written as PEM files.

A leaf may name roles as SAN URIs (``chat://node/2``, ``chat://admin``), the
way peers and operators prove who they are under mutual TLS (coord/shell/auth.py).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TlsMaterial:
    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class CertificateAuthority:
    """A test CA in folder; :meth:`issue` signs leaves for 127.0.0.1 with optional roles."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._cert = _validity(
            x509.CertificateBuilder()
            .subject_name(_name("test ca"))
            .issuer_name(_name("test ca"))
            .public_key(self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        ).sign(self._key, hashes.SHA256())
        self.path = folder / "ca.pem"
        self.path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, roles: tuple[str, ...] = ()) -> TlsMaterial:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            *(x509.UniformResourceIdentifier(f"chat://{role}") for role in roles),
        ]
        cert = _validity(
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
        ).sign(self._key, hashes.SHA256())
        material = TlsMaterial(self.path, self.folder / f"{name}.pem", self.folder / f"{name}.key")
        material.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(material.key, key)
        return material


def make_tls(folder: Path) -> TlsMaterial:
    """A CA and one leaf that names no role (a plain server or chat client certificate)."""
    return CertificateAuthority(folder).issue("node")

"""The site CA: signs chargers' certificate requests (OCPP 1.6 security whitepaper).

The CA is the one given by settings, or one made at first start and kept beside the
store. A charger's CSR is signed only if its signature is valid and its CN is the
charger's own id: a charger cannot obtain a certificate in another's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class CertificateRequestRejected(ValueError):
    """The CSR is malformed, badly signed, or names someone else."""


@dataclass
class SiteCA:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    validity_days: int = 730

    @classmethod
    def load_or_create(
        cls, certificate_path: Path, key_path: Path, validity_days: int = 730
    ) -> SiteCA:
        if certificate_path.is_file() and key_path.is_file():
            certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path}: the site CA key must be an EC key")
            return cls(certificate, key, validity_days)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocpp-edge site CA")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .sign(key, hashes.SHA256())
        )
        certificate_path.parent.mkdir(parents=True, exist_ok=True)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(key_path, 0o600)
        certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(certificate, key, validity_days)

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    def check_request(self, csr_pem: str, charger_id: str) -> x509.CertificateSigningRequest:
        try:
            request = x509.load_pem_x509_csr(csr_pem.encode())
        except ValueError as error:
            raise CertificateRequestRejected(f"not a PEM certificate request: {error}") from error
        if not request.is_signature_valid:
            raise CertificateRequestRejected("the request's signature does not verify")
        names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = str(names[0].value) if names else None
        if common_name != charger_id:
            raise CertificateRequestRejected(
                f"the request's CN is {common_name!r}, not the charger id {charger_id!r}"
            )
        return request

    def sign(self, csr_pem: str, charger_id: str) -> str:
        """The certificate chain (charger certificate, then the site CA) in PEM."""
        request = self.check_request(csr_pem, charger_id)
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(request.subject)
            .issuer_name(self.certificate.subject)
            .public_key(request.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=self.validity_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode() + self.certificate_pem

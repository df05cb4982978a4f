"""Enrolling this edge with the cloud: a new key and certificate request, and the two HTTP
calls of the exchange (its wire models are contract/enrollment.py, shared with the cloud).
edge/sync/identity.py writes what they bring.

The exchange: `POST /api/enroll/code {code}` answers the edge id the one-time code was
made for, and leaves the code unused; the edge makes an EC P-256 key and a CSR with that
id as its CN; `POST /api/enroll {code, csr}` uses the code and answers the certificate
signed by the fleet's edge CA, the broker's CA, address and port, the topic prefix and the
fleet's firmware key. Nothing is written before the second answer is checked.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ValidationError

from contract import enrollment as exchange
from edge.settings import SyncSettings

Answer = TypeVar("Answer", bound=BaseModel)


class EnrollmentError(Exception):
    """Enrolling did not happen; the message says what to do."""


class CloudRefused(EnrollmentError):
    """The cloud answered and said no: trying again with the same code will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

    @property
    def code_is_spent(self) -> bool:
        """Wrong, used or expired (403), or not allowed to replace this edge's identity
        (409): the code will never enroll this edge."""
        return self.status in (403, 409)


# -- key and request ------------------------------------------------------------------


def new_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def certificate_request(key: ec.EllipticCurvePrivateKey, edge_id: str) -> str:
    """A PEM CSR with CN = `edge_id`, signed by `key`."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, edge_id)])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject)
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


# -- the exchange -----------------------------------------------------------------------


def cloud_client(
    cloud_url: str, ca_file: Path | None = None, timeout: float = 30.0
) -> httpx.Client:
    """An HTTP client for the cloud's API. The code is a credential: https only, verified
    against the system's CAs or `ca_file`; plain http only to this machine (a tunnel)."""
    parts = urlsplit(cloud_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EnrollmentError(f"{cloud_url!r} is not the cloud's address: write https://HOST:PORT")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise EnrollmentError(
            f"{cloud_url} is plain http: the code would cross the network in clear; "
            "use the cloud's https address"
        )
    verify: ssl.SSLContext | bool = True
    if ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as error:
            raise EnrollmentError(
                f"--ca {ca_file}: not a readable PEM CA file ({error})"
            ) from error
    return httpx.Client(
        base_url=cloud_url.rstrip("/"), verify=verify, timeout=timeout, follow_redirects=False
    )


def edge_id_for_code(client: httpx.Client, code: str) -> exchange.CodeAnswer:
    """The edge id the code was made for; the code stays unused."""
    return _parse(
        exchange.CodeAnswer, _post(client, exchange.CODE_PATH, exchange.CodeQuery(code=code))
    )


def request_certificate(
    client: httpx.Client, code: str, key: ec.EllipticCurvePrivateKey, edge_id: str
) -> exchange.EnrollmentAnswer:
    """Use the code: the cloud's answer to a CSR for `key` with CN = `edge_id`, checked."""
    request = exchange.EnrollmentRequest(code=code, csr=certificate_request(key, edge_id))
    answer = _parse(exchange.EnrollmentAnswer, _post(client, exchange.ENROLL_PATH, request))
    check_answer(answer, key, edge_id)
    return answer


def check_answer(
    answer: exchange.EnrollmentAnswer, key: ec.EllipticCurvePrivateKey, edge_id: str
) -> None:
    """The certificate must be for this key and this edge, the broker CA a certificate, and
    the settings valid ones: nothing is written otherwise."""
    try:
        chain = x509.load_pem_x509_certificates(answer.certificate.encode())
        x509.load_pem_x509_certificates(answer.broker_ca.encode())
    except ValueError as error:
        raise EnrollmentError(
            f"the cloud answered a certificate that is not PEM: {error}"
        ) from error
    try:
        SyncSettings(
            edge_id=answer.edge_id,
            broker_host=answer.broker_host,
            broker_port=answer.broker_port,
            topic_prefix=answer.topic_prefix,
            firmware_public_key=answer.firmware_public_key,
        )
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]["msg"]
        raise EnrollmentError(
            f"the cloud answered settings this edge cannot use: {problem}"
        ) from error
    certificate = chain[0]
    if certificate.public_key() != key.public_key():
        raise EnrollmentError("the cloud answered a certificate for another key")
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if answer.edge_id != edge_id or [name.value for name in names] != [edge_id]:
        raise EnrollmentError(f"the cloud answered a certificate that is not for {edge_id}")


def _post(client: httpx.Client, path: str, body: BaseModel) -> bytes:
    try:
        response = client.post(
            path, content=body.model_dump_json(), headers={"content-type": "application/json"}
        )
    except httpx.TransportError as error:
        hint = " (a private CA? give it with --ca)" if "CERTIFICATE" in str(error).upper() else ""
        raise EnrollmentError(
            f"cannot reach the cloud at {client.base_url}: {error}{hint}"
        ) from error
    if response.status_code != 200:
        message = f"the cloud refused ({response.status_code}): {_detail(response)}"
        # 429 (too many wrong codes) and 5xx pass with time; other refusals do not.
        if 400 <= response.status_code < 500 and response.status_code != 429:
            raise CloudRefused(message, response.status_code)
        raise EnrollmentError(message)
    return response.content


def _parse(model: type[Answer], content: bytes) -> Answer:
    try:
        return model.model_validate_json(content)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in problem["loc"])
        raise EnrollmentError(
            f"the cloud's answer is not what this edge expects ({where}: {problem['msg']}): "
            "is --cloud the fleet's ocpp-cloud?"
        ) from error


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str):
        return detail
    return json.dumps(detail) if detail is not None else response.text[:200]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

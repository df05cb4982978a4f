"""The enrollment exchange between an edge and the cloud, as its wire models and paths:
edge/enrollment.py makes the calls, cloud/enrollment.py and cloud/api.py answer them.

`POST /api/enroll/code {code}` answers the edge id the one-time code was made for, and
leaves the code unused; `POST /api/enroll {code, csr}` uses the code and answers the
certificate signed by the fleet's edge CA, the broker's CA, address and port, the topic
prefix and the fleet's firmware key.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from contract.protocol import EDGE_ID_PATTERN

CODE_PATH = "/api/enroll/code"
ENROLL_PATH = "/api/enroll"
# Codes are typed by people: generous, but bounded, room for separators and spaces.
MAX_CODE_LENGTH = 64
MAX_CSR_LENGTH = 16_384


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeQuery(_Message):
    code: str = Field(min_length=1, max_length=MAX_CODE_LENGTH)


class CodeAnswer(_Message):
    edge_id: str = Field(pattern=EDGE_ID_PATTERN)
    expires_at: datetime


class EnrollmentRequest(_Message):
    code: str = Field(min_length=1, max_length=MAX_CODE_LENGTH)
    csr: str = Field(min_length=1, max_length=MAX_CSR_LENGTH, description="PEM, CN = edge id")


class EnrollmentAnswer(_Message):
    edge_id: str = Field(pattern=EDGE_ID_PATTERN)
    certificate: str = Field(description="PEM: the edge's certificate, then the edge CA's")
    broker_ca: str = Field(description="PEM: the CA(s) of the broker's certificate")
    broker_host: str = Field(min_length=1)
    broker_port: int = Field(ge=1, le=65535)
    topic_prefix: str
    firmware_public_key: str = Field(description="base64 of the fleet's Ed25519 key")

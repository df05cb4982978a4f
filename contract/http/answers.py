"""The error answers the HTTP APIs share, as their OpenAPI documents describe them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Problem(BaseModel):
    """An error: `detail` says what happened in a sentence (FastAPI's own 422 for a bad
    parameter lists its problems instead)."""

    model_config = ConfigDict(extra="allow")

    detail: str | list[dict[str, Any]]
    error: str | None = Field(None, description="The kind of command error, when it is one.")


def problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


# What contract/http/access.py and contract/http/body_limit.py answer before any route runs.
GUARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: problem("A Host this API does not serve without the token, or a malformed length"),
    401: problem("The bearer token is missing or wrong"),
    403: problem("A state-changing request from another origin"),
    413: problem("The body is larger than this route takes"),
    415: problem("The body is not JSON"),
}

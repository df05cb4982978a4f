"""Settings sections both deployables have: the base every section extends (an unknown key
is an error that names it) and `[service]`, how the process stops."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceSettings(Section):
    stop_timeout: float = Field(
        10.0,
        ge=1,
        le=300,
        description="Seconds from SIGTERM after which the process ends itself, naming what "
        "had not stopped; on the edge keep it below the unit's TimeoutStopSec (30).",
    )

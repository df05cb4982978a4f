"""The edge's local API and the cloud's REST API fuzzed from their own OpenAPI documents
(schemathesis): requests that fit the documents and requests that break them, sent over
real HTTP to the running daemon and aggregator. No answer may be a server error, and
every answer must be what the document says (status, content type, body schema).

A bounded number of examples per operation runs with the suite; for a longer campaign:
`OCPP_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/adversarial/test_api_fuzz.py`.

The daemon and the aggregator run on event loops of their own threads: schemathesis's
calls block, and would otherwise block the loop that serves them.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.generation import GenerationMode

from cloud.app import CloudSite, run_cloud
from cloud.settings import CloudSettings
from edge.app import Site, run_edge
from tests.certificates import CertificateAuthority
from tests.conftest import CLOUD_API_TOKEN, free_port, make_settings
from tests.mosquitto import Mosquitto

EXAMPLES = int(os.environ.get("OCPP_FUZZ_EXAMPLES", "8"))
CHECKS = [
    checks.not_a_server_error,
    checks.response_schema_conformance,
    checks.content_type_conformance,
]


class InThread:
    """A daemon's main coroutine on its own event loop in a thread, until `close()`."""

    def __init__(
        self, main: Callable[[asyncio.Event, Callable[[Any], None]], Coroutine[Any, Any, None]]
    ) -> None:
        self._main = main
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.site: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError("the daemon did not start within 60 s")
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(site: Any) -> None:
                self.site = site
                self._ready.set()

            await self._main(self._stop, ready)

        try:
            asyncio.run(main())
        except BaseException as error:  # told to the test that started it
            self._failure = error
        finally:
            self._ready.set()

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        if self._failure is not None:
            raise self._failure


@pytest.fixture(scope="module")
def edge_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("edge")
    edge_settings = make_settings(directory, with_api=True, files={"port": free_port()})

    async def main(stop: asyncio.Event, ready: Callable[[Site], None]) -> None:
        await run_edge(edge_settings, stop=stop, on_ready=ready)

    running = InThread(main)
    assert running.site.api is not None
    yield f"http://127.0.0.1:{running.site.api.port}"
    running.close()


@pytest.fixture(scope="module")
def cloud_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("cloud")
    broker = Mosquitto(directory / "broker")
    broker.start()
    edge_ca = CertificateAuthority(directory, "Edge CA")
    broker_ca = CertificateAuthority(directory, "Broker CA")
    cloud_settings = CloudSettings(
        store={"url": f"sqlite:///{directory / 'cloud.db'}"},
        mqtt={"broker_host": "127.0.0.1", "broker_port": broker.port},
        api={"port": free_port(), "token": CLOUD_API_TOKEN},
        firmware={"directory": directory / "firmware", "signing_key": str(directory / "key")},
        enrollment={
            "ca_certificate": edge_ca.files.certificate,
            "ca_private_key": edge_ca.files.key,
            "broker_ca": broker_ca.files.certificate,
            "broker_host": "localhost",
        },
    )

    async def main(stop: asyncio.Event, ready: Callable[[CloudSite], None]) -> None:
        await run_cloud(cloud_settings, stop=stop, on_ready=ready)

    running = InThread(main)
    try:
        assert running.site.api is not None
        yield f"http://127.0.0.1:{running.site.api.port}"
        running.close()
    finally:
        broker.stop()


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 50,  # the suite's runs repeat; a campaign explores
    suppress_health_check=list(HealthCheck),
    database=None,
)


def fuzz(
    schema_url: str, prepare: Callable[[schemathesis.Case], None], headers: dict[str, str]
) -> list[str]:
    """Every operation of the document, with requests that fit it and requests that break
    it; the failures, one sentence each (all operations run, whatever fails)."""
    schema = schemathesis.openapi.from_url(schema_url)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                prepare(case)
                case.call_and_validate(checks=CHECKS, headers=headers, timeout=30)

            try:
                run()
            except Unsatisfiable:
                continue  # nothing about this operation can be invalid (no parameters)
            except Exception as failure:  # reported together below
                failures.append(f"{operation.label} ({mode.value}): {failure}")
    return failures


def test_the_local_api_answers_every_request_as_documented(edge_api: str) -> None:
    def prepare(case: schemathesis.Case) -> None:
        if "/commands/" in case.path and isinstance(case.query, dict):
            # Chargers here are offline or unknown: no command waits for an answer.
            case.query.pop("wait", None)

    failures = fuzz(f"{edge_api}/openapi.json", prepare, {})
    assert not failures, "\n\n".join(failures)


def test_the_cloud_api_answers_every_request_as_documented(cloud_api: str) -> None:
    token = {"Authorization": f"Bearer {CLOUD_API_TOKEN}"}
    failures = fuzz(f"{cloud_api}/openapi.json", lambda case: None, token)
    assert not failures, "\n\n".join(failures)

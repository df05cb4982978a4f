"""Key conversions are cached, and the caches stay bounded whatever keys arrive."""

from __future__ import annotations

from edge.ocpp.payloads import KEYS_CACHED, camel_case, keyword_arguments, snake_case


def test_key_caches_stay_bounded_under_endless_new_keys() -> None:
    for number in range(KEYS_CACHED * 3):
        keyword_arguments({f"hostileKey{number}": 1})
        camel_case(f"hostile_key_{number}")
    assert snake_case.cache_info().currsize <= KEYS_CACHED
    assert camel_case.cache_info().currsize <= KEYS_CACHED
    # ...and the conversions are still right.
    assert snake_case("connectorId") == "connector_id"
    assert camel_case("meter_start") == "meterStart"

"""The alerts' rules on plain facts: what is raised, what stays open and what clears."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

from cloud.alerts import fault_counts_from, judge, retry_delay, signature, synced_until
from cloud.settings import AlertSettings
from cloud.store.alerts import (
    AlertKind,
    EdgeFacts,
    FaultedConnector,
    NewAlert,
    Observation,
    OpenAlert,
    RefusalSpike,
)
from cloud.store.schema import ALERT_KINDS

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RULES = AlertSettings(
    edge_offline_after=600,
    backlog_older_than=900,
    faulted_after=600,
    boot_grace=120,
    refusals_count=10,
    refusals_window=600,
)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def edge(edge_id: str = "site-7", **facts: Any) -> EdgeFacts:
    values: dict[str, Any] = {
        "edge_id": edge_id,
        "state": "online",
        "state_since": ago(86400),
        "backlog": 0,
        "oldest_age_s": None,
        "figures_at": ago(30),
        "last_event_at": ago(3600),
        "status_reported_at": ago(30),
        "status_backlog": 0,
    }
    return EdgeFacts(**(values | facts))


def fault(status_at: datetime, booted_at: datetime | None = None, **facts: Any) -> FaultedConnector:
    values: dict[str, Any] = {
        "edge_id": "site-7",
        "charger_id": "CP-1",
        "connector_id": 1,
        "status_at": status_at,
        "error_code": "GroundFailure",
        "info": None,
        "booted_at": booted_at,
    }
    return FaultedConnector(**(values | facts))


def observe(
    edges: list[EdgeFacts],
    faulted: list[FaultedConnector] | None = None,
    refusals: dict[str, RefusalSpike] | None = None,
    open_alerts: list[OpenAlert] | None = None,
) -> Observation:
    return Observation(edges, faulted or [], refusals or {}, open_alerts or [])


def kinds(raising: list[NewAlert]) -> list[tuple[str, str, str]]:
    return [(new.kind, new.edge_id, new.subject) for new in raising]


def test_an_edge_offline_longer_than_the_threshold_is_raised_with_when_it_went() -> None:
    recent = edge("site-1", state="offline", state_since=ago(599))
    long_gone = edge("site-2", state="offline", state_since=ago(601))
    judged = judge(observe([recent, long_gone]), RULES, NOW)
    assert kinds(judged.raising) == [("edge_offline", "site-2", "")]
    assert judged.raising[0].since == ago(601)
    assert "offline since 2026-03-01T11:49:59.000Z" in judged.raising[0].detail


def test_an_open_offline_alert_stays_while_offline_and_clears_once_online() -> None:
    open_alert = [OpenAlert(7, "edge_offline", "site-7", "")]
    still = judge(
        observe([edge(state="offline", state_since=ago(5000))], open_alerts=open_alert), RULES, NOW
    )
    assert still.raising == [] and still.clearing == []
    back = judge(
        observe([edge(state="online", state_since=ago(5))], open_alerts=open_alert), RULES, NOW
    )
    assert [(clear.alert_id, clear.reason) for clear in back.clearing] == [
        (7, "the edge is online again")
    ]


def test_an_old_backlog_is_raised_only_once_the_edge_had_the_time_to_sync_it() -> None:
    stuck = edge(backlog=40, oldest_age_s=1000, figures_at=ago(10), state_since=ago(3600))
    just_back = edge("site-8", backlog=9000, oldest_age_s=7200, state_since=ago(60))
    judged = judge(observe([stuck, just_back]), RULES, NOW)
    assert kinds(judged.raising) == [("backlog_old", "site-7", "")]
    assert judged.raising[0].since == ago(1010)


def test_a_backlog_alert_is_left_alone_while_offline_and_clears_once_synced() -> None:
    open_alert = [OpenAlert(3, "backlog_old", "site-7", "")]
    offline = edge(state="offline", state_since=ago(10), backlog=40, oldest_age_s=5000)
    assert judge(observe([offline], open_alerts=open_alert), RULES, NOW).clearing == []
    synced = edge(backlog=0, oldest_age_s=None)
    assert [
        c.alert_id for c in judge(observe([synced], open_alerts=open_alert), RULES, NOW).clearing
    ] == [3]


def test_a_fault_counts_up_to_what_the_edge_has_synced_on_its_own_clock() -> None:
    # The edge's clock is an hour behind the cloud's: only its own times are compared.
    behind = edge(last_event_at=ago(3600 + 700), status_reported_at=ago(3600), status_backlog=0)
    old_fault = fault(ago(3600 + 650))  # 650 s before what the edge synced last
    young_fault = fault(ago(3600 + 500), connector_id=2)
    judged = judge(observe([behind], [old_fault, young_fault]), RULES, NOW)
    assert kinds(judged.raising) == [("connector_faulted", "site-7", "CP-1/1")]
    assert "connector 1 Faulted since" in judged.raising[0].detail
    assert "(GroundFailure)" in judged.raising[0].detail


def test_a_fault_counts_only_to_the_newest_event_while_a_backlog_waits() -> None:
    # The status says events wait: the time it was sent is not covered by synced data.
    waiting = edge(last_event_at=ago(3000), status_reported_at=ago(10), status_backlog=12)
    assert synced_until(waiting) == ago(3000)
    judged = judge(observe([waiting], [fault(ago(3300))]), RULES, NOW)
    assert judged.raising == []  # 300 s known, of 600


def test_a_faulted_at_boot_counts_from_the_end_of_the_boot_grace() -> None:
    at_boot = fault(ago(700), booted_at=ago(705))
    assert fault_counts_from(at_boot, RULES) == ago(705 - 120)
    later = fault(ago(700), booted_at=ago(1000), connector_id=2)
    assert fault_counts_from(later, RULES) == ago(700)
    # Synced to 30 s ago: 670 s of the later fault count, 555 of the one at boot.
    judged = judge(observe([edge()], [at_boot, later]), RULES, NOW)
    assert [new.connector_id for new in judged.raising] == [2]
    # A minute later on the edge's clock, the one at boot has lasted long enough too.
    a_minute_on = edge(status_reported_at=NOW + timedelta(seconds=60))
    judged = judge(observe([a_minute_on], [at_boot]), RULES, NOW)
    assert [new.connector_id for new in judged.raising] == [1]


def test_no_fault_is_raised_while_its_edge_is_offline_and_an_open_one_stays() -> None:
    offline = edge(state="offline", state_since=ago(100), status_reported_at=NOW)
    open_alert = [OpenAlert(5, "connector_faulted", "site-7", "CP-1/1")]
    judged = judge(observe([offline], [fault(ago(5000))], open_alerts=open_alert), RULES, NOW)
    assert judged.raising == [] and judged.clearing == []
    judged = judge(observe([offline], [fault(ago(5000))]), RULES, NOW)
    assert judged.raising == []
    # The connector's data says it recovered (synced before the edge went away): cleared.
    recovered = judge(observe([offline], [], open_alerts=open_alert), RULES, NOW)
    assert [c.reason for c in recovered.clearing] == ["the connector reports another status"]


def test_refusals_raise_above_the_count_and_clear_at_half() -> None:
    spike = {"site-7": RefusalSpike(11, ago(300))}
    judged = judge(observe([edge()], refusals=spike), RULES, NOW)
    assert kinds(judged.raising) == [("refusals_spike", "site-7", "")]
    open_alert = [OpenAlert(9, "refusals_spike", "site-7", "")]
    calmer = {"site-7": RefusalSpike(6, ago(300))}
    assert (
        judge(observe([edge()], refusals=calmer, open_alerts=open_alert), RULES, NOW).clearing == []
    )
    calm = {"site-7": RefusalSpike(5, ago(300))}
    assert (
        len(judge(observe([edge()], refusals=calm, open_alerts=open_alert), RULES, NOW).clearing)
        == 1
    )


def test_a_threshold_of_zero_turns_its_alert_off_and_clears_those_open() -> None:
    rules = RULES.model_copy(update={"edge_offline_after": 0})
    gone = edge(state="offline", state_since=ago(9999))
    open_alert = [OpenAlert(1, "edge_offline", "site-7", "")]
    judged = judge(observe([gone], open_alerts=open_alert), rules, NOW)
    assert judged.raising == []
    assert [c.reason for c in judged.clearing] == ["alerts on offline edges are turned off"]


def test_an_edge_gets_at_most_max_open_per_edge_alerts_its_edge_alerts_first() -> None:
    rules = RULES.model_copy(update={"max_open_per_edge": 3})
    gone = edge(state="offline", state_since=ago(5000), status_reported_at=NOW)
    many = [fault(ago(5000 - n), connector_id=n) for n in range(10)]
    open_alert = [OpenAlert(1, "connector_faulted", "site-7", "CP-1/0")]
    online = edge(status_reported_at=NOW)
    judged = judge(observe([online], many, open_alerts=open_alert), rules, NOW)
    assert [new.subject for new in judged.raising] == ["CP-1/1", "CP-1/2"]
    assert judged.held_back == 7
    judged = judge(observe([gone], refusals={"site-7": RefusalSpike(50, ago(5))}), rules, NOW)
    assert kinds(judged.raising) == [
        ("edge_offline", "site-7", ""),
        ("refusals_spike", "site-7", ""),
    ]


def test_an_edges_text_in_an_alert_is_cut_and_cleaned() -> None:
    hostile = fault(ago(5000), charger_id="C" * 5000, info="bad\x00" + "i" * 900)
    judged = judge(observe([edge(status_reported_at=NOW)], [hostile]), RULES, NOW)
    detail = judged.raising[0].detail
    assert len(detail) < 700 and "\x00" not in detail


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id": 1}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("s3cret", "1700000000", body) == f"sha256={expected}"


def test_retries_back_off_doubling_up_to_the_longest() -> None:
    rules = AlertSettings(webhook_retry_first=5, webhook_retry_longest=60)
    assert [retry_delay(rules, attempt) for attempt in range(1, 7)] == [5, 10, 20, 40, 60, 60]


def test_the_alert_kinds_are_the_ones_the_store_allows() -> None:
    assert get_args(AlertKind) == ALERT_KINDS


def test_an_edges_figures_beyond_the_calendar_leave_the_other_edges_judged() -> None:
    far_future = datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    hostile = edge("site-1", backlog=5, oldest_age_s=1e300)
    booting_forever = fault(far_future, booted_at=far_future, edge_id="site-1")
    gone = edge("site-2", state="offline", state_since=ago(5000))
    open_alert = [OpenAlert(4, "backlog_old", "site-1", "")]
    judged = judge(observe([hostile, gone], [booting_forever], open_alerts=open_alert), RULES, NOW)
    assert kinds(judged.raising) == [("edge_offline", "site-2", "")]
    assert judged.unjudged == 2 and judged.clearing == []

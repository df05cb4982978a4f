"""The status line the daemon gives the service manager, from what the site reports."""

from __future__ import annotations

from edge.service import SiteStatus, describe


def test_status_line_names_chargers_cloud_and_readers() -> None:
    assert describe(SiteStatus(chargers_online=1, cloud_connected=None)) == (
        "1 charger online, cloud sync off"
    )
    assert (
        describe(
            SiteStatus(
                chargers_online=12,
                cloud_connected=False,
                readers_open=1,
                readers=2,
                backlog_events=7,
            )
        )
        == "12 chargers online, backlog 7 (cloud unreachable), readers 1/2 open"
    )


def test_backlog_is_left_out_until_counted() -> None:
    assert describe(SiteStatus(chargers_online=0, cloud_connected=True)) == "0 chargers online"
    assert describe(SiteStatus(chargers_online=0, cloud_connected=True, backlog_events=0)) == (
        "0 chargers online, backlog 0"
    )

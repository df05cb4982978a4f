"""The demo site (`[demo] chargers`): simulated chargers charging demo cards, and a
simulated reader at the last charger, which charges only when a card is tapped."""

from __future__ import annotations

from sqlite_utils import Database

from edge.clock import utc_now_text
from edge.settings import SimulatedReaderSettings
from edge.simulator import DemoPlan
from edge.store import id_tags

DEMO_CARDS_PER_CHARGER = 4
DEMO_READER = "demo-reader"


def demo_cards(charger_number: int) -> list[str]:
    # Hex, like the UIDs readers report, so that they can be tapped at the demo reader.
    return [f"DE00{charger_number:02d}{card:02d}" for card in range(1, DEMO_CARDS_PER_CHARGER + 1)]


def demo_reader(chargers_count: int) -> SimulatedReaderSettings:
    """The demo's reader, at its last charger, which charges only when a card is tapped."""
    return SimulatedReaderSettings(
        id=DEMO_READER, kind="simulated", charger=f"demo-{chargers_count}"
    )


def demo_plan(charger_number: int, chargers_count: int) -> DemoPlan:
    """What a demo charger does: charge its cards; the last is left to the reader's taps."""
    last = charger_number == chargers_count
    return DemoPlan(id_tags=[] if last else demo_cards(charger_number))


def enroll_demo_cards(db: Database, chargers_count: int) -> None:
    now = utc_now_text()
    for number in range(1, chargers_count + 1):
        for card in demo_cards(number):
            if id_tags.get_id_tag(db, card) is None:
                id_tags.save_id_tag(db, card, now, label="demo card")

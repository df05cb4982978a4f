"""The operator's actions, listed once for the cloud and the edge."""

from __future__ import annotations

from contract.operator_actions import OCPP_ACTION_OF, OPERATOR_ACTIONS


def test_every_operator_action_names_how_the_edge_carries_it_out() -> None:
    # "ocpp" carries its own OCPP action; a rollout goes through the firmware checks.
    own_way = {"ocpp", "firmware_rollout"}
    assert set(OPERATOR_ACTIONS) == set(OCPP_ACTION_OF) | own_way
    assert not own_way & set(OCPP_ACTION_OF)

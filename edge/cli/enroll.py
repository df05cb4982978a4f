"""`ocpp-edge enroll`: register this edge with the fleet's cloud using a one-time code,
and keep the identity it answers (edge/enrollment.py) where the settings loader finds it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.cli.common import settings_of
from edge.settings import find_config_file, load_settings

if TYPE_CHECKING:
    from edge.sync.identity import WrittenIdentity


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    enroll = commands.add_parser(
        "enroll",
        parents=[common],
        help="register this edge with the cloud using a one-time code",
        description="Make this edge's key, have the cloud sign its certificate in exchange "
        "for a one-time code (`ocpp-cloud enroll-code EDGE_ID`), and keep it with the "
        "broker's address and CA in [sync] identity_directory. Run it as the daemon's user.",
    )
    enroll.add_argument("code", help="the one-time code, e.g. ABCD-EFGH-IJKL-MNOP-QRST-UVWX")
    enroll.add_argument(
        "--cloud", required=True, help="the cloud's API address, e.g. https://cloud.example:8090"
    )
    enroll.add_argument(
        "--ca", type=Path, help="the CA of the cloud's HTTPS certificate, if not a public one"
    )
    enroll.add_argument("--force", action="store_true", help="replace an enrolled identity")
    enroll.set_defaults(command=cmd_enroll)


def cmd_enroll(arguments: argparse.Namespace) -> int:
    # httpx and cryptography load here, not for every other command.
    from edge.enrollment import (
        EnrollmentError,
        cloud_client,
        edge_id_for_code,
        new_private_key,
        request_certificate,
    )
    from edge.sync.identity import existing_identity, write_identity

    config_path = find_config_file(arguments.config)
    # Without the identity: a damaged one must not stop `--force` from replacing it.
    settings = load_settings(config_path, with_identity=False)
    directory = settings.sync.identity_path(settings.store.path)
    existing = existing_identity(directory)
    if existing is not None and not arguments.force:
        print(
            f"ocpp-edge: this edge is enrolled already ({existing}); --force replaces its "
            "identity (the certificate of the old key stays valid until it expires)",
            file=sys.stderr,
        )
        return 2
    try:
        with cloud_client(arguments.cloud, arguments.ca) as client:
            edge_id = edge_id_for_code(client, arguments.code).edge_id
            key = new_private_key()
            answer = request_certificate(client, arguments.code, key, edge_id)
        written = write_identity(directory, key, answer, source=arguments.cloud)
    except EnrollmentError as error:
        print(f"ocpp-edge: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"ocpp-edge: cannot write the identity in {directory}: {error}", file=sys.stderr)
        return 2
    print(
        f"Enrolled as edge {answer.edge_id} with {arguments.cloud}.\n"
        f"  identity     {written.identity_file}\n"
        f"  key          {written.private_key} (mode 0600, made here, never sent)\n"
        f"  certificate  {written.certificate}, valid until {written.not_after:%Y-%m-%d}\n"
        f"  broker       {answer.broker_host}:{answer.broker_port} over TLS, "
        f"its CA in {written.broker_ca}"
    )
    hidden = _hidden_values(arguments, written)
    if hidden:
        print(
            "But these settings win over the enrolled values; remove them, or the edge will "
            "not use its new identity:\n  " + "\n  ".join(hidden),
            file=sys.stderr,
        )
        return 1
    print(
        "Next: `ocpp-edge doctor` checks the settings and the broker; then restart the "
        "daemon (systemctl restart ocpp-edge) so that it connects as this edge."
    )
    return 0


def _hidden_values(arguments: argparse.Namespace, written: WrittenIdentity) -> list[str]:
    """The config file's and environment's [sync] values that differ from the identity's."""
    effective, config_path = settings_of(arguments)
    hidden = []
    for key, value in written.values.items():
        now = getattr(effective.sync, key)
        if str(now) == str(value):
            continue
        variable = f"OCPP_EDGE_SYNC__{key.upper()}"
        origin = f"${variable}" if variable in os.environ else f"{config_path} [sync] {key}"
        hidden.append(f"{origin} = {str(now) if isinstance(now, Path) else repr(now)}")
    return hidden

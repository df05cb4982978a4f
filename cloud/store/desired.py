"""Desired state: what the cloud wants each edge to hold, and what to send it until the
edge reports it holds it (docs/sync-protocol.md, "Down").

- Card lists: each change is a new version holding the full list; an edge is sent the
  latest as a delta from the version it reported (when that version's list is known),
  else in full, until it reports the latest.
- Commands: created with an id and an expiry; sent until the edge reports a result or
  they expire.
- Firmware: images the cloud holds, each with its signed manifest, offered to edges until
  they report them verified (or refuse them). Commands that install firmware name an
  image the cloud holds, never a location: the edge builds that (docs/security.md).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, Row, insert, select, update

from cloud.store import card_writes
from cloud.store.database import StoreError, reading
from cloud.store.schema import (
    DEFAULT_FLEET_ID,
    commands,
    edge_cards,
    edges,
    firmware_images,
    firmware_installs,
    firmware_status,
)
from cloud.store.statements import lock_edge, upsert
from cloud.store.times import iso, utc_now
from contract.protocol import (
    CARD_LIST_PART_BYTES,
    MAX_CARD_LIST_PARTS,
    MAX_PAYLOAD_BYTES,
    CardEntry,
    CardList,
    FirmwareManifest,
    FirmwareOffer,
    FirmwareRequest,
    OperatorCommand,
)

# Chunks of 256 KiB: a quarter of the largest payload once base64 grows them by a third.
DEFAULT_CHUNK_SIZE = 262_144
# Offers are sent again while the edge is fetching; after verified, rejected or failed
# only a new offer_to sends the image again.
_OFFER_STATES = ("offered", "downloading", "fetched")
FIRMWARE_ACTIONS = ("UpdateFirmware", "SignedUpdateFirmware")
_OPEN_COMMAND_STATES = ("pending", "sent")
# Who asked for a command: an email address is at most 254 characters.
MAX_ACTOR_CHARS = 320

assert DEFAULT_CHUNK_SIZE <= MAX_PAYLOAD_BYTES // 2


class DesiredStateError(StoreError):
    """Desired state that cannot be set as asked; the message says why."""


# -- card lists --------------------------------------------------------------------


class CardListOutdated(DesiredStateError):
    """A card list set on a version other than the edge's latest: another change came
    first. `changed`: the cards changed since `expected` that the list still holds."""

    def __init__(self, edge_id: str, expected: int, current: int, changed: list[CardEntry]):
        super().__init__(
            f"the card list of {edge_id} is at version {current}, not {expected}: another "
            f"change came first ({len(changed)} cards changed or added since, the removed "
            f"not counted); read it again, make your change on it and send it with "
            f"version {current}"
        )
        self.expected = expected
        self.current = current
        self.changed = changed


def set_card_list(
    engine: Engine,
    edge_id: str,
    cards: list[CardEntry],
    *,
    expected_version: int | None = None,
    actor: str = "token",
) -> int:
    """Store `cards` as the edge's new card list; its version, above every version the
    cloud or the edge has held. `expected_version`: the version the list was made from
    (0: none yet); when the latest is another, CardListOutdated and nothing is stored."""
    now = utc_now()
    try:
        return _set_card_list(engine, edge_id, cards, expected_version, actor, now)
    except card_writes.CardListError as error:
        raise DesiredStateError(str(error)) from error


def _set_card_list(
    engine: Engine,
    edge_id: str,
    cards: list[CardEntry],
    expected_version: int | None,
    actor: str,
    now: datetime,
) -> int:
    with engine.begin() as connection:
        # The fleet's row before the edge's, as every writer of cards takes them.
        fleet_id = card_writes.fleet_of_edge(connection, edge_id)
        revision = card_writes.bump_cards_revision(connection, fleet_id)
        edge = lock_edge(connection, edge_id, now)
        if (edge.fleet_id or DEFAULT_FLEET_ID) != fleet_id:
            raise DesiredStateError(f"{edge_id} moved to another fleet meanwhile: send it again")
        if expected_version is not None:
            current = card_writes.latest_card_version(connection, edge_id) or 0
            if current != expected_version:
                changed = connection.execute(
                    select(edge_cards)
                    .where(edge_cards.c.edge_id == edge_id, edge_cards.c.version > expected_version)
                    .order_by(edge_cards.c.id_key)
                ).all()
                raise CardListOutdated(
                    edge_id,
                    expected_version,
                    current,
                    [card_writes.entry_of(row) for row in changed],
                )
        written = card_writes.write_card_list(connection, edge, cards, now)
        card_writes.record_card_changes(
            connection, fleet_id, revision, {edge_id: written.changes}, actor, now
        )
    return written.version


def card_list_to_send(engine: Engine, edge_id: str) -> CardList | None:
    """The CardList the edge lacks: None when it reported the latest version (or there
    is no list); a delta from its version when that version's list is known; else full."""
    with reading(engine) as connection:
        reported = connection.execute(
            select(edges.c.cards_version_reported).where(edges.c.id == edge_id)
        ).scalar_one_or_none()
        latest = card_writes.latest_card_version(connection, edge_id)
        if latest is None or reported == latest:
            return None
        cards = card_writes.card_list_document(connection, edge_id, latest)
        base = card_writes.card_list_document(connection, edge_id, reported) if reported else None
    assert cards is not None
    if base is None:
        return CardList(version=latest, full=True, cards=list(cards.values()))
    changed = [card for id_tag, card in cards.items() if base.get(id_tag) != card]
    removed = [id_tag for id_tag in base if id_tag not in cards]
    return CardList(
        version=latest, full=False, base_version=reported, cards=changed, removed=removed
    )


def card_list_parts_to_send(
    engine: Engine, edge_id: str, part_bytes: int = CARD_LIST_PART_BYTES
) -> list[CardList]:
    """`card_list_to_send` as messages: one when the list fits in `part_bytes`, else its
    parts (the edge applies the list once it has every part)."""
    whole = card_list_to_send(engine, edge_id)
    if whole is None:
        return []
    return split_card_list(whole, part_bytes)


def split_card_list(whole: CardList, part_bytes: int = CARD_LIST_PART_BYTES) -> list[CardList]:
    if len(whole.model_dump_json(exclude_none=True)) <= part_bytes:
        return [whole]
    items: list[CardEntry | str] = [*whole.cards, *whole.removed]
    groups: list[list[CardEntry | str]] = [[]]
    size = 0
    for item in items:
        length = (
            len(item.model_dump_json(exclude_none=True))
            if isinstance(item, CardEntry)
            else len(item) + 3
        ) + 1
        # Room for the envelope: version, flags, part numbers (well under 200 bytes).
        if groups[-1] and size + length > part_bytes - 200:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += length
    if len(groups) > MAX_CARD_LIST_PARTS:
        raise DesiredStateError(
            f"card list {whole.version} needs {len(groups)} parts, more than "
            f"{MAX_CARD_LIST_PARTS}: make it smaller"
        )
    return [
        CardList(
            version=whole.version,
            full=whole.full,
            base_version=whole.base_version,
            cards=[item for item in group if isinstance(item, CardEntry)],
            removed=[item for item in group if isinstance(item, str)],
            part=number,
            parts=len(groups),
        )
        for number, group in enumerate(groups, start=1)
    ]


# -- commands ----------------------------------------------------------------------


def create_command(
    engine: Engine,
    edge_id: str,
    charger_id: str,
    action: str,
    arguments: Mapping[str, Any],
    expires_at: datetime,
    *,
    actor: str,
) -> OperatorCommand:
    """A new command for a charger of the edge, pending until sent; `actor` is who asked
    ("token", "loopback", "cli:USER", a user's email), kept with it."""
    now = utc_now()
    if not 1 <= len(actor) <= MAX_ACTOR_CHARS:
        raise DesiredStateError(f"who asks for a command is 1 to {MAX_ACTOR_CHARS} characters")
    if expires_at <= now:
        raise DesiredStateError(f"the command would expire at {iso(expires_at)}, in the past")
    command = operator_command(action, charger_id, arguments, expires_at)
    image = _firmware_image_named(command)
    with engine.begin() as connection:
        if image is not None and not _offerable(connection, image):
            raise DesiredStateError(
                f"no firmware image {image!r} with a signed manifest: add it first "
                "(and offer it to the edge)"
            )
        lock_edge(connection, edge_id, now)
        write_command(connection, edge_id, command, expires_at, actor, now)
    return command


def operator_command(
    action: str, charger_id: str, arguments: Mapping[str, Any], expires_at: datetime
) -> OperatorCommand:
    """A new command with its own id; DesiredStateError when an edge could not run it."""
    try:
        return OperatorCommand(
            id=uuid.uuid4().hex,
            action=action,  # checked here, against the Literal
            charger_id=charger_id,
            arguments=dict(arguments),
            expires_at=iso(expires_at),
        )
    except ValidationError as error:
        problems = "; ".join(str(problem["msg"]) for problem in error.errors())
        raise DesiredStateError(f"not a command an edge can run: {problems}") from error


def write_command(
    connection: Connection,
    edge_id: str,
    command: OperatorCommand,
    expires_at: datetime,
    actor: str,
    now: datetime,
) -> None:
    """Store the command for the edge, pending until sent, in the caller's transaction
    (which holds the edge's row): `create_command`'s write, and a campaign's."""
    connection.execute(
        insert(commands).values(
            id=command.id,
            edge_id=edge_id,
            charger_id=command.charger_id,
            action=command.action,
            arguments=command.arguments,
            expires_at=expires_at,
            created_at=now,
            status="pending",
            detail="",
            actor=actor,
        )
    )


def _firmware_image_named(command: OperatorCommand) -> str | None:
    """The image a firmware command installs (None for other commands); DesiredStateError
    when it names a location instead (chargers get only images the edge verified). Keys
    are read in any case and spelling, as loosely as an edge could read them."""
    arguments = _loose(command.arguments)
    if command.action == "ocpp" and arguments.get("action") in FIRMWARE_ACTIONS:
        inner = arguments.get("arguments")
        arguments = _loose(inner) if isinstance(inner, dict) else {}
    elif command.action != "firmware_rollout":
        return None
    firmware = arguments.get("firmware")
    if "location" in arguments or (isinstance(firmware, dict) and "location" in _loose(firmware)):
        raise DesiredStateError(
            'a firmware command names the image ("image"), not a location: the edge '
            "sends its chargers only images it verified, from its own file server"
        )
    force = _loose(command.arguments).get("force", arguments.get("force", False))
    if not isinstance(force, bool):
        raise DesiredStateError(f"force is true or false, not {force!r}")
    image = arguments.get("image")
    if not isinstance(image, str) or not image:
        raise DesiredStateError('a firmware command names the image to install ("image")')
    return image


def _loose(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Keys lowered with all but letters dropped: `Location`, `location`, `LOCATION` alike."""
    return {re.sub(r"[^a-z]", "", str(key).lower()): value for key, value in arguments.items()}


def _offerable(connection: Connection, name: str) -> bool:
    return (
        connection.execute(
            select(firmware_images.c.name).where(
                firmware_images.c.name == name, firmware_images.c.manifest.is_not(None)
            )
        ).one_or_none()
        is not None
    )


def commands_to_send(engine: Engine, edge_id: str, now: datetime) -> list[OperatorCommand]:
    """The edge's commands with no result yet and not expired, oldest first; those past
    their expiry are marked expired (a later result from the edge still wins)."""
    with engine.begin() as connection:
        connection.execute(
            update(commands)
            .where(
                commands.c.edge_id == edge_id,
                commands.c.status.in_(_OPEN_COMMAND_STATES),
                commands.c.expires_at <= now,
            )
            .values(status="expired", finished_at=now, detail="expired before the edge answered")
        )
        rows = connection.execute(
            select(commands)
            .where(commands.c.edge_id == edge_id, commands.c.status.in_(_OPEN_COMMAND_STATES))
            .order_by(commands.c.created_at, commands.c.id)
        ).all()
    return [
        OperatorCommand(
            id=row.id,
            action=row.action,
            charger_id=row.charger_id,
            arguments=row.arguments,
            expires_at=iso(row.expires_at),
        )
        for row in rows
    ]


def mark_sent(engine: Engine, command_ids: Iterable[str], now: datetime) -> None:
    """Record that these commands were published (the first time is kept)."""
    ids = list(command_ids)
    if not ids:
        return
    with engine.begin() as connection:
        connection.execute(
            update(commands)
            .where(commands.c.id.in_(ids), commands.c.status == "pending")
            .values(status="sent", sent_at=now)
        )


# -- firmware ----------------------------------------------------------------------


@dataclass(frozen=True)
class FirmwareImage:
    name: str
    version: str
    size: int
    sha256: str
    signature: str  # base64 Ed25519 signature over `manifest` (over the digest before it)
    path: str
    manifest: str | None  # the canonical signed manifest; None: added before manifests


def add_firmware_image(
    engine: Engine,
    manifest: FirmwareManifest,
    manifest_text: str,
    signature: str,
    path: str,
) -> FirmwareImage:
    """Register an image (written at `path`) with its signed manifest; the image as
    stored. Adding the same image again is harmless (the first manifest stays), and gives
    an image added before manifests its manifest; another image under a used name, or the
    same bytes as another version or for other targets, is refused."""
    image = FirmwareImage(
        manifest.name,
        manifest.version,
        manifest.size,
        manifest.sha256,
        signature,
        path,
        manifest_text,
    )
    try:
        _offer(image, DEFAULT_CHUNK_SIZE, force=False)  # the same checks an edge will make
    except ValidationError as error:
        problems = "; ".join(f"{problem['loc'][0]}: {problem['msg']}" for problem in error.errors())
        raise DesiredStateError(
            f"firmware image {manifest.name!r} cannot be offered: {problems}"
        ) from error
    with engine.begin() as connection:
        existing = connection.execute(
            select(firmware_images).where(firmware_images.c.name == manifest.name)
        ).one_or_none()
        if existing is not None:
            if existing.sha256 != manifest.sha256:
                raise DesiredStateError(
                    f"another image is already called {manifest.name!r}: give this one a new name"
                )
            if existing.manifest is not None:
                held = FirmwareManifest.model_validate_json(existing.manifest)
                if (held.version, held.targets) != (manifest.version, manifest.targets):
                    raise DesiredStateError(
                        f"{manifest.name!r} is already version {held.version} for "
                        f"{_targets_text(held)}: another version or targets need a new name"
                    )
                return _image(existing)
            connection.execute(
                update(firmware_images)
                .where(firmware_images.c.name == manifest.name)
                .values(
                    version=manifest.version,
                    signature=signature,
                    path=path,
                    manifest=manifest_text,
                )
            )
            return image
        connection.execute(
            insert(firmware_images).values(
                name=manifest.name,
                version=manifest.version,
                size=manifest.size,
                sha256=manifest.sha256,
                signature=signature,
                path=path,
                manifest=manifest_text,
                created_at=utc_now(),
            )
        )
    return image


def resign_firmware_images(
    engine: Engine, key_id: str, sign: Callable[[FirmwareManifest], tuple[str, str]]
) -> list[str]:
    """Give every image whose manifest another key signed a manifest by the key `key_id`
    (the same fields, signed now): after the fleet's key was replaced. The names done."""
    done: list[str] = []
    with engine.begin() as connection:
        rows = connection.execute(
            select(firmware_images.c.name, firmware_images.c.manifest)
            .where(firmware_images.c.manifest.is_not(None))
            .order_by(firmware_images.c.name)
        ).all()
        for row in rows:
            held = FirmwareManifest.model_validate_json(row.manifest)
            if held.key_id == key_id:
                continue
            text, signature = sign(held)
            connection.execute(
                update(firmware_images)
                .where(firmware_images.c.name == row.name)
                .values(manifest=text, signature=signature)
            )
            done.append(row.name)
    return done


def _targets_text(manifest: FirmwareManifest) -> str:
    return ", ".join(f"{target.vendor}/{target.model}" for target in manifest.targets)


def firmware_image(engine: Engine, name: str) -> FirmwareImage | None:
    with reading(engine) as connection:
        row = connection.execute(
            select(firmware_images).where(firmware_images.c.name == name)
        ).one_or_none()
    return None if row is None else _image(row)


def list_firmware_images(engine: Engine) -> list[dict[str, Any]]:
    """Every image with what its manifest says (None before manifests), newest first."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(firmware_images).order_by(
                firmware_images.c.created_at.desc(), firmware_images.c.name
            )
        ).all()
    images = []
    for row in rows:
        manifest = (
            None if row.manifest is None else FirmwareManifest.model_validate_json(row.manifest)
        )
        images.append(
            {
                "name": row.name,
                "version": row.version,
                "size": row.size,
                "sha256": row.sha256,
                "created_at": row.created_at,
                "targets": None
                if manifest is None
                else [f"{t.vendor}/{t.model}" for t in manifest.targets],
                "key_id": None if manifest is None else manifest.key_id,
            }
        )
    return images


def offer_to(engine: Engine, edge_id: str, image: str, *, force: bool = False) -> None:
    """Offer the image to the edge (again, when it was verified, rejected or failed).
    `force`: the edge may take it though it is older than what it holds or its chargers
    run (recorded with the offer)."""
    now = utc_now()
    with engine.begin() as connection:
        known = connection.execute(
            select(firmware_images.c.name, firmware_images.c.manifest).where(
                firmware_images.c.name == image
            )
        ).one_or_none()
        if known is None:
            raise DesiredStateError(f"no firmware image {image!r}: add it first")
        if known.manifest is None:
            raise DesiredStateError(
                f"{image!r} was added before images had signed manifests, and edges refuse "
                "it: add the same file again with its targets (ocpp-cloud firmware add "
                "FILE --name NAME --version VERSION --target VENDOR/MODEL)"
            )
        lock_edge(connection, edge_id, now)
        write_offer(connection, edge_id, image, now, force=force)


def write_offer(
    connection: Connection, edge_id: str, image: str, now: datetime, *, force: bool | None
) -> None:
    """Offer the image to the edge (again: from its first byte), in the caller's
    transaction (which holds the edge's row): `offer_to`'s write, and a campaign's.
    `force` is recorded with the offer; None: a new offer is not forced, and an
    operator's `force` on an earlier offer of the image stays."""
    offer = {"status": "offered", "bytes": 0, "detail": "", "offered_at": now, "updated_at": now}
    upsert(
        connection,
        firmware_status,
        {"edge_id": edge_id, "image": image, "forced": bool(force)} | offer,
        key=["edge_id", "image"],
        update=offer if force is None else offer | {"forced": force},
    )


def offers_to_send(
    engine: Engine, edge_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> list[FirmwareOffer]:
    """Offers the edge has not verified yet (nor rejected, nor failed)."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(firmware_images, firmware_status.c.forced)
            .join(firmware_status, firmware_status.c.image == firmware_images.c.name)
            .where(
                firmware_status.c.edge_id == edge_id,
                firmware_status.c.status.in_(_OFFER_STATES),
                firmware_images.c.manifest.is_not(None),
            )
            .order_by(firmware_status.c.offered_at, firmware_images.c.name)
        ).all()
    return [_offer(_image(row), chunk_size, force=bool(row.forced)) for row in rows]


def _image(row: Row[Any]) -> FirmwareImage:
    return FirmwareImage(
        row.name, row.version, row.size, row.sha256, row.signature, row.path, row.manifest
    )


def _offer(image: FirmwareImage, chunk_size: int, *, force: bool) -> FirmwareOffer:
    return FirmwareOffer(
        image=image.name,
        version=image.version,
        size=image.size,
        sha256=image.sha256,
        signature=image.signature,
        chunk_size=chunk_size,
        manifest=image.manifest,
        force=force,
    )


def firmware_overview(engine: Engine, edge_id: str) -> dict[str, Any]:
    """An edge's firmware: each image offered and how far it got, and each charger's
    latest install (or refusal) and the version last installed there."""
    with reading(engine) as connection:
        images = connection.execute(
            select(firmware_status)
            .where(firmware_status.c.edge_id == edge_id)
            .order_by(firmware_status.c.image)
        ).mappings()
        offered = [dict(row) for row in images]
        installs = connection.execute(
            select(firmware_installs)
            .where(firmware_installs.c.edge_id == edge_id)
            .order_by(firmware_installs.c.charger_id)
        ).mappings()
        return {"edge_id": edge_id, "images": offered, "chargers": [dict(row) for row in installs]}


def firmware_path_for(engine: Engine, edge_id: str, request: FirmwareRequest) -> str | None:
    """The file behind an image this edge was offered (None: it was not offered it)."""
    with reading(engine) as connection:
        return connection.execute(
            select(firmware_images.c.path)
            .join(firmware_status, firmware_status.c.image == firmware_images.c.name)
            .where(firmware_status.c.edge_id == edge_id, firmware_images.c.name == request.image)
        ).scalar_one_or_none()


def online_edges(engine: Engine) -> list[str]:
    """Edges whose last presence said online: the ones to send desired state to."""
    with reading(engine) as connection:
        return list(
            connection.execute(
                select(edges.c.id).where(edges.c.state == "online").order_by(edges.c.id)
            ).scalars()
        )


def list_commands(engine: Engine, edge_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """An edge's operator commands, newest first, with their status and result."""
    with reading(engine) as connection:
        rows = connection.execute(
            select(commands)
            .where(commands.c.edge_id == edge_id)
            .order_by(commands.c.created_at.desc())
            .limit(limit)
        ).mappings()
        return [dict(row) for row in rows]


def current_card_list(engine: Engine, edge_id: str) -> tuple[int, list[CardEntry]] | None:
    """The latest version of an edge's card list, and its cards."""
    with reading(engine) as connection:
        version = card_writes.latest_card_version(connection, edge_id)
        if version is None:
            return None
        cards = card_writes.card_list_document(connection, edge_id, version) or {}
    return version, list(cards.values())

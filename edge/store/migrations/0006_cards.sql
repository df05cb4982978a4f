-- Chargers a card is limited to; a card with no rows here may charge at any charger.
CREATE TABLE id_tag_chargers (
    id_tag TEXT NOT NULL COLLATE NOCASE REFERENCES id_tags (id_tag) ON DELETE CASCADE,
    charger_id TEXT NOT NULL,
    PRIMARY KEY (id_tag, charger_id)
);
-- A card's chargers are part of what each charger's local list holds.
CREATE TRIGGER id_tag_chargers_version_on_insert AFTER INSERT ON id_tag_chargers BEGIN
    UPDATE local_list_counter SET version = version + 1;
    UPDATE id_tags SET list_version = (SELECT version FROM local_list_counter)
        WHERE id_tag = NEW.id_tag;
END;
CREATE TRIGGER id_tag_chargers_version_on_delete AFTER DELETE ON id_tag_chargers BEGIN
    UPDATE local_list_counter SET version = version + 1;
    UPDATE id_tags SET list_version = (SELECT version FROM local_list_counter)
        WHERE id_tag = OLD.id_tag;
END;

-- Cards presented at a charger or a reader that are not in the card table: the
-- decision taken (by the unknown_cards setting, or later by the cloud), reused for
-- `cache_days`, and where the card was seen, so an operator can enrol it.
CREATE TABLE authorization_cache (
    id_tag TEXT PRIMARY KEY COLLATE NOCASE,
    status TEXT NOT NULL,
    expiry_date TEXT,
    parent_id_tag TEXT,
    source TEXT NOT NULL CHECK (source IN ('setting', 'cloud')),
    decided_at TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    last_seen_where TEXT NOT NULL,
    times_seen INTEGER NOT NULL DEFAULT 1
);

-- Every decision on a card, with its reason: Authorize and StartTransaction from
-- chargers' own readers, and taps at the edge's readers (with what the tap led to).
CREATE TABLE card_decisions (
    id INTEGER PRIMARY KEY,
    decided_at TEXT NOT NULL,
    id_tag TEXT NOT NULL COLLATE NOCASE,
    source TEXT NOT NULL CHECK (source IN ('charger', 'reader')),
    reader_id TEXT,
    charger_id TEXT,
    connector_id INTEGER,
    -- authorize (a charger asked), start/stop (a tap asked for it), refuse (a tap refused),
    -- ignore (a tap while that card's start or stop is under way)
    action TEXT NOT NULL CHECK (action IN ('authorize', 'start', 'stop', 'refuse', 'ignore')),
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- What came of a tap: the command sent, its answer, the transaction it started.
    command_id INTEGER,
    outcome TEXT,
    transaction_id INTEGER
);
CREATE INDEX card_decisions_by_id_tag ON card_decisions (id_tag, id);

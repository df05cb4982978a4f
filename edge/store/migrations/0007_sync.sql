-- Events for the cloud, written in the same transaction as the change they report.
-- `seq` is the edge's sequence number: AUTOINCREMENT never reuses one, even after the
-- acknowledged rows are deleted.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
);

-- The highest sequence number the cloud acknowledged, and when.
CREATE TABLE sync_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    acked_seq INTEGER NOT NULL DEFAULT 0,
    acked_at TEXT,
    cards_version INTEGER NOT NULL DEFAULT 0
);
INSERT INTO sync_state (id) VALUES (1);

-- Operator commands from the cloud, by id: a repeat is recognised and not run again.
CREATE TABLE cloud_commands (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    charger_id TEXT NOT NULL,
    arguments TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'done', 'failed', 'expired', 'rejected')),
    detail TEXT,
    finished_at TEXT
);

-- Cards the cloud manages (replaced by each full list) beside cards enrolled locally.
ALTER TABLE id_tags ADD COLUMN source TEXT NOT NULL DEFAULT 'local'
    CHECK (source IN ('local', 'cloud'));

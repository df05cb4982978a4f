-- This store's identity for the cloud (docs/sync-protocol.md, "A replaced store"):
-- random, made with the store, sent with every batch. A new file has a new one, so the
-- cloud tells a store that starts again at seq 1 from a replay of old events.
ALTER TABLE sync_state ADD COLUMN epoch TEXT;
UPDATE sync_state SET epoch = lower(hex(randomblob(16)));
-- The highest seq ever published: an ack beyond it is refused (it would forget events
-- the cloud never had).
ALTER TABLE sync_state ADD COLUMN sent_seq INTEGER NOT NULL DEFAULT 0;
-- Acks refused (beyond what was sent, or for another store), and events the cloud
-- quarantined, as its acks said (the cloud's count, and the latest one).
ALTER TABLE sync_state ADD COLUMN refused_acks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_state ADD COLUMN cloud_quarantined INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_state ADD COLUMN last_quarantined TEXT;

-- 'interrupted': the daemon stopped while the command ran (found at the next start).
CREATE TABLE cloud_commands_new (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    charger_id TEXT NOT NULL,
    arguments TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'done', 'failed', 'expired', 'rejected', 'interrupted')),
    detail TEXT,
    finished_at TEXT
);
INSERT INTO cloud_commands_new
    SELECT id, action, charger_id, arguments, expires_at, received_at, status, detail,
        finished_at
    FROM cloud_commands;
DROP TABLE cloud_commands;
ALTER TABLE cloud_commands_new RENAME TO cloud_commands;

-- Parts of a card list too large for one MQTT message, kept until every part of its
-- version is here; then the list is applied whole and its parts deleted.
CREATE TABLE card_list_parts (
    version INTEGER NOT NULL,
    part INTEGER NOT NULL,
    parts INTEGER NOT NULL,
    document TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (version, part)
);

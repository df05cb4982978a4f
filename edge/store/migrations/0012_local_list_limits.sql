-- What the edge knows of each charger's local list beyond the version it confirmed
-- (docs/ocpp.md, "Local lists"): how much of the card table it holds and why, a push
-- cut part-way, refusals and the wait before the next try.
ALTER TABLE local_lists ADD COLUMN status TEXT NOT NULL DEFAULT 'listed'
    CHECK (status IN ('listed', 'pushing', 'skipped', 'refused'));
-- Why skipped, or what the charger refused.
ALTER TABLE local_lists ADD COLUMN detail TEXT;
-- The listVersion the edge last gave the charger (its last part accepted), and the one
-- it last reported (GetLocalListVersion).
ALTER TABLE local_lists ADD COLUMN list_version INTEGER;
ALTER TABLE local_lists ADD COLUMN reported_version INTEGER;
-- Of `version`: entries the charger holds, cards of the table for this charger, and the
-- LocalAuthListMaxLength that chose them.
ALTER TABLE local_lists ADD COLUMN held INTEGER;
ALTER TABLE local_lists ADD COLUMN cards INTEGER;
ALTER TABLE local_lists ADD COLUMN max_length INTEGER;
-- A push under way or cut: its card-table version, kind and content digest (the parts
-- after `list_version` are what remains).
ALTER TABLE local_lists ADD COLUMN push_version INTEGER;
ALTER TABLE local_lists ADD COLUMN push_type TEXT;
ALTER TABLE local_lists ADD COLUMN push_digest TEXT;
ALTER TABLE local_lists ADD COLUMN push_parts INTEGER;
-- Refusals in a row at one card-table version and boot, and when to try again.
ALTER TABLE local_lists ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE local_lists ADD COLUMN retry_at TEXT;
ALTER TABLE local_lists ADD COLUMN failed_version INTEGER;
ALTER TABLE local_lists ADD COLUMN failed_boot TEXT;
-- The charger's last_boot_at when its local-list configuration keys were read ('' for
-- a charger that never sent a BootNotification), and when.
ALTER TABLE local_lists ADD COLUMN keys_read_boot TEXT;
ALTER TABLE local_lists ADD COLUMN keys_read_at TEXT;
-- Lists confirmed before these columns held the card table's version they name.
UPDATE local_lists SET list_version = version;

-- Signed firmware manifests (docs/sync-protocol.md, "Firmware"): the manifest an offered
-- image was verified against (NULL: an offer of the first format, never used for an
-- install), and whether the operator forced the offer past a newer version.
ALTER TABLE firmware_downloads ADD COLUMN manifest TEXT;
ALTER TABLE firmware_downloads ADD COLUMN forced INTEGER NOT NULL DEFAULT 0;

-- Installs the edge started on a charger with an image it verified, from the command
-- (or the edge's refusal to send it) to the charger's last report on it. `command_id`
-- is the UpdateFirmware/SignedUpdateFirmware sent, `cloud_command_id` the cloud's
-- command it carried out.
CREATE TABLE firmware_installs (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL REFERENCES chargers (id) ON DELETE CASCADE,
    image TEXT NOT NULL,
    version TEXT NOT NULL,
    forced INTEGER NOT NULL DEFAULT 0,
    cloud_command_id TEXT,
    command_id INTEGER REFERENCES commands (id),
    status TEXT NOT NULL CHECK (status IN ('refused', 'installing', 'installed', 'failed')),
    detail TEXT NOT NULL DEFAULT '',
    requested_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX firmware_installs_by_command ON firmware_installs (command_id);
CREATE INDEX firmware_installs_by_charger ON firmware_installs (charger_id, id);

-- The version a charger runs because this edge installed it there (its `Installed`
-- report on an install above); an `Installed` for any other command removes the row.
CREATE TABLE installed_firmware (
    charger_id TEXT PRIMARY KEY REFERENCES chargers (id) ON DELETE CASCADE,
    version TEXT NOT NULL,
    image TEXT NOT NULL,
    forced INTEGER NOT NULL DEFAULT 0,
    installed_at TEXT NOT NULL
);

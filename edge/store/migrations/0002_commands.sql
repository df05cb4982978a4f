-- Calls from the edge to chargers, and the state a central system keeps from them.

CREATE TABLE commands (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL,
    action TEXT NOT NULL,
    request TEXT NOT NULL,
    -- sent: waiting; answered: CALLRESULT in `response`; callerror: the charger's error;
    -- timeout: no answer in time; offline: the charger was not connected.
    outcome TEXT NOT NULL DEFAULT 'sent'
        CHECK (outcome IN ('sent', 'answered', 'callerror', 'timeout', 'offline')),
    response TEXT,
    error_code TEXT,
    error_description TEXT,
    requested_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX commands_by_charger ON commands (charger_id, id);

-- The charger's configuration as its last GetConfiguration reported it.
CREATE TABLE charger_configuration (
    charger_id TEXT NOT NULL REFERENCES chargers (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT,
    readonly INTEGER NOT NULL,
    reported_at TEXT NOT NULL,
    -- 'RebootRequired' after a ChangeConfiguration answered so.
    change_status TEXT,
    PRIMARY KEY (charger_id, key)
);

-- Availability the operator asked for, beside what the charger reports in
-- StatusNotification: 'Scheduled' waits for the connector's transaction to end.
CREATE TABLE availability_requests (
    charger_id TEXT NOT NULL REFERENCES chargers (id) ON DELETE CASCADE,
    connector_id INTEGER NOT NULL,
    requested TEXT NOT NULL CHECK (requested IN ('Operative', 'Inoperative')),
    answer TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    PRIMARY KEY (charger_id, connector_id)
);

CREATE TABLE reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    charger_id TEXT NOT NULL REFERENCES chargers (id),
    connector_id INTEGER NOT NULL,
    id_tag TEXT NOT NULL COLLATE NOCASE,
    parent_id_tag TEXT,
    expiry_date TEXT NOT NULL,
    -- requested -> active (Accepted) or rejected (Faulted/Occupied/Rejected/Unavailable);
    -- active -> used (a StartTransaction named it), cancelled or expired.
    status TEXT NOT NULL DEFAULT 'requested',
    answer TEXT,
    transaction_id INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Every change to the card table takes the next list version, so a charger at
-- version v needs exactly the cards changed after v (a differential update).
CREATE TABLE local_list_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO local_list_counter (id, version) VALUES (1, 0);
ALTER TABLE id_tags ADD COLUMN list_version INTEGER NOT NULL DEFAULT 0;
CREATE TRIGGER id_tags_version_on_insert AFTER INSERT ON id_tags BEGIN
    UPDATE local_list_counter SET version = version + 1;
    UPDATE id_tags SET list_version = (SELECT version FROM local_list_counter)
        WHERE id_tag = NEW.id_tag;
END;
CREATE TRIGGER id_tags_version_on_update AFTER UPDATE OF status, expiry_date, parent_id_tag
    ON id_tags BEGIN
    UPDATE local_list_counter SET version = version + 1;
    UPDATE id_tags SET list_version = (SELECT version FROM local_list_counter)
        WHERE id_tag = NEW.id_tag;
END;

CREATE TABLE local_lists (
    charger_id TEXT PRIMARY KEY REFERENCES chargers (id) ON DELETE CASCADE,
    -- The version the charger confirmed (SendLocalList Accepted, or GetLocalListVersion).
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE charging_profiles (
    charger_id TEXT NOT NULL REFERENCES chargers (id) ON DELETE CASCADE,
    profile_id INTEGER NOT NULL,
    connector_id INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    stack_level INTEGER NOT NULL,
    transaction_id INTEGER,
    profile TEXT NOT NULL,
    -- 'operator' (sent through the API) or 'site_limit' (made by the edge).
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (charger_id, profile_id)
);

CREATE TABLE installed_certificates (
    charger_id TEXT NOT NULL REFERENCES chargers (id) ON DELETE CASCADE,
    certificate_type TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    hash_data TEXT NOT NULL,
    reported_at TEXT NOT NULL,
    PRIMARY KEY (charger_id, certificate_type, serial_number)
);

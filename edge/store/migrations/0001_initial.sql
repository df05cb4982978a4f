-- Times are UTC ISO-8601 text with milliseconds and a Z ("2026-01-31T12:00:00.000Z").
-- Where a charger reports a time, `charger_timestamp` keeps what it said (its
-- clock may be wrong) and `received_at` is the edge's own clock.
-- Energy is integer Wh.

CREATE TABLE chargers (
    id TEXT PRIMARY KEY,
    registration TEXT NOT NULL DEFAULT 'accepted'
        CHECK (registration IN ('accepted', 'pending', 'rejected')),
    vendor TEXT,
    model TEXT,
    serial_number TEXT,
    charge_box_serial_number TEXT,
    firmware_version TEXT,
    iccid TEXT,
    imsi TEXT,
    meter_type TEXT,
    meter_serial_number TEXT,
    connected INTEGER NOT NULL DEFAULT 0,
    connected_at TEXT,
    disconnected_at TEXT,
    last_seen_at TEXT,
    last_boot_at TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE connectors (
    charger_id TEXT NOT NULL REFERENCES chargers (id) ON DELETE CASCADE,
    connector_id INTEGER NOT NULL CHECK (connector_id >= 0),
    status TEXT NOT NULL,
    error_code TEXT NOT NULL,
    info TEXT,
    vendor_id TEXT,
    vendor_error_code TEXT,
    charger_timestamp TEXT,
    received_at TEXT NOT NULL,
    PRIMARY KEY (charger_id, connector_id)
);

CREATE TABLE status_history (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL REFERENCES chargers (id) ON DELETE CASCADE,
    connector_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT NOT NULL,
    info TEXT,
    vendor_id TEXT,
    vendor_error_code TEXT,
    charger_timestamp TEXT,
    received_at TEXT NOT NULL
);
CREATE INDEX status_history_by_connector ON status_history (charger_id, connector_id, id);

CREATE TABLE id_tags (
    -- OCPP idTags are case-insensitive (CiString20).
    id_tag TEXT PRIMARY KEY COLLATE NOCASE CHECK (length(id_tag) BETWEEN 1 AND 20),
    status TEXT NOT NULL DEFAULT 'Accepted'
        CHECK (status IN ('Accepted', 'Blocked', 'Expired', 'Invalid')),
    expiry_date TEXT,
    parent_id_tag TEXT,
    label TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- `id` is the transactionId given to the charger: AUTOINCREMENT never reuses one.
CREATE TABLE transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    charger_id TEXT NOT NULL REFERENCES chargers (id),
    connector_id INTEGER NOT NULL,
    id_tag TEXT NOT NULL COLLATE NOCASE,
    id_tag_status TEXT NOT NULL,
    reservation_id INTEGER,
    meter_start_wh INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    start_received_at TEXT NOT NULL,
    meter_stop_wh INTEGER,
    stopped_at TEXT,
    stop_received_at TEXT,
    stop_id_tag TEXT,
    stop_reason TEXT,
    -- 1 when the edge closed it (a new start on its connector): a later real stop wins.
    closed_by_edge INTEGER NOT NULL DEFAULT 0,
    last_meter_wh INTEGER,
    last_meter_at TEXT
);
CREATE INDEX transactions_open ON transactions (charger_id, connector_id) WHERE stopped_at IS NULL;
CREATE INDEX transactions_by_id_tag ON transactions (id_tag) WHERE stopped_at IS NULL;

-- A StopTransaction naming a transaction the edge never started (lost state,
-- another CSMS): recorded as the charger sent it, never silently dropped.
CREATE TABLE unmatched_stops (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL REFERENCES chargers (id),
    transaction_id INTEGER NOT NULL,
    id_tag TEXT,
    meter_stop_wh INTEGER NOT NULL,
    charger_timestamp TEXT NOT NULL,
    reason TEXT,
    transaction_data TEXT,
    received_at TEXT NOT NULL
);

CREATE TABLE meter_values (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL,
    connector_id INTEGER NOT NULL,
    transaction_id INTEGER REFERENCES transactions (id),
    -- The transactionId the charger sent when the edge does not know it.
    unknown_transaction_id INTEGER,
    charger_timestamp TEXT NOT NULL,
    received_at TEXT NOT NULL,
    measurand TEXT NOT NULL,
    phase TEXT,
    unit TEXT NOT NULL,
    context TEXT NOT NULL,
    location TEXT,
    format TEXT NOT NULL,
    value TEXT NOT NULL,
    -- Value in the measurand's base unit (Wh, varh, W, var, A, V, Hz, Celsius, Percent).
    normalized REAL,
    -- Integer Wh for Energy.* measurands, else NULL.
    wh INTEGER
);
CREATE INDEX meter_values_by_transaction ON meter_values (transaction_id) WHERE transaction_id IS NOT NULL;

CREATE TABLE ocpp_messages (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    message_type INTEGER,
    -- The OCPP-J uniqueId: a CALL and its CALLRESULT/CALLERROR share it.
    unique_id TEXT,
    action TEXT,
    payload TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
-- No index on charger_id: keeping one up to date was most of the log's cost per frame
-- (measured in bench/ocpp_throughput.py). `ocpp-edge log --charger` reads backwards
-- from the newest row instead, which is quick for any charger that talks.

CREATE TABLE data_transfers (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL REFERENCES chargers (id),
    vendor_id TEXT NOT NULL,
    message_id TEXT,
    data TEXT,
    response_status TEXT NOT NULL,
    response_data TEXT,
    received_at TEXT NOT NULL
);

-- FirmwareStatusNotification, DiagnosticsStatusNotification,
-- SignedFirmwareStatusNotification and LogStatusNotification, in one history.
CREATE TABLE charger_job_status (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL REFERENCES chargers (id),
    kind TEXT NOT NULL CHECK (kind IN ('firmware', 'diagnostics', 'signed_firmware', 'log')),
    status TEXT NOT NULL,
    request_id INTEGER,
    received_at TEXT NOT NULL
);
CREATE INDEX charger_job_status_by_charger ON charger_job_status (charger_id, kind, id);

CREATE TABLE security_events (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL REFERENCES chargers (id),
    type TEXT NOT NULL,
    tech_info TEXT,
    charger_timestamp TEXT NOT NULL,
    received_at TEXT NOT NULL
);

CREATE TABLE certificate_requests (
    id INTEGER PRIMARY KEY,
    charger_id TEXT NOT NULL REFERENCES chargers (id),
    csr TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'received',
    received_at TEXT NOT NULL
);

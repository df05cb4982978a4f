-- Files the edge serves to chargers (firmware) and receives from them (diagnostics, logs).

CREATE TABLE firmware_images (
    name TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    added_at TEXT NOT NULL
);

CREATE TABLE received_files (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    via TEXT NOT NULL CHECK (via IN ('http', 'ftp')),
    received_at TEXT NOT NULL
);

-- Which command a status notification reports on (the latest of its kind).
ALTER TABLE charger_job_status ADD COLUMN command_id INTEGER REFERENCES commands (id);

-- Firmware images the cloud offered, one row per image name (its latest offer): what is
-- being fetched and how far, and what was verified or refused and why. The bytes
-- themselves are in a partial file beside the served images until they are verified.
CREATE TABLE firmware_downloads (
    image TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    size INTEGER NOT NULL CHECK (size > 0),
    sha256 TEXT NOT NULL,
    signature TEXT NOT NULL,
    chunk_size INTEGER NOT NULL CHECK (chunk_size > 0),
    status TEXT NOT NULL CHECK (status IN ('downloading', 'verified', 'rejected')),
    bytes_received INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '',
    offered_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

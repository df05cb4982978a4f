-- Which charger uploaded a file: uploads live in a folder per charger (edge/files/uploads.py).
-- Files received before this are in uploads/ itself and have no charger.
ALTER TABLE received_files ADD COLUMN charger_id TEXT;
CREATE INDEX received_files_by_charger ON received_files (charger_id, received_at);

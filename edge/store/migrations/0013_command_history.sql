-- Commands older than `[store] command_history_days` are deleted hourly, oldest first:
-- these indexes find them, and what still points at one, without reading whole tables.
CREATE INDEX commands_by_requested_at ON commands (requested_at);
CREATE INDEX charger_job_status_by_command ON charger_job_status (command_id)
    WHERE command_id IS NOT NULL;

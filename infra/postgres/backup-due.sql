-- Run by backup-schedule.sh with :'info' (`pgbackrest info --output=json`), :repository_bytes,
-- :full_hours, :diff_hours and :schema (the app's, where the migration made the table).
-- Records the newest backup of each kind and the repository's size in backup_status, then
-- prints the backup that is due: full, diff, or nothing.
WITH backups AS (
    SELECT backup ->> 'type' AS kind,
           backup ->> 'label' AS label,
           to_timestamp((backup -> 'timestamp' ->> 'stop')::bigint) AS stopped_at,
           (backup -> 'info' -> 'repository' ->> 'delta')::bigint AS bytes
    FROM json_array_elements((:'info'::json) -> 0 -> 'backup') AS backup
),
newest AS (
    SELECT DISTINCT ON (kind) kind, label, stopped_at, bytes
    FROM backups ORDER BY kind, stopped_at DESC
),
rows AS (
    SELECT kind, label, stopped_at, bytes FROM newest
    UNION ALL
    SELECT 'repository', NULL, NULL, :repository_bytes::bigint
)
INSERT INTO :"schema".backup_status (kind, label, stopped_at, bytes, updated_at)
SELECT kind, label, stopped_at, bytes, now() FROM rows
ON CONFLICT (kind) DO UPDATE
SET label = excluded.label, stopped_at = excluded.stopped_at, bytes = excluded.bytes,
    updated_at = excluded.updated_at;

SELECT CASE
    WHEN coalesce(max(stopped_at) FILTER (WHERE kind = 'full'), '-infinity')
         < now() - make_interval(hours => :full_hours) THEN 'full'
    WHEN max(stopped_at) FILTER (WHERE kind <> 'repository')
         < now() - make_interval(hours => :diff_hours) THEN 'diff'
    ELSE ''
END
FROM :"schema".backup_status;

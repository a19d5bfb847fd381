-- Undo 0004 (yoyo rollback): the backlog query then reads the table itself.
DROP INDEX webhook_failures_event_failed_at_idx;

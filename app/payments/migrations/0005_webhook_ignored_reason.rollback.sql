-- Undo 0005 (yoyo rollback): the reasons stay in the audit log (admin.webhook_ignored).
ALTER TABLE stripe_events DROP COLUMN ignored_reason;

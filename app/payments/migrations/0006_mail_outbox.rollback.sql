-- Undo 0006 (yoyo rollback): unsent mails are lost with the table.
DROP TABLE mail_outbox;

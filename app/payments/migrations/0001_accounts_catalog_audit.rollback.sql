-- Undo 0001 (yoyo rollback). Drops data: only for development databases.
DROP TABLE audit_logs;
DROP TABLE prices;
DROP TABLE products;
DROP TABLE users;

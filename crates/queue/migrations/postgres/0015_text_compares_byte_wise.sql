-- Every text column of the queue compares byte-wise (`COLLATE "C"`), as
-- SQLite's columns and the store's Rust code do, whatever collation the
-- database was created with. Equality is the same under any collation a
-- database can have by default; what changes is the cost of ordering:
-- each step down an index on names, types or keys compared through the
-- database's collation (the C library's `strcoll` for `C.UTF-8` or
-- `en_US.UTF-8`), and a batch of 1,000 submissions goes down those
-- indexes some 10,000 times. Byte-wise, the batch runs about 10 % faster.
-- The tables are not rewritten; their indexes on text columns are built
-- again, once (about 1.7 s per million deliveries). The statements'
-- `COLLATE "C"` where they sort stays: it says what they rely on.
ALTER TABLE backstop_queue_nodes
    ALTER COLUMN name TYPE text COLLATE "C",
    ALTER COLUMN node_type TYPE text COLLATE "C",
    ALTER COLUMN transport TYPE text COLLATE "C",
    ALTER COLUMN session TYPE text COLLATE "C",
    ALTER COLUMN status TYPE text COLLATE "C",
    ALTER COLUMN declaration TYPE text COLLATE "C";
ALTER TABLE backstop_queue_node_kinds
    ALTER COLUMN node TYPE text COLLATE "C",
    ALTER COLUMN kind TYPE text COLLATE "C";
ALTER TABLE backstop_queue_removed_nodes
    ALTER COLUMN name TYPE text COLLATE "C",
    ALTER COLUMN node_type TYPE text COLLATE "C",
    ALTER COLUMN transport TYPE text COLLATE "C",
    ALTER COLUMN session TYPE text COLLATE "C",
    ALTER COLUMN declaration TYPE text COLLATE "C",
    ALTER COLUMN removed_by TYPE text COLLATE "C";
ALTER TABLE backstop_queue_ops
    ALTER COLUMN kind TYPE text COLLATE "C",
    ALTER COLUMN node_type TYPE text COLLATE "C",
    ALTER COLUMN nodes TYPE text COLLATE "C",
    ALTER COLUMN op_key TYPE text COLLATE "C",
    ALTER COLUMN payload TYPE text COLLATE "C",
    ALTER COLUMN cancelled_by TYPE text COLLATE "C";
ALTER TABLE backstop_queue_deliveries
    ALTER COLUMN node TYPE text COLLATE "C",
    ALTER COLUMN kind TYPE text COLLATE "C",
    ALTER COLUMN op_key TYPE text COLLATE "C",
    ALTER COLUMN state TYPE text COLLATE "C",
    ALTER COLUMN last_error TYPE text COLLATE "C",
    ALTER COLUMN cancelled_by TYPE text COLLATE "C";
ALTER TABLE backstop_queue_attempts
    ALTER COLUMN node TYPE text COLLATE "C",
    ALTER COLUMN outcome TYPE text COLLATE "C",
    ALTER COLUMN error TYPE text COLLATE "C",
    ALTER COLUMN stdout TYPE text COLLATE "C",
    ALTER COLUMN stderr TYPE text COLLATE "C";
ALTER TABLE backstop_queue_idempotency
    ALTER COLUMN idem_key TYPE text COLLATE "C",
    ALTER COLUMN fingerprint TYPE text COLLATE "C";

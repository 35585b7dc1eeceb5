-- Cancellation, node removal, attempt records and per-operation settings.
-- The deliveries' table is made again: one delivery per (operation, node)
-- stays unique among the deliveries of nodes not removed, so that a new
-- node under the name of a removed one gets the live operations its
-- predecessor had (SQLite cannot drop a table's UNIQUE constraint). Ids
-- keep counting from where they were.
CREATE TABLE backstop_queue_deliveries_7 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        op BIGINT NOT NULL,
        node TEXT NOT NULL,
        kind TEXT NOT NULL,
        op_key TEXT,
        state TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        failures BIGINT NOT NULL,
        tries BIGINT NOT NULL,
        next_at_ms BIGINT NOT NULL,
        lease_until_ms BIGINT,
        last_error TEXT,
        created_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        finished_ms BIGINT,
        requeued_attempt BIGINT NOT NULL DEFAULT 0,
        cancelled_by TEXT,
        cancelled_ms BIGINT,
        node_removed_ms BIGINT
    );
    INSERT INTO backstop_queue_deliveries_7 (id, op, node, kind, op_key, state, attempt,
        failures, tries, next_at_ms, lease_until_ms, last_error, created_ms, updated_ms,
        finished_ms, requeued_attempt)
    SELECT id, op, node, kind, op_key, state, attempt, failures, tries, next_at_ms,
        lease_until_ms, last_error, created_ms, updated_ms, finished_ms, requeued_attempt
    FROM backstop_queue_deliveries;
    DELETE FROM sqlite_sequence WHERE name = 'backstop_queue_deliveries_7';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'backstop_queue_deliveries_7', seq FROM sqlite_sequence
        WHERE name = 'backstop_queue_deliveries';
    DROP TABLE backstop_queue_deliveries;
    ALTER TABLE backstop_queue_deliveries_7 RENAME TO backstop_queue_deliveries;
    CREATE UNIQUE INDEX backstop_queue_op_node ON backstop_queue_deliveries (op, node)
        WHERE node_removed_ms IS NULL;
    CREATE INDEX backstop_queue_due ON backstop_queue_deliveries (node, next_at_ms)
        WHERE state = 'pending';
    CREATE INDEX backstop_queue_in_flight ON backstop_queue_deliveries (node, op_key)
        WHERE state = 'in_flight';
    CREATE INDEX backstop_queue_dead ON backstop_queue_deliveries (node)
        WHERE state = 'dead';
    CREATE INDEX backstop_queue_node_key ON backstop_queue_deliveries (node, op_key, op);
    CREATE INDEX backstop_queue_finished ON backstop_queue_deliveries (finished_ms)
        WHERE state IN ('done', 'superseded', 'cancelled');
    CREATE INDEX backstop_queue_op ON backstop_queue_deliveries (op);
    ALTER TABLE backstop_queue_ops ADD COLUMN timeout_ms BIGINT;
    ALTER TABLE backstop_queue_ops ADD COLUMN max_failures BIGINT;
    ALTER TABLE backstop_queue_ops ADD COLUMN base_delay_ms BIGINT;
    ALTER TABLE backstop_queue_ops ADD COLUMN max_delay_ms BIGINT;
    ALTER TABLE backstop_queue_ops ADD COLUMN cancelled_by TEXT;
    ALTER TABLE backstop_queue_ops ADD COLUMN cancelled_ms BIGINT;
    ALTER TABLE backstop_queue_nodes ADD COLUMN declaration TEXT;
    CREATE TABLE backstop_queue_removed_nodes (
        name TEXT PRIMARY KEY NOT NULL,
        node_type TEXT NOT NULL,
        transport TEXT NOT NULL,
        session TEXT NOT NULL,
        declaration TEXT,
        removed_by TEXT NOT NULL,
        removed_ms BIGINT NOT NULL
    );
    CREATE TABLE backstop_queue_attempts (
        delivery BIGINT NOT NULL,
        attempt BIGINT NOT NULL,
        op BIGINT NOT NULL,
        node TEXT NOT NULL,
        outcome TEXT NOT NULL,
        error TEXT,
        stdout TEXT NOT NULL,
        stderr TEXT NOT NULL,
        finished_ms BIGINT NOT NULL,
        PRIMARY KEY (delivery, attempt)
    );
    CREATE INDEX backstop_queue_attempts_op ON backstop_queue_attempts (op)

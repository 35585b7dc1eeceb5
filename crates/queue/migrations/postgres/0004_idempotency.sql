CREATE TABLE backstop_queue_idempotency (
        idem_key TEXT PRIMARY KEY NOT NULL,
        fingerprint TEXT NOT NULL,
        op BIGINT,
        deliveries BIGINT NOT NULL,
        superseded BIGINT NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE INDEX backstop_queue_idempotency_op ON backstop_queue_idempotency (op);
    CREATE INDEX backstop_queue_idempotency_age ON backstop_queue_idempotency (created_ms)
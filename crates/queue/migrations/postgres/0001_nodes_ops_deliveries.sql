CREATE TABLE backstop_queue_nodes (
        name TEXT PRIMARY KEY NOT NULL,
        node_type TEXT NOT NULL,
        capacity BIGINT NOT NULL,
        transport TEXT NOT NULL,
        session TEXT NOT NULL,
        status TEXT NOT NULL,
        drained BIGINT NOT NULL,
        last_heartbeat_ms BIGINT,
        registered_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
    CREATE TABLE backstop_queue_node_kinds (
        node TEXT NOT NULL,
        kind TEXT NOT NULL,
        PRIMARY KEY (node, kind)
    );
    CREATE TABLE backstop_queue_ops (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        node_type TEXT,
        nodes TEXT,
        present_only BIGINT NOT NULL,
        op_key TEXT,
        payload TEXT NOT NULL,
        live BIGINT NOT NULL,
        created_ms BIGINT NOT NULL
    );
    CREATE INDEX backstop_queue_ops_live ON backstop_queue_ops (node_type, op_key) WHERE live = 1;
    CREATE TABLE backstop_queue_deliveries (
        id BIGSERIAL PRIMARY KEY,
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
        UNIQUE (op, node)
    );
    CREATE INDEX backstop_queue_due ON backstop_queue_deliveries (node, next_at_ms)
        WHERE state = 'pending';
    CREATE INDEX backstop_queue_in_flight ON backstop_queue_deliveries (node, op_key)
        WHERE state = 'in_flight';
    CREATE INDEX backstop_queue_dead ON backstop_queue_deliveries (node)
        WHERE state = 'dead';
    CREATE INDEX backstop_queue_node_key ON backstop_queue_deliveries (node, op_key, op)
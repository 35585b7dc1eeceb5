-- Cancellation, node removal, attempt records and per-operation settings
-- (see SQLite's 0007). One delivery per (operation, node) stays unique
-- among the deliveries of nodes not removed, so that a new node under the
-- name of a removed one gets the live operations its predecessor had;
-- an index on the operation takes over the reads the constraint served.
-- The submission (0005) in its place, writing the operation's settings.
ALTER TABLE backstop_queue_deliveries ADD COLUMN cancelled_by TEXT,
    ADD COLUMN cancelled_ms BIGINT, ADD COLUMN node_removed_ms BIGINT;
ALTER TABLE backstop_queue_deliveries DROP CONSTRAINT backstop_queue_deliveries_op_node_key;
CREATE UNIQUE INDEX backstop_queue_op_node ON backstop_queue_deliveries (op, node)
    WHERE node_removed_ms IS NULL;
CREATE INDEX backstop_queue_op ON backstop_queue_deliveries (op);
DROP INDEX backstop_queue_finished;
CREATE INDEX backstop_queue_finished ON backstop_queue_deliveries (finished_ms)
    WHERE state IN ('done', 'superseded', 'cancelled');
ALTER TABLE backstop_queue_ops ADD COLUMN timeout_ms BIGINT, ADD COLUMN max_failures BIGINT,
    ADD COLUMN base_delay_ms BIGINT, ADD COLUMN max_delay_ms BIGINT,
    ADD COLUMN cancelled_by TEXT, ADD COLUMN cancelled_ms BIGINT;
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
CREATE INDEX backstop_queue_attempts_op ON backstop_queue_attempts (op);
DROP FUNCTION backstop_queue_submit(text, text, text[], bigint, text, text, bigint, bigint,
    integer, integer, text, text);
CREATE FUNCTION backstop_queue_submit(
    p_kind text, p_type text, p_nodes text[], p_present_only bigint, p_key text,
    p_payload text, p_live bigint, p_now bigint, p_type_lock integer, p_key_lock integer,
    p_idem_key text, p_fingerprint text, p_timeout_ms bigint, p_max_failures bigint,
    p_base_delay_ms bigint, p_max_delay_ms bigint)
RETURNS TABLE (id bigint, kind text, node_type text, nodes text, present_only bigint,
    op_key text, payload text, live bigint, created_ms bigint, timeout_ms bigint,
    max_failures bigint, base_delay_ms bigint, max_delay_ms bigint, cancelled_by text,
    cancelled_ms bigint, superseded bigint, delivered bigint, problem text, repeated boolean)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    v_targets text[];
    v_handling text[];
    v_name text;
    v_id bigint;
    v_superseded bigint := 0;
    v_delivered bigint := 0;
    v_claimed bigint := 0;
    v_problem text;
    v_fingerprint text;
BEGIN
    IF p_type IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock_shared(p_type_lock, hashtext(p_type));
    END IF;
    IF p_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(p_key_lock, hashtext(p_key));
    END IF;
    IF p_idem_key IS NOT NULL THEN
        INSERT INTO backstop_queue_idempotency AS k (idem_key, fingerprint, op, deliveries,
            superseded, created_ms)
        VALUES (p_idem_key, p_fingerprint, NULL, 0, 0, p_now)
        ON CONFLICT (idem_key) DO NOTHING;
        GET DIAGNOSTICS v_claimed = ROW_COUNT;
        IF v_claimed = 0 THEN
            SELECT k.fingerprint, k.op, k.deliveries, k.superseded
            INTO v_fingerprint, v_id, v_delivered, v_superseded
            FROM backstop_queue_idempotency k WHERE k.idem_key = p_idem_key;
            IF v_fingerprint IS DISTINCT FROM p_fingerprint THEN
                RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text,
                    NULL::bigint, NULL::text, NULL::text, NULL::bigint, NULL::bigint,
                    NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint, NULL::text,
                    NULL::bigint, NULL::bigint, NULL::bigint, 'key_reused:' || coalesce(v_id, 0),
                    false;
                RETURN;
            END IF;
            RETURN QUERY SELECT o.id, o.kind, o.node_type, o.nodes, o.present_only, o.op_key,
                o.payload, o.live, o.created_ms, o.timeout_ms, o.max_failures, o.base_delay_ms,
                o.max_delay_ms, o.cancelled_by, o.cancelled_ms, v_superseded, v_delivered,
                NULL::text, true
            FROM backstop_queue_ops o WHERE o.id = v_id;
            RETURN;
        END IF;
    END IF;
    IF p_type IS NOT NULL THEN
        SELECT coalesce(array_agg(n.name ORDER BY n.name COLLATE "C"), '{}'),
               coalesce(array_agg(n.name ORDER BY n.name COLLATE "C") FILTER (
                   WHERE EXISTS (SELECT 1 FROM backstop_queue_node_kinds k
                                 WHERE k.node = n.name AND k.kind = p_kind)), '{}')
        INTO v_targets, v_handling
        FROM backstop_queue_nodes n WHERE n.node_type = p_type;
        IF cardinality(v_handling) = 0 THEN
            v_problem := 'no_handler';
        END IF;
    ELSE
        SELECT u.name INTO v_name FROM unnest(p_nodes) AS u(name)
        WHERE NOT EXISTS (SELECT 1 FROM backstop_queue_nodes n WHERE n.name = u.name)
        ORDER BY u.name COLLATE "C" LIMIT 1;
        IF v_name IS NOT NULL THEN
            v_problem := 'unknown_node:' || v_name;
        ELSE
            SELECT u.name INTO v_name FROM unnest(p_nodes) AS u(name)
            WHERE NOT EXISTS (SELECT 1 FROM backstop_queue_node_kinds k
                              WHERE k.node = u.name AND k.kind = p_kind)
            ORDER BY u.name COLLATE "C" LIMIT 1;
            IF v_name IS NOT NULL THEN
                v_problem := 'unknown_kind:' || v_name;
            END IF;
        END IF;
        v_targets := p_nodes;
        v_handling := p_nodes;
    END IF;
    IF v_problem IS NOT NULL THEN
        IF v_claimed > 0 THEN
            DELETE FROM backstop_queue_idempotency WHERE idem_key = p_idem_key;
        END IF;
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint,
            NULL::text, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint,
            NULL::bigint, NULL::bigint, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint,
            v_problem, false;
        RETURN;
    END IF;
    INSERT INTO backstop_queue_ops (kind, node_type, nodes, present_only, op_key, payload,
        live, created_ms, timeout_ms, max_failures, base_delay_ms, max_delay_ms)
    VALUES (p_kind, p_type, array_to_string(p_nodes, ','), p_present_only, p_key, p_payload,
        p_live, p_now, p_timeout_ms, p_max_failures, p_base_delay_ms, p_max_delay_ms)
    RETURNING backstop_queue_ops.id INTO v_id;
    IF p_key IS NOT NULL THEN
        IF p_type IS NOT NULL THEN
            UPDATE backstop_queue_ops SET live = 0
            WHERE live = 1 AND node_type = p_type AND op_key = p_key AND id < v_id;
        END IF;
        UPDATE backstop_queue_deliveries SET state = 'superseded', finished_ms = p_now,
            updated_ms = p_now, lease_until_ms = NULL
        WHERE node = ANY(v_targets) AND op_key = p_key AND op < v_id
          AND state IN ('pending', 'dead');
        GET DIAGNOSTICS v_superseded = ROW_COUNT;
    END IF;
    INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt, failures,
        tries, next_at_ms, created_ms, updated_ms)
    SELECT v_id, h, p_kind, p_key, 'pending', 0, 0, 0, p_now, p_now, p_now
    FROM unnest(v_handling) AS h;
    GET DIAGNOSTICS v_delivered = ROW_COUNT;
    IF v_claimed > 0 THEN
        UPDATE backstop_queue_idempotency SET op = v_id, deliveries = v_delivered,
            superseded = v_superseded
        WHERE idem_key = p_idem_key;
    END IF;
    RETURN QUERY SELECT o.id, o.kind, o.node_type, o.nodes, o.present_only, o.op_key,
        o.payload, o.live, o.created_ms, o.timeout_ms, o.max_failures, o.base_delay_ms,
        o.max_delay_ms, o.cancelled_by, o.cancelled_ms, v_superseded, v_delivered, NULL::text,
        false
    FROM backstop_queue_ops o WHERE o.id = v_id;
END
$fn$
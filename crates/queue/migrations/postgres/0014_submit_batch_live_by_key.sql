-- The batch submission of 0012 with the end of older live operations
-- looked up key by key whatever the planner guesses, as the supersede of
-- what waited already was. Left to the planner, a store whose tables had
-- no statistics (or old ones) had every batch read all its live
-- operations of the batch's types into a hash to join the batch's keys
-- against: 15 ms of a 50 ms batch at 60,000 live operations, and growing
-- with them. Nothing else changes.
CREATE OR REPLACE FUNCTION backstop_queue_submit_batch(
    p_kind text[], p_type text[], p_nodes text[], p_present_only bigint[], p_key text[],
    p_payload text[], p_live bigint[], p_idem_key text[], p_fingerprint text[],
    p_timeout_ms bigint[], p_max_failures bigint[], p_base_delay_ms bigint[],
    p_max_delay_ms bigint[], p_now bigint, p_type_lock integer, p_key_lock integer)
RETURNS TABLE (id bigint, kind text, node_type text, nodes text, present_only bigint,
    op_key text, payload text, live bigint, created_ms bigint, timeout_ms bigint,
    max_failures bigint, base_delay_ms bigint, max_delay_ms bigint, cancelled_by text,
    cancelled_ms bigint, superseded bigint, delivered bigint, problem text, repeated boolean)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    v_one_by_one boolean;
    v_ids regclass := pg_get_serial_sequence('backstop_queue_ops', 'id')::regclass;
BEGIN
    SELECT EXISTS (SELECT 1 FROM unnest(p_idem_key) AS k WHERE k IS NOT NULL)
        -- A type with no node handling the kind.
        OR EXISTS (SELECT 1 FROM unnest(p_kind, p_type) AS u(kind, node_type)
                   WHERE u.node_type IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM backstop_queue_nodes n
                       JOIN backstop_queue_node_kinds k ON k.node = n.name
                       WHERE n.node_type = u.node_type AND k.kind = u.kind))
        -- A named node unknown, or not handling the kind.
        OR EXISTS (SELECT 1 FROM unnest(p_kind, p_type, p_nodes) AS u(kind, node_type, nodes)
                   CROSS JOIN LATERAL unnest(string_to_array(u.nodes, ',')) AS t(name)
                   WHERE u.node_type IS NULL AND NOT EXISTS (
                       SELECT 1 FROM backstop_queue_node_kinds k
                       WHERE k.node = t.name AND k.kind = u.kind))
    INTO v_one_by_one;
    IF v_one_by_one THEN
        FOR i IN 1 .. coalesce(cardinality(p_kind), 0) LOOP
            RETURN QUERY SELECT * FROM backstop_queue_submit(p_kind[i], p_type[i],
                string_to_array(p_nodes[i], ','), p_present_only[i], p_key[i], p_payload[i],
                p_live[i], p_now, p_type_lock, p_key_lock, p_idem_key[i], p_fingerprint[i],
                p_timeout_ms[i], p_max_failures[i], p_base_delay_ms[i], p_max_delay_ms[i]);
        END LOOP;
        RETURN;
    END IF;
    RETURN QUERY
    WITH u AS (
        -- The batch with its ids, taken in batch order.
        SELECT nextval(v_ids) AS id, b.*
        FROM (SELECT * FROM unnest(p_kind, p_type, p_nodes, p_present_only, p_key, p_payload,
                  p_live, p_timeout_ms, p_max_failures, p_base_delay_ms, p_max_delay_ms)
                  WITH ORDINALITY AS b(kind, node_type, nodes, present_only, op_key, payload,
                      live, timeout_ms, max_failures, base_delay_ms, max_delay_ms, ord)
              ORDER BY b.ord) b
    ),
    t AS (
        -- Every target node of each operation and whether it handles the
        -- kind: a type's nodes (in name order, `place` 0), named nodes as
        -- named (`place` their position).
        SELECT u.ord, u.id, u.kind, u.op_key, n.name AS node, k.node IS NOT NULL AS handles,
               0::bigint AS place
        FROM u JOIN backstop_queue_nodes n ON n.node_type = u.node_type
        LEFT JOIN backstop_queue_node_kinds k ON k.node = n.name AND k.kind = u.kind
        UNION ALL
        SELECT u.ord, u.id, u.kind, u.op_key, t.name, true, t.place
        FROM u CROSS JOIN LATERAL unnest(string_to_array(u.nodes, ','))
            WITH ORDINALITY AS t(name, place)
        WHERE u.node_type IS NULL
    ),
    c AS (
        -- Each target with, for a keyed one, the next operation of the
        -- batch with the same key on the same node (which supersedes this
        -- one's delivery there), and whether it is the first of its key
        -- there (which supersedes what waited before the batch).
        SELECT t.*,
               CASE WHEN t.op_key IS NOT NULL THEN lead(t.ord) OVER w END AS next_ord,
               t.op_key IS NOT NULL AND row_number() OVER w = 1 AS first_of_key
        FROM t
        -- Partitioned byte-wise: the same groups as the database's
        -- collation would make, without comparing through it.
        WINDOW w AS (PARTITION BY t.op_key COLLATE "C", t.node COLLATE "C" ORDER BY t.ord)
    ),
    ops AS (
        -- Live until a later operation of the batch takes its type and key.
        INSERT INTO backstop_queue_ops (id, kind, node_type, nodes, present_only, op_key,
            payload, live, created_ms, timeout_ms, max_failures, base_delay_ms, max_delay_ms)
        SELECT u.id, u.kind, u.node_type, u.nodes, u.present_only, u.op_key, u.payload,
            CASE WHEN u.node_type IS NOT NULL AND u.op_key IS NOT NULL
                      AND lead(u.ord) OVER (PARTITION BY u.node_type COLLATE "C",
                                                u.op_key COLLATE "C" ORDER BY u.ord)
                          IS NOT NULL
                 THEN 0 ELSE u.live END,
            p_now, u.timeout_ms, u.max_failures, u.base_delay_ms, u.max_delay_ms
        FROM u
    ),
    ended AS (
        -- The live operations before the batch whose type and key it takes.
        UPDATE backstop_queue_ops o SET live = 0
        FROM (SELECT DISTINCT u.node_type, u.op_key FROM u
              WHERE u.node_type IS NOT NULL AND u.op_key IS NOT NULL) k
        -- Looked up key by key in the index of live operations (`OFFSET 0`
        -- keeps the lookup from being flattened into a read of every live
        -- operation), so the cost follows the batch, not the store.
        CROSS JOIN LATERAL (SELECT x.id FROM backstop_queue_ops x
                            WHERE x.live = 1 AND x.node_type = k.node_type
                              AND x.op_key = k.op_key
                            OFFSET 0) x
        WHERE o.id = x.id
    ),
    gone AS (
        -- What waited before the batch, superseded by the first operation
        -- of its key to target its node.
        UPDATE backstop_queue_deliveries d SET state = 'superseded', finished_ms = p_now,
            updated_ms = p_now, lease_until_ms = NULL
        FROM c
        -- Looked up key by key in the index of keys (`OFFSET 0` keeps the
        -- lookup from being flattened into a scan of every delivery that
        -- waits), so the cost follows the batch, not the backlog.
        CROSS JOIN LATERAL (SELECT x.id FROM backstop_queue_deliveries x
                            WHERE x.node = c.node AND x.op_key = c.op_key AND x.op < c.id
                              AND x.state IN ('pending', 'dead')
                            OFFSET 0) x
        WHERE c.first_of_key AND d.id = x.id
        RETURNING c.ord
    ),
    made AS (
        -- The batch's deliveries, in batch order; superseded at once where
        -- a later operation of the batch with the same key targets the node.
        INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt,
            failures, tries, next_at_ms, created_ms, updated_ms, finished_ms)
        SELECT c.id, c.node, c.kind, c.op_key,
            CASE WHEN c.next_ord IS NULL THEN 'pending' ELSE 'superseded' END, 0, 0, 0,
            p_now, p_now, p_now, CASE WHEN c.next_ord IS NULL THEN NULL ELSE p_now END
        FROM c
        WHERE c.handles
        ORDER BY c.ord, c.place, c.node COLLATE "C"
        RETURNING 1
    )
    SELECT u.id, u.kind, u.node_type, u.nodes, u.present_only, u.op_key, u.payload, u.live,
        p_now, u.timeout_ms, u.max_failures, u.base_delay_ms, u.max_delay_ms, NULL::text,
        NULL::bigint,
        coalesce(g.n, 0) + coalesce(s.n, 0), coalesce(m.n, 0), NULL::text, false
    FROM u
    LEFT JOIN (SELECT g.ord, count(*) AS n FROM gone g GROUP BY g.ord) g ON g.ord = u.ord
    LEFT JOIN (SELECT c.next_ord AS ord, count(*) AS n FROM c
               WHERE c.handles AND c.next_ord IS NOT NULL GROUP BY c.next_ord) s
        ON s.ord = u.ord
    LEFT JOIN (SELECT c.ord, count(*) AS n FROM c WHERE c.handles GROUP BY c.ord) m
        ON m.ord = u.ord
    ORDER BY u.ord;
END
$fn$

-- Submits an operation in one round trip (see Store::submit): takes
-- the type's lock shared and the key's alone, each statement after them
-- reading what was committed meanwhile; checks the target; and writes the
-- operation, the end of the older live one of its key, the deliveries it
-- supersedes and its own. A refused submission writes nothing and says
-- why in `problem`: `unknown_node:NAME`, `unknown_kind:NAME` (a named
-- node that does not handle the kind), or `no_handler`.
CREATE FUNCTION backstop_queue_submit(
    p_kind text, p_type text, p_nodes text[], p_present_only bigint, p_key text,
    p_payload text, p_live bigint, p_now bigint, p_type_lock integer, p_key_lock integer)
RETURNS TABLE (id bigint, kind text, node_type text, nodes text, present_only bigint,
    op_key text, payload text, live bigint, created_ms bigint, superseded bigint,
    delivered bigint, problem text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    v_targets text[];
    v_handling text[];
    v_name text;
    v_id bigint;
    v_superseded bigint := 0;
    v_delivered bigint := 0;
BEGIN
    IF p_type IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock_shared(p_type_lock, hashtext(p_type));
    END IF;
    IF p_key IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(p_key_lock, hashtext(p_key));
    END IF;
    IF p_type IS NOT NULL THEN
        SELECT coalesce(array_agg(n.name ORDER BY n.name COLLATE "C"), '{}'),
               coalesce(array_agg(n.name ORDER BY n.name COLLATE "C") FILTER (
                   WHERE EXISTS (SELECT 1 FROM backstop_queue_node_kinds k
                                 WHERE k.node = n.name AND k.kind = p_kind)), '{}')
        INTO v_targets, v_handling
        FROM backstop_queue_nodes n WHERE n.node_type = p_type;
        IF cardinality(v_handling) = 0 THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint,
                NULL::text, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint,
                'no_handler';
            RETURN;
        END IF;
    ELSE
        SELECT u.name INTO v_name FROM unnest(p_nodes) AS u(name)
        WHERE NOT EXISTS (SELECT 1 FROM backstop_queue_nodes n WHERE n.name = u.name)
        ORDER BY u.name COLLATE "C" LIMIT 1;
        IF v_name IS NOT NULL THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint,
                NULL::text, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint,
                'unknown_node:' || v_name;
            RETURN;
        END IF;
        SELECT u.name INTO v_name FROM unnest(p_nodes) AS u(name)
        WHERE NOT EXISTS (SELECT 1 FROM backstop_queue_node_kinds k
                          WHERE k.node = u.name AND k.kind = p_kind)
        ORDER BY u.name COLLATE "C" LIMIT 1;
        IF v_name IS NOT NULL THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::text, NULL::text, NULL::bigint,
                NULL::text, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint,
                'unknown_kind:' || v_name;
            RETURN;
        END IF;
        v_targets := p_nodes;
        v_handling := p_nodes;
    END IF;
    INSERT INTO backstop_queue_ops (kind, node_type, nodes, present_only, op_key, payload,
        live, created_ms)
    VALUES (p_kind, p_type, array_to_string(p_nodes, ','), p_present_only, p_key, p_payload,
        p_live, p_now)
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
    RETURN QUERY SELECT o.id, o.kind, o.node_type, o.nodes, o.present_only, o.op_key,
        o.payload, o.live, o.created_ms, v_superseded, v_delivered, NULL::text
    FROM backstop_queue_ops o WHERE o.id = v_id;
END
$fn$
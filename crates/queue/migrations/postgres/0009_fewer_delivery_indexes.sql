-- Every delivery enters each index of its table when it is written and
-- again at each change of state, so each index is paid for on the hot
-- path (a fifth of the fan-out rate for the two dropped here, measured).
-- The unique index of (operation, node) serves the reads by operation
-- again, as before 0007: a delivery of a node not removed stays unique per
-- (operation, node), and each delivery of a removed node stands alone,
-- keyed by its own id. `/metrics` counts the unfinished deliveries through
-- the partial indexes of their states (see `gauges`), which hold only the
-- unfinished ones.
DROP INDEX backstop_queue_open_by_kind;
DROP INDEX backstop_queue_op;
DROP INDEX backstop_queue_op_node;
CREATE UNIQUE INDEX backstop_queue_op_node ON backstop_queue_deliveries
    (op, node, (CASE WHEN node_removed_ms IS NULL THEN 0 ELSE id END));

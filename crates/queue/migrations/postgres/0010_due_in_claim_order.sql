-- A claim takes each node's due deliveries in (next_at_ms, id) order, a
-- few hundred at a time. With the index in that same order the claim reads
-- only the rows it takes; without `id` in it, PostgreSQL read and sorted
-- every pending delivery of the node on each claim (SQLite's indexes end
-- with the rowid, so its index already had this order).
DROP INDEX backstop_queue_due;
CREATE INDEX backstop_queue_due ON backstop_queue_deliveries (node, next_at_ms, id)
    WHERE state = 'pending';

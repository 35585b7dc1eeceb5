CREATE INDEX backstop_queue_finished ON backstop_queue_deliveries (finished_ms)
        WHERE state IN ('done', 'superseded')
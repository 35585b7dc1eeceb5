-- `/metrics` counts the deliveries not finished by state and kind at every
-- scrape: from this index alone, whatever the history kept.
CREATE INDEX backstop_queue_open_by_kind ON backstop_queue_deliveries (state, kind)
    WHERE state IN ('pending', 'in_flight', 'dead');

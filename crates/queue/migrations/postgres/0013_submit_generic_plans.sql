-- The submission's function plans its statements once per connection
-- instead of once per call. PL/pgSQL keeps a plan for each statement but,
-- left to choose, once the tables have statistics it planned them again
-- for every call with that call's values (the type's name, the key, the
-- targets): a quarter of a submission's server CPU in a store with a
-- history. Each statement finds its rows by key through an index whatever
-- the values are, so the plan made for any values is the plan for all of
-- them. (The batch function is left to choose: its plans need the
-- lengths of the batch's arrays.)
ALTER FUNCTION backstop_queue_submit(text, text, text[], bigint, text, text, bigint, bigint,
    integer, integer, text, text, bigint, bigint, bigint, bigint)
    SET plan_cache_mode = force_generic_plan;

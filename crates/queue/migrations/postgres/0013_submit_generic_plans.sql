-- The submission's function plans its statements once per connection
-- instead of once per call. PL/pgSQL keeps a plan for each statement but,
-- left to choose, planned these again for every call with the call's
-- values (the type's name, the key, the targets), which was a third of a
-- submission's time in the server. Each statement looks its rows up by
-- key through an index whatever the values are, so the plan made for any
-- values is the plan for all of them.
ALTER FUNCTION backstop_queue_submit(text, text, text[], bigint, text, text, bigint, bigint,
    integer, integer, text, text, bigint, bigint, bigint, bigint)
    SET plan_cache_mode = force_generic_plan;

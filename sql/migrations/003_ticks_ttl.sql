-- How long raw ticks are kept after loading (setting raw_ticks_ttl_days, an integer checked by
-- stockmax/config.py).
-- Applied at every migrate; existing parts are not rewritten now (materialize_ttl_after_modify = 0 is
-- set by the caller): old rows go at the next merges.
ALTER TABLE ticks MODIFY TTL loaded_at + toIntervalDay({raw_ticks_ttl_days})

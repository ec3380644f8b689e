-- Raw ticks, for exact answers at the sub-second edges of a range (`stockmax max`), written by the loader
-- from the job's `tick-batches` topic (every valid tick it read) and the `ticks-late` topic. A late tick,
-- which the job did not apply, is written again with applied = 0 and a higher version, and replaces its raw
-- row; copies of one tick fold into one row. Read folded: the row of the highest version (FINAL, or argMax
-- by version as sql/queries/highest_price.sql does). Kept for raw_ticks_ttl_days after loading (003_ticks_ttl.sql):
-- by load time, not event time, so that a replay of last year's ticks is kept too.
CREATE TABLE IF NOT EXISTS ticks
(
    symbol      LowCardinality(String),
    event_time  DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD),  -- sorted within a symbol
    exchange    LowCardinality(String),
    seq         UInt64 CODEC(Delta, ZSTD),
    price       Float64,
    volume      Float64,
    applied     UInt8,
    version     UInt8,
    loaded_at   DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (symbol, event_time, exchange, seq)

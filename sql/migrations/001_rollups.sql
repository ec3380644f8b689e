-- Closed buckets per symbol and resolution, written by the rollup loader from the `rollups` topic.
-- Every row is a deterministic function of the input, so writing one again (a loader retry, a replay
-- after a restart) inserts an identical row with the same sorting key, which ReplacingMergeTree folds
-- into one. Queries read with FINAL (or argMax) so they never see a doubled row, merged or not.
-- Times are delta-coded: within a symbol and resolution they step by the resolution.
CREATE TABLE IF NOT EXISTS rollups
(
    symbol        LowCardinality(String),
    resolution_s  UInt32,
    bucket_start  DateTime64(6, 'UTC') CODEC(DoubleDelta, ZSTD),
    open          Float64,
    high          Float64,
    high_time     DateTime64(6, 'UTC') CODEC(Delta, ZSTD),
    low           Float64,
    low_time      DateTime64(6, 'UTC') CODEC(Delta, ZSTD),
    close         Float64,
    count         UInt64,
    volume        Float64,
    vwap          Nullable(Float64)
)
ENGINE = ReplacingMergeTree
ORDER BY (symbol, resolution_s, bucket_start)

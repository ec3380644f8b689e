-- Closed buckets per symbol and resolution, written by the rollup loader from the `rollups` topic.
-- Every row is a deterministic function of the input, so writing one again (a loader retry, a replay
-- after a restart) inserts an identical row with the same sorting key, which ReplacingMergeTree folds
-- into one. Queries read with FINAL (or argMax) so they never see a doubled row, merged or not.
CREATE TABLE IF NOT EXISTS rollups
(
    symbol        LowCardinality(String),
    resolution_s  UInt32,
    bucket_start  DateTime64(6, 'UTC'),
    open          Float64,
    high          Float64,
    high_time     DateTime64(6, 'UTC'),
    low           Float64,
    low_time      DateTime64(6, 'UTC'),
    close         Float64,
    count         UInt64,
    volume        Float64,
    vwap          Nullable(Float64)
)
ENGINE = ReplacingMergeTree
ORDER BY (symbol, resolution_s, bucket_start)

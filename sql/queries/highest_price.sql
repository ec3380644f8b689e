-- The highest price of one symbol over a range of event time, and the first time it was reached: from the
-- rollup buckets that lie wholly inside the range, the coarsest that fit, and from the raw ticks at the
-- range's sub-second edges. stockmax/history.py cuts the range and fills in {rollup_ranges} and
-- {tick_ranges}: OR-ed conditions such as
--   (resolution_s = {r0:UInt32} AND bucket_start >= fromUnixTimestamp64Micro({a0:Int64}) AND ...)
-- that hold bound parameters only, never values. Rollups need no FINAL here: a folded copy of a bucket has
-- the same high. A raw tick's copies fold by its highest version, as FINAL would, but in a GROUP BY over the
-- few ticks at the edges: FINAL's cost grows with the number of the table's parts (bench/README.md).
SELECT price, toUnixTimestamp64Micro(at) AS at
FROM
(
    SELECT high AS price, high_time AS at
    FROM rollups
    WHERE symbol = {symbol:String} AND ({rollup_ranges})
    UNION ALL
    SELECT argMax(price, version) AS price, event_time AS at
    FROM ticks
    WHERE symbol = {symbol:String} AND ({tick_ranges})
    GROUP BY event_time, exchange, seq
    HAVING argMax(applied, version) = 1
)
ORDER BY price DESC, at ASC
LIMIT 1

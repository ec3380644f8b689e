-- The highest price per symbol over all stored buckets of one resolution, and when it was first reached.
SELECT symbol, max(high) AS max_price, argMin(high_time, (-high, high_time)) AS max_time
FROM rollups FINAL
WHERE resolution_s = {resolution_s:UInt32} AND startsWith(symbol, {symbol_prefix:String})
GROUP BY symbol
ORDER BY max_price DESC, symbol
LIMIT {limit:UInt32}

-- OHLCV bars of one symbol at one rollup resolution over [from, to) (bucket start times), oldest first.
-- The WHERE names rollups.bucket_start: plain bucket_start would be the µs alias above.
SELECT toUnixTimestamp64Micro(bucket_start) AS bucket_start, open, high, toUnixTimestamp64Micro(high_time) AS high_time,
       low, toUnixTimestamp64Micro(low_time) AS low_time, close, count, volume, vwap
FROM rollups FINAL
WHERE symbol = {symbol:String} AND resolution_s = {resolution_s:UInt32}
  AND rollups.bucket_start >= fromUnixTimestamp64Micro({from_us:Int64}, 'UTC')
  AND rollups.bucket_start < fromUnixTimestamp64Micro({to_us:Int64}, 'UTC')
ORDER BY bucket_start

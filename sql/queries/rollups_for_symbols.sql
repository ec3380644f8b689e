-- Every stored bucket whose symbol starts with a prefix, in key order (tests and exports).
SELECT symbol, resolution_s, toUnixTimestamp64Micro(bucket_start) AS bucket_start, open, high,
       toUnixTimestamp64Micro(high_time) AS high_time, low, toUnixTimestamp64Micro(low_time) AS low_time,
       close, count, volume, vwap
FROM rollups FINAL
WHERE startsWith(symbol, {symbol_prefix:String})
ORDER BY symbol, resolution_s, bucket_start

-- Rows and symbols in the rollups table (for a run's summary), optionally for a symbol prefix.
SELECT count() AS rows, uniqExact(symbol) AS symbols
FROM rollups FINAL
WHERE startsWith(symbol, {symbol_prefix:String})

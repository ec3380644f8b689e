-- Whether the store holds anything of a symbol (to tell an unknown symbol from an empty range).
SELECT (SELECT count() FROM (SELECT 1 FROM rollups WHERE symbol = {symbol:String} LIMIT 1))
     + (SELECT count() FROM (SELECT 1 FROM ticks WHERE symbol = {symbol:String} LIMIT 1)) > 0 AS known

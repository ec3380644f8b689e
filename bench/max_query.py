"""`stockmax max` latency on the embedded store: a month of 1-second ticks for 100 symbols (259 M raw
ticks, their 1 s / 1 min / 1 h rollups), random ranges with microsecond edges, side by side with the
baseline a user would write without rollups: max() over the raw ticks of the range.

    .venv/bin/python bench/max_query.py [--symbols 100] [--days 30] [--queries 200]

The store (~6 GB; ~12 GB while it is merged) is built once, in about 10 minutes, with ClickHouse's own
INSERT ... SELECT (prices are a deterministic function of
symbol and time, not a random walk: the query's cost does not depend on the values) and kept in
.cache/bench/ for the next run. Prints median, p90 and p99 per path, and the peak RSS.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import sys
import time

from stockmax import config
from stockmax.history import highest
from stockmax.store import Store

START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
# n: second, s: symbol number. Prices in cents and times in ms, as a feed's often are (it keeps the store
# small enough to build in minutes; the query's cost is the same).
PRICE = "round(100 + 20 * sin(n / 3600 + s) + (cityHash64(s, n) % 1000) / 100, 2)"


def build(store: Store, symbols: int, days: int) -> None:
    seconds = days * 86_400
    say = lambda text: print(text, file=sys.stderr, flush=True)
    c = store.client
    say(f"building: {symbols * seconds:,} raw ticks ({symbols} symbols x {days} days x 1 per second) ...")
    rows = f"""SELECT number % {symbols} AS s, intDiv(number, {symbols}) AS n, {PRICE} AS p
               FROM numbers({symbols * seconds})"""
    started = time.perf_counter()
    c.command(f"""INSERT INTO ticks (symbol, event_time, exchange, seq, price, volume, applied, version)
                  SELECT concat('SYM', leftPad(toString(s), 4, '0')), fromUnixTimestamp64Micro(
                         toInt64({START_US} + n * 1000000 + cityHash64(n, s) % 1000 * 1000), 'UTC'),
                         'X', n, p, 1, 1, 0 FROM ({rows})""")
    say(f"  raw ticks: {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    # One tick per second: each 1 s bucket is that tick.
    c.command("""INSERT INTO rollups SELECT symbol, 1, toStartOfSecond(event_time), price, price, event_time,
                 price, event_time, price, 1, volume, price FROM ticks""")
    for resolution, source in ((60, 1), (3600, 60)):
        c.command(f"""INSERT INTO rollups SELECT symbol, {resolution},
                        toStartOfInterval(bucket_start, INTERVAL {resolution} SECOND) AS b,
                        argMin(open, bucket_start), max(high), argMin(high_time, (-high, high_time)),
                        min(low), argMin(low_time, (low, low_time)), argMax(close, bucket_start), sum(count),
                        sum(volume), sum(vwap * volume) / sum(volume)
                      FROM rollups WHERE resolution_s = {source} GROUP BY symbol, b""")
    # Merge to one part per table, as background merges leave a settled store: with the dozens of parts a
    # fresh bulk load leaves, each query spends ~2x longer on index analysis (measured: 40 ms vs 20 ms).
    c.command("OPTIMIZE TABLE rollups FINAL")
    c.command("OPTIMIZE TABLE ticks FINAL")
    say(f"  rollups: {time.perf_counter() - started:.0f} s")


def timed(fn, queries) -> list[float]:
    out = []
    for q in queries:
        started = time.perf_counter()
        fn(*q)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    data = config.PROJECT_ROOT / ".cache" / "bench" / f"history-{args.symbols}x{args.days}d"
    if args.rebuild and data.exists():
        shutil.rmtree(data)
    fresh = not (data / "built").exists()
    settings = config.load(env={}).with_(data_dir=data, raw_ticks_ttl_days=3650)
    with Store(settings) as store:
        if fresh:
            store.migrate()
            store.client.command("TRUNCATE TABLE ticks")
            store.client.command("TRUNCATE TABLE rollups")
            build(store, args.symbols, args.days)
            (data / "built").touch()
        size = store.client.query("SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = "
                                  "currentDatabase()").result_rows[0][0]
        rng = random.Random(1)
        span = args.days * 86_400_000_000
        queries = []
        for _ in range(args.queries):
            a, b = sorted(START_US + rng.randrange(span) for _ in range(2))
            queries.append((f"SYM{rng.randrange(args.symbols):04d}", a, b + 1))
        exact = lambda sym, a, b: highest(store, sym, a, b)
        naive = lambda sym, a, b: store.client.query(
            "SELECT max(price) FROM ticks WHERE symbol = {s:String} AND event_time >= fromUnixTimestamp64Micro({a:Int64}, 'UTC') "
            "AND event_time < fromUnixTimestamp64Micro({b:Int64}, 'UTC')", parameters={"s": sym, "a": a, "b": b})
        for sym, a, b in queries[:20]:  # the answers agree (the baseline is the brute force)
            assert highest(store, sym, a, b)[0] == naive(sym, a, b).result_rows[0][0]
        timed(exact, queries[:20])  # warm-up
        timed(naive, queries[:5])
        results = {"stockmax max (rollups + raw edges)": timed(exact, queries),
                   "baseline: max() over raw ticks": timed(naive, queries[: max(20, args.queries // 10)])}
    print(f"\n{args.symbols} symbols x {args.days} days of 1-second ticks ({args.symbols * args.days * 86400:,} raw "
          f"ticks), store {size / 2**30:.2f} GiB on disk; random ranges with µs edges\n")
    print("| path | queries | median ms | p90 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for name, ms in results.items():
        q = statistics.quantiles(ms, n=100)
        print(f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {q[89]:.1f} | {q[98]:.1f} |")
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

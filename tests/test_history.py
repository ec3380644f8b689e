"""Historical maxima and bars from ClickHouse, after the whole pipeline ran on a replayed file: `stockmax max`
over random ranges (sub-second edges, ranges inside one second, hours, days) equals a brute-force max over
the raw ticks the job applied; `stockmax bars` and `stockmax alerts` equal the oracle; bad questions get
one clear line each."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import given, strategies as st

from cli_env import cli_env
from oracle import alert_key, expected_alerts, expected_rollups
from stockmax import kafka_io, sample
from stockmax.history import HistoryError, cover, highest
from stockmax.store import Store
from stockmax.times import format_utc

SECOND, MINUTE, HOUR, DAY = 1_000_000, 60_000_000, 3_600_000_000, 86_400_000_000


@given(st.integers(0, 10 * DAY), st.integers(1, 3 * DAY),
       st.sets(st.sampled_from([SECOND, 5 * SECOND, MINUTE, 15 * MINUTE, HOUR, DAY]), max_size=4))
def test_cover_cuts_a_range_into_whole_buckets_and_raw_edges(start, length, resolutions):
    end = start + length
    pieces = sorted(cover(start, end, resolutions), key=lambda p: p.start_us)
    assert pieces[0].start_us == start and pieces[-1].end_us == end
    assert all(a.end_us == b.start_us for a, b in zip(pieces, pieces[1:]))  # no gap, no overlap
    for p in pieces:
        assert p.start_us < p.end_us
        if p.resolution_us is None:  # raw pieces only where no bucket of any resolution fits
            assert all(-(-p.start_us // r) * r + r > p.end_us for r in resolutions)
        else:
            assert p.start_us % p.resolution_us == 0 and p.end_us % p.resolution_us == 0
    assert sum(p.resolution_us is None for p in pieces) <= 2


def stockmax(settings, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "stockmax.cli", *args], env=cli_env(settings),
                          capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, f"stockmax {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def brute_max(applied: list[dict], symbol: str, start: int, end: int):
    prices = [(t["price"], t["event_time"]) for t in applied if t["symbol"] == symbol and start <= t["event_time"] < end]
    if not prices:
        return None
    top = max(p for p, _ in prices)
    return top, min(t for p, t in prices if p == top)


def test_the_answer_folds_late_ticks_and_copies_across_parts(store_settings):
    """Raw ticks at sub-second edges as the loader writes them, in parts that are not merged: a tick written
    again as late (applied 0, a higher version) is never the answer, and copies of a tick count once.
    Oracle: a brute-force max over the applied ticks."""
    base = 1_767_623_400_000_000
    ticks = [{"symbol": "F", "event_time": base + i * 37_000, "exchange": "X", "seq": i,
              "price": 100.0 + (i * 7919 % 97) / 4, "volume": 1.0} for i in range(100)]
    late = {5, 40, 41, 77, 99}
    for i in late:
        ticks[i]["price"] = 1000.0 + i  # above every applied tick: an answer that counts one is wrong
    written = [{**t, "applied": 1, "version": 0} for t in ticks]
    with Store(store_settings) as store:
        store.migrate()
        store.client.command("SYSTEM STOP MERGES ticks")  # every insert stays a part of its own
        for part in (written[:50], written[50:], written[30:60], [{**ticks[i], "applied": 0, "version": 1} for i in late]):
            store.insert_ticks(part)
        applied = [t for t in ticks if t["seq"] not in late]
        rng = random.Random(8)
        for _ in range(300):  # ranges inside one second: answered from the raw ticks alone
            a = base + rng.randrange(0, 3_700_000)
            b = min(a + rng.randrange(1, SECOND), a // SECOND * SECOND + SECOND)
            want = brute_max(applied, "F", a, b)
            if want is None:
                with pytest.raises(HistoryError, match="no ticks of"):
                    highest(store, "F", a, b)
            else:
                assert highest(store, "F", a, b) == want, (format_utc(a), format_utc(b))


@pytest.mark.e2e
def test_max_bars_and_alerts_against_the_oracle(settings, tmp_path):
    # One partition: the watermark follows the file's own order, so the late ticks are late (see below).
    s = settings.with_(data_dir=tmp_path / "data", topic_partitions=1)
    start = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
    # Three days of sparse ticks and, in the middle, two minutes of dense ones (sub-second structure).
    sparse = sample.generate(symbols=3, duration_s=3 * 86400, ticks_per_second=0.01, spikes_per_symbol=2,
                             seed=61, start=start).to_pylist()
    burst_start = start.timestamp() + 36 * 3600 + 0.123
    burst = [{**t, "seq": t["seq"] + 10**6} for t in sample.generate(
        symbols=3, duration_s=120, ticks_per_second=20, spikes_per_symbol=2, seed=62,
        start=datetime.fromtimestamp(burst_start, timezone.utc)).to_pylist()]
    in_order = sorted(sparse + burst, key=lambda t: t["event_time"])
    # Ticks at the burst's time with a price above everything, sent after the rest: the watermark has
    # passed them when they arrive, unless the job read the whole file before it emitted one. The job
    # reports the ones it did not apply on ticks-late, and no answer may contain those.
    late = [{**burst[i], "price": 10_000.0 + i, "seq": 10**7 + i} for i in (10, 500)]
    tick_file = tmp_path / "ticks.csv"
    pacsv.write_csv(pa.Table.from_pylist(in_order + late), tick_file)
    stockmax(s, "topics", "create")
    stockmax(s, "replay", str(tick_file), "--no-progress", "--batch-ticks", "1000")  # the fast path
    stockmax(s, "run", "--bounded")
    reported_late = {(t["symbol"], t["seq"]) for t in kafka_io.read_committed_json(s, "late")}
    assert reported_late <= {(t["symbol"], t["seq"]) for t in late}, "only the late ticks may be late"
    applied = sorted(in_order + [t for t in late if (t["symbol"], t["seq"]) not in reported_late],
                     key=lambda t: t["event_time"])

    symbols = sorted({t["symbol"] for t in applied})
    first, last = applied[0]["event_time"], applied[-1]["event_time"] + 1
    rng = random.Random(5)
    ranges = []
    for _ in range(60):
        a, b = sorted(rng.randrange(first - MINUTE, last + MINUTE) for _ in range(2))  # anything, µs edges
        ranges.append((a, b + 1))
    for _ in range(60):  # inside one second, in the burst
        t = rng.choice(burst)["event_time"]
        a = t - rng.randrange(0, 300_000)
        ranges.append((a, min(a + rng.randrange(1, SECOND), a // SECOND * SECOND + SECOND)))
    for span in (SECOND, MINUTE, HOUR, 5 * HOUR, DAY, 2 * DAY):  # from a second to days, around the burst
        for _ in range(10):
            a = rng.choice(burst)["event_time"] - rng.randrange(0, span)
            ranges.append((a, a + span + rng.randrange(-SECOND // 2, SECOND // 2)))
    ranges += [(t["event_time"], t["event_time"] + 1) for t in late]  # exactly a late tick's time
    answered = 0
    with Store(s) as store:
        for a, b in ranges:
            for symbol in symbols:
                want = brute_max(applied, symbol, a, b)
                if want is None:
                    with pytest.raises(HistoryError, match="no ticks of"):
                        highest(store, symbol, a, b)
                else:
                    assert highest(store, symbol, a, b) == want, (symbol, format_utc(a), format_utc(b))
                    answered += 1
    assert answered > 500

    # The command: --json prints one object with ISO times; --window is (at - W, at].
    symbol, (a, b) = symbols[0], ranges[0]
    want = brute_max(applied, symbol, a, b)
    out = json.loads(stockmax(s, "max", symbol, "--from", format_utc(a), "--to", str(b), "--json").stdout)
    assert out == {"symbol": symbol, "from": format_utc(a), "to": format_utc(b), "max": want[0],
                   "at": format_utc(want[1])}
    at = burst[300]["event_time"]
    out = json.loads(stockmax(s, "max", symbol, "--window", "5m", "--at", format_utc(at), "--json").stdout)
    assert (out["max"], out["at"]) == tuple(map(lambda v, f: f(v), brute_max(applied, symbol, at - 5 * MINUTE + 1, at + 1),
                                                (float, format_utc)))

    # Bars: the oracle's 1-minute rollups of the first hours, in order.
    a, b = first, first + 3 * HOUR
    lines = stockmax(s, "bars", symbol, "--resolution", "1m", "--from", str(a), "--to", str(b), "--json").stdout
    got = [json.loads(line) for line in lines.splitlines()]
    want_bars = sorted((r for r in expected_rollups(applied, 60) if r["symbol"] == symbol and a <= r["bucket_start"] < b),
                       key=lambda r: r["bucket_start"])
    assert want_bars
    assert [(g["bucket_start"], g["open"], g["high"], g["low"], g["close"], g["count"]) for g in got] == \
           [(format_utc(w["bucket_start"]), w["open"], w["high"], w["low"], w["close"], w["count"]) for w in want_bars]
    table = stockmax(s, "bars", symbol, "--resolution", "1m", "--from", str(a), "--to", str(b)).stdout.splitlines()
    assert len(table) == len(want_bars) + 1 and "open" in table[0]
    csv_lines = stockmax(s, "bars", symbol, "--from", str(a), "--to", str(b), "--csv").stdout.splitlines()
    assert csv_lines[0].startswith("symbol,resolution,bucket_start,open,high") and len(csv_lines) == len(want_bars) + 1

    # Alerts: every committed alert with --from-beginning --json; the newest few as lines by default.
    want_alerts = expected_alerts(applied, s.spike_threshold_pct, s.spike_window_ms)
    assert want_alerts
    lines = stockmax(s, "alerts", "--from-beginning", "--json").stdout.splitlines()
    assert Counter(alert_key(json.loads(line)) for line in lines) == Counter(map(alert_key, want_alerts))
    readable = stockmax(s, "alerts", "--limit", "3").stdout.splitlines()
    assert len(readable) == min(3, len(want_alerts)) and all("spike_" in r or "threshold_" in r for r in readable)

    # Bad questions: one clear line each, no traceback.
    for args, message in [
        (["max", "NOPE", "--from", str(a), "--to", str(b)], "unknown symbol 'NOPE'"),
        (["max", symbol, "--from", str(last + DAY), "--to", str(last + 2 * DAY)], f"no ticks of {symbol}"),
        (["max", symbol, "--from", str(b), "--to", str(a)], "the range is empty"),
        (["max", symbol, "--from", str(a), "--to", str(a)], "the range is empty"),
        (["max", symbol, "--from", "yesterday", "--to", str(b)], "--from: 'yesterday' is neither ISO-8601"),
        (["max", "BAD SYMBOL;DROP", "--window", "5m"], "has characters outside"),
        (["max", symbol], "give --from and --to, or --window"),
        (["max", symbol, "--window", "5 parsecs"], "--window: not a length of time"),
        (["bars", symbol, "--resolution", "7s", "--from", str(a), "--to", str(b)], "no rollups at 7 s"),
    ]:
        done = stockmax(s, *args, check=False)
        assert done.returncode == 1 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    with Store(s):  # a running job holds the embedded store: the command says who
        done = stockmax(s, "max", symbol, "--window", "5m", check=False)
    assert done.returncode == 1 and "is in use by process" in done.stderr and "Traceback" not in done.stderr

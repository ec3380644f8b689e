"""A realistic multi-symbol tick sample: random-walk prices, injected spikes, some ticks out of order.

Deterministic for a seed, so a test can replay it and compute its expected outputs independently.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .config import Settings

DEMO_SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "V", "XOM",
                "UNH", "LLY", "AVGO", "COST", "NFLX", "AMD", "ORCL", "CRM", "BAC", "KO"]
EXCHANGES = ["XNAS", "XNYS", "BATS"]
DEFAULT_START = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)


def delay_within(watermark_bound_ms: int) -> int:
    """The out-of-order delay a sample meant to lose no tick uses: 3/4 of the watermark bound, so that
    every tick is applied whatever the profile (a delay near the bound would make one late now and then)."""
    return max(1, watermark_bound_ms * 3 // 4)


def generate(symbols: int = 20, duration_s: float = 600.0, ticks_per_second: float = 4.0,
             spikes_per_symbol: int = 3, out_of_order_share: float = 0.02, max_delay_ms: int | None = None,
             duplicate_share: float = 0.0, seed: int = 7, start: datetime = DEFAULT_START,
             symbol_prefix: str = "") -> pa.Table:
    """Rows in arrival order (the order a replay publishes them).

    An out-of-order tick arrives after ticks up to `max_delay_ms` later in event time than itself, never
    more, so with a watermark bound above max_delay_ms no tick is late (by default, delay_within the default
    bound). A `duplicate_share` of ticks is delivered a second time (same symbol, exchange and seq) within
    the same delay.
    """
    if max_delay_ms is None:
        max_delay_ms = delay_within(Settings.watermark_bound_ms)
    rng = random.Random(seed)
    start_us = int(start.timestamp() * 1_000_000)
    duration_us = int(duration_s * 1_000_000)
    names = [symbol_prefix + (DEMO_SYMBOLS[i] if i < len(DEMO_SYMBOLS) else f"SYM{i:04d}") for i in range(symbols)]
    rows = []
    for name in names:
        price = rng.uniform(20, 800)
        # A spike: within ~300 ms the price jumps 3-6 % (either way), then drifts back over a few seconds.
        spikes = sorted(rng.uniform(0.05, 0.95) * duration_us for _ in range(spikes_per_symbol))
        shocks = {}
        for at in spikes:
            shocks[int(at)] = rng.choice([-1, 1]) * rng.uniform(0.03, 0.06)
        spike_times = sorted(shocks)
        t = start_us + int(rng.expovariate(ticks_per_second) * 1e6)
        seq = 0
        offset = 0.0  # the spike's share of the price, decaying
        while t < start_us + duration_us:
            while spike_times and t - start_us >= spike_times[0]:
                offset += shocks.pop(spike_times.pop(0))
            price *= math.exp(rng.gauss(0, 0.0008))
            offset *= 0.8
            shown = round(price * (1 + offset), 4)
            rows.append((t, name, shown, float(rng.randint(1, 500)), rng.choice(EXCHANGES), seq))
            seq += 1
            gap = rng.expovariate(ticks_per_second)
            t += max(1, int(gap * 1e6))
    rows.sort()
    arrival = []
    for i, row in enumerate(rows):
        delay = rng.uniform(1, max_delay_ms) * 1000 if rng.random() < out_of_order_share else 0
        arrival.append((row[0] + delay, i))
        if rng.random() < duplicate_share:
            arrival.append((row[0] + rng.uniform(0, max_delay_ms) * 1000, i))
    order = [i for _, i in sorted(arrival)]
    ordered = [rows[i] for i in order]
    return pa.table({
        "symbol": [r[1] for r in ordered],
        "price": pa.array([r[2] for r in ordered], pa.float64()),
        "volume": pa.array([r[3] for r in ordered], pa.float64()),
        "exchange": [r[4] for r in ordered],
        "seq": pa.array([r[5] for r in ordered], pa.int64()),
        "event_time": pa.array([r[0] for r in ordered], pa.int64()),
    })


def write(table: pa.Table, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".parquet":
        pq.write_table(table, path)
    else:
        pacsv.write_csv(table, path)
    return path

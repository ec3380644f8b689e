"""State per symbol: what one SymbolProcessor holds after hours of random-walk ticks, and what it costs
to checkpoint (its pickled size, which the job stores per symbol in Flink's keyed state).

    .venv/bin/python bench/state_size.py [--hours 2] [--rates 1,10,100]
"""

from __future__ import annotations

import argparse
import pickle
import random
import statistics
import time

from stockmax.operators.symbol import Rules, SymbolProcessor
from stockmax.operators.tick import Tick


def measure(rate_per_s: float, hours: float, windows: str, seed: int = 1) -> dict:
    from stockmax.operators.durations import parse_windows

    rules = Rules(windows_us=parse_windows(windows))
    processor = SymbolProcessor(rules)
    rng = random.Random(seed)
    t, price, seq = 1_767_600_000_000_000, 100.0, 0
    end = t + int(hours * 3600e6)
    samples = []
    next_sample = t + 600_000_000
    started = time.perf_counter()
    while t < end:
        t += max(1, int(rng.expovariate(rate_per_s) * 1e6))
        price *= 1 + rng.gauss(0, 0.0005)
        processor.accept(Tick("SYM", round(price, 4), 1.0, "X", seq, t), t)
        seq += 1
        processor.advance(t + 1)  # frontier just past the tick: applied at once, as with a tight watermark
        if t >= next_sample:
            samples.append((len(pickle.dumps(processor, protocol=pickle.HIGHEST_PROTOCOL)),
                            processor.state_size()["extrema_candidates"], len(processor.duplicates)))
            next_sample += 600_000_000
    elapsed = time.perf_counter() - started
    steady = samples[len(samples) // 2:] or samples
    return {"rate": rate_per_s, "ticks": seq, "window_ticks": int(rate_per_s * 3600),
            "bytes_median": int(statistics.median(s[0] for s in steady)), "bytes_max": max(s[0] for s in steady),
            "candidates_median": int(statistics.median(s[1] for s in steady)),
            "candidates_max": max(s[1] for s in steady), "dedup_keys": int(statistics.median(s[2] for s in steady)),
            "ticks_per_s": seq / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--rates", default="1,10,100", help="ticks per second per symbol")
    parser.add_argument("--windows", default="1s,1m,5m,1h")
    args = parser.parse_args()
    print(f"windows {args.windows}; random walk; {args.hours:g} h of event time; steady state = second half\n")
    print("| ticks/s | ticks in 1 h window | pickled state bytes (median / max) | extrema candidates (median / max) "
          "| dedup keys | pure-Python ticks/s |")
    print("|---|---|---|---|---|---|")
    for rate in (float(r) for r in args.rates.split(",")):
        m = measure(rate, args.hours, args.windows)
        print(f"| {m['rate']:g} | {m['window_ticks']:,} | {m['bytes_median']:,} / {m['bytes_max']:,} | "
              f"{m['candidates_median']} / {m['candidates_max']} | {m['dedup_keys']:,} | {m['ticks_per_s']:,.0f} |")


if __name__ == "__main__":
    main()

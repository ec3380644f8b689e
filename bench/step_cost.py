"""What one watermark step of the keyed function costs as a live feed's state builds up (pure operators, no
Flink): SYMBOLS symbols, RATE ticks/s in event-time order, a step every STEP ms releasing what the watermark
(bound BOUND ms) has passed, every symbol handed to advance_symbols as the job's due schedule would at worst.
Prints, per minute of event time, the mean time per step and per tick and the extrema candidates a symbol
holds: a cost that grows with them is a cost a feed pays more of every minute for an hour (the longest
default window).

    .venv/bin/python bench/step_cost.py --seconds 300
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stockmax.operators.columnar import advance_symbols  # noqa: E402
from stockmax.operators.symbol import Rules, SymbolProcessor  # noqa: E402
from stockmax.operators.tick import Tick  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300, help="event time to feed")
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=10_000, help="ticks per second of event time")
    parser.add_argument("--step-ms", type=int, default=50, help="event time between watermark steps")
    parser.add_argument("--bound-ms", type=int, default=200, help="watermark bound")
    args = parser.parse_args()
    rules = Rules()
    rng = random.Random(1)
    names = [f"S{i:05d}" for i in range(args.symbols)]
    processors = {name: SymbolProcessor(rules) for name in names}
    prices = dict.fromkeys(names, 100.0)
    seqs = dict.fromkeys(names, 0)
    start_us = 1_767_623_400_000_000
    per_step = args.rate * args.step_ms // 1000
    steps_per_minute = 60_000 // args.step_ms
    spent = 0.0
    for step in range(int(args.seconds * 1000 / args.step_ms)):
        base = start_us + step * args.step_ms * 1000
        for k in range(per_step):
            name = names[rng.randrange(args.symbols)]
            prices[name] = round(prices[name] * (1 + rng.gauss(0, 0.0005)), 4)
            seqs[name] += 1
            processors[name].accept(Tick(name, prices[name], 1.0, "X", seqs[name],
                                         base + k * (args.step_ms * 1000 // per_step)), -1)
        started = time.perf_counter()
        advance_symbols(list(processors.items()), base + (args.step_ms - args.bound_ms) * 1000)
        spent += time.perf_counter() - started
        if (step + 1) % steps_per_minute == 0:
            candidates = sum(p.extrema.candidates() for p in processors.values()) / args.symbols
            print(f"{(step + 1) * args.step_ms / 1000:6.0f} s of event time: {spent / steps_per_minute * 1000:6.1f} ms "
                  f"per step, {spent / (steps_per_minute * per_step) * 1e6:5.1f} µs per tick, "
                  f"{candidates:.0f} candidates per symbol", flush=True)
            spent = 0.0


if __name__ == "__main__":
    main()

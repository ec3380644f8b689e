"""`make run`: the whole pipeline on this machine, from nothing to a summary, leaving nothing running."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from . import kafka_io, replay, runner, sample
from .config import Settings
from .kafka_local import LocalKafka, bootstrap_answers
from .store import Store

# A few malformed ticks published beside the sample: they must land in the dead-letter topic, not stop the job.
BAD_TICKS = [
    b"not json at all",
    b'{"symbol": "AAPL", "price": -3.5, "event_time": 1767623400000000}',
    b'{"symbol": "", "price": 10.0, "event_time": 1767623400000000}',
    b'{"symbol": "MSFT", "price": "12.5", "event_time": 1767623400000000}',
    b"\xff\xfe\x00garbage",
]


@contextlib.contextmanager
def broker_for(settings: Settings, say):
    """Use the broker at the bootstrap address if one answers; else start the local one and stop it after."""
    if bootstrap_answers(settings.kafka_bootstrap, **settings.kafka_python_options()):
        say(f"using the Kafka broker at {settings.kafka_bootstrap}")
        yield
        return
    broker = LocalKafka.from_settings(settings)
    say(f"starting a local Kafka broker (KRaft) at {broker.bootstrap} ...")
    broker.start()
    try:
        yield
    finally:
        say("stopping the local Kafka broker")
        broker.stop()


def demo(settings: Settings, tick_file: Path | None = None, say=print) -> dict:
    # Fresh topics and transactional ids per run: the counts below are this run's, nothing earlier.
    run_id = time.strftime("%Y%m%d-%H%M%S")
    settings = settings.with_(topic_prefix=f"{settings.topic_prefix}demo-{run_id}-",
                              job_name=f"{settings.job_name}-demo-{run_id}")
    if tick_file is None:
        sample_ticks = sample.generate(max_delay_ms=sample.delay_within(settings.watermark_bound_ms))
        tick_file = sample.write(sample_ticks, settings.data_dir / "demo" / "sample-ticks.csv")
        say(f"generated a sample: {tick_file} (20 symbols, 10 minutes, random walk with spikes, some out of order)")
    with broker_for(settings, say):
        kafka_io.create_topics(settings)
        say(f"replaying {tick_file} into topic {settings.topic('ticks')} ...")
        ticks = replay.replay(settings, tick_file)
        bad = kafka_io.producer(settings)
        for raw in BAD_TICKS:
            bad.send(settings.topic("ticks"), raw)
        bad.flush()
        bad.close()
        say("running the job on the local Flink mini-cluster until every tick is processed ...")
        started = time.monotonic()
        result = runner.run(settings, bounded=True)
        elapsed = time.monotonic() - started
        alerts = kafka_io.read_committed_json(settings, "alerts")
        dead = kafka_io.read_committed_json(settings, "dead")
        late = kafka_io.read_committed_json(settings, "late")
        updates = kafka_io.read_committed_json(settings, "max_updates")
        duplicates = kafka_io.read_committed_json(settings, "duplicates")
    symbols = sorted(set(replay.read_tick_file(tick_file)["symbol"].to_pylist()))
    with Store(settings) as store:
        minute = 60 if 60 in settings.rollup_resolutions_seconds() else settings.rollup_resolutions_seconds()[0]
        highest = [row for row in store.query("highest_prices", resolution_s=minute,
                                              symbol_prefix="", limit=1000) if row["symbol"] in symbols]
        rows = sum(1 for row in store.query("rollups_for_symbols", symbol_prefix="")
                   if row["symbol"] in symbols and row["resolution_s"] == minute)
    summary = {"ticks_in": ticks + len(BAD_TICKS), "ticks_valid": ticks, "dead_letters": len(dead),
               "late_ticks": len(late), "duplicate_ticks": len(duplicates), "max_updates": len(updates),
               "alerts_committed": len(alerts), "rollups_loaded_now": result.rollups_loaded,
               "rollup_rows_in_clickhouse": rows, "job_seconds": round(elapsed, 1), "highest": highest[:5],
               "store": settings.store_dsn}
    say("")
    say("stockmax run summary")
    say(f"  ticks in                 {summary['ticks_in']:>8}  ({ticks} valid, {len(dead)} to {settings.topic('dead')})")
    say(f"  late ticks               {len(late):>8}")
    say(f"  duplicate ticks          {len(duplicates):>8}")
    say(f"  max updates committed    {len(updates):>8}  (windows {settings.windows})")
    say(f"  alerts committed         {len(alerts):>8}  (read back with isolation.level=read_committed)")
    say(f"  rollup rows (1 min)      {rows:>8}  in ClickHouse ({settings.store_dsn})")
    say(f"  job time                 {elapsed:>7.1f}s  (mini-cluster start included)")
    say("  highest prices (from ClickHouse):")
    for row in summary["highest"]:
        say(f"    {row['symbol']:<6} {row['max_price']:>12.4f}  at {row['max_time']:%Y-%m-%d %H:%M:%S.%f} UTC")
    return summary


def live_feed(settings: Settings, rate: int, symbols: list[str], stop) -> None:
    """A feed handler of the demo's own: `rate` ticks/s of one JSON record each, event time = now (record
    timestamp = event time in ms), a random walk per symbol with now and then a jump of a few percent."""
    import random

    import orjson

    producer = kafka_io.producer(settings, linger_ms=5)
    rng = random.Random()
    prices = {symbol: rng.uniform(20, 800) for symbol in symbols}
    seqs = dict.fromkeys(symbols, 0)
    started, sent = time.monotonic(), 0
    try:
        while not stop.is_set():
            due = int(rate * (time.monotonic() - started + 0.05))
            while sent < due:
                symbol = rng.choice(symbols)
                jump = rng.choice((-1, 1)) * rng.uniform(0.02, 0.05) if rng.random() < 0.0005 else 0.0
                prices[symbol] = round(max(0.01, prices[symbol] * (1 + rng.gauss(0, 0.0008) + jump)), 4)
                seqs[symbol] += 1
                now_us = time.time_ns() // 1000
                producer.send(settings.topic("ticks"), orjson.dumps(
                    {"symbol": symbol, "price": prices[symbol], "volume": float(rng.randint(1, 500)),
                     "exchange": "XNAS", "seq": seqs[symbol], "event_time": now_us}),
                    key=symbol.encode(), timestamp_ms=now_us // 1000)
                sent += 1
            stop.wait(0.05)
    finally:
        producer.flush()
        producer.close()


def live_demo(settings: Settings, rate: int = 200, symbols: int = 8, say=print) -> None:
    """`stockmax demo --live`: the job on a live synthetic feed, with `stockmax serve` and its page, until
    Ctrl-C. Fresh topics and a fresh job, as `demo`."""
    import subprocess
    import sys
    import threading

    import os

    from .config import environment
    from .store_service import owner_address

    run_id = time.strftime("%Y%m%d-%H%M%S")
    settings = settings.with_(topic_prefix=f"{settings.topic_prefix}live-{run_id}-",
                              job_name=f"{settings.job_name}-live-{run_id}")
    names = sample.DEMO_SYMBOLS[:symbols]
    with broker_for(settings, say):
        kafka_io.create_topics(settings)
        stop = threading.Event()
        feed = threading.Thread(target=live_feed, args=(settings, rate, names, stop), name="live-feed", daemon=True)
        feed.start()
        say(f"publishing a live feed: {rate} ticks/s over {', '.join(names)}, event time = now")
        # serve first: it starts the store's loader, and the run below leaves the loading to it.
        serve = subprocess.Popen([sys.executable, "-m", "stockmax.cli", "serve"],
                                 env={**os.environ, **environment(settings)})
        if owner_address(settings, wait_s=120) is None and serve.poll() is not None:
            raise RuntimeError(f"stockmax serve exited at start (exit code {serve.returncode})")
        url = f"http://{settings.serve_host}:{settings.serve_port}/?symbols={','.join(names[:4])}"
        try:
            say(f"the live page: {url}  (Ctrl-C stops everything)")
            runner.run(settings, bounded=False, fresh=True, say=say, progress=True)
        finally:
            stop.set()
            serve.terminate()
            serve.wait(60)
            feed.join(10)

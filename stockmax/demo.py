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
        tick_file = sample.write(sample.generate(), settings.data_dir / "demo" / "sample-ticks.csv")
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

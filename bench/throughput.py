"""`make bench`: stockmax's throughput, latency and memory, side by side with a Flink SQL baseline.

    .venv/bin/python bench/throughput.py [--live-seconds 300] [--ticks 1000000] [--symbols 1000] [--runs 3]

First, the headline, what users do (bench/live.py, LIVE_RUNS): a feed process of its own publishes one JSON
record per tick, event time = the wall clock, at a fixed rate for --live-seconds, into an unbounded
`stockmax run` (its loader on) and into the Flink SQL a user would write instead (MAX OVER RANGE per window;
the HOP window TVF); kept up or not, tick -> output latency, memory and checkpoint size over time.
Then serving (bench/serving.py, --serving-seconds): `stockmax serve` under open-loop load (oha) at 1 k, 5 k
and 10 k live max requests/s, history queries, a WebSocket fan-out to 1,000 clients, beside the CLI.
Then, on one generated input (random walk, spikes, 2 % of ticks out of order; reproducible for a seed), in one run:
  (1) pure      the operators alone (stockmax.operators.symbol.SymbolProcessor), no Flink
  (2) job       the Flink job with our Python operators, Kafka in, every output to a blackhole sink;
                from per-tick JSON records, and from Arrow batch records (`stockmax replay --batch-ticks`)
  (3) sql-hop   the baseline a user would write instead: Flink SQL HOP(60 s, 1 s) MAX per symbol, JVM only,
                from the same per-tick JSON records, into a blackhole
  (4) full      the whole pipeline: Kafka in, every output to Kafka exactly-once, rollups and raw ticks
                loaded into ClickHouse (embedded); its tick -> alert latency at a paced rate; and live,
                `stockmax run` with the main input published at a fixed rate (--live-rate): does it keep up
Then scaling: symbols 100 / 1 k / 10 k (1 min window), window 1 min / 1 h / 24 h (1 k symbols), and 10 k
symbols with a 1 h window.

Each run is its own process; its peak memory is the peak RSS of its whole process tree (the Python client,
the Flink JVM, the Python worker). Throughput of a Flink run is ticks / the job's net runtime in Flink (job
start to the last record; it includes a few seconds of start-up for every variant alike). Writes
bench/results.md and bench/results.png. Inputs are cached in .cache/bench/ (keyed by their parameters).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from stockmax import sample
from stockmax.config import Settings

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench"
BENCH_DIR = ROOT / "bench"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- inputs ---------------------------------------------------------------------------------------------------

# How late the main input's out-of-order ticks come: within the default watermark bound, so that the bursts
# measure ticks applied, not sent aside as late.
INPUT_MAX_DELAY_MS = sample.delay_within(Settings.watermark_bound_ms)


def input_file(ticks: int, symbols: int, window_s: int, seed: int = 11) -> Path:
    """A generated tick file: `ticks` ticks over `symbols` symbols, spanning 1.25 windows (at least 10 min)
    of event time, so that the longest window fills. Cached by its parameters."""
    path = CACHE / f"input-{ticks}-{symbols}-{window_s}-{seed}-{INPUT_MAX_DELAY_MS}.parquet"
    if path.exists():
        return path
    duration_s = max(600.0, 1.25 * window_s)
    rate = ticks / symbols / duration_s
    say(f"generating {ticks:,} ticks, {symbols:,} symbols, {duration_s:,.0f} s of event time ...")
    table = sample.generate(symbols=symbols, duration_s=duration_s, ticks_per_second=rate,
                            spikes_per_symbol=2, out_of_order_share=0.02, max_delay_ms=INPUT_MAX_DELAY_MS,
                            seed=seed)
    sample.write(table, path.with_suffix(".tmp.parquet")).rename(path)
    return path


# -- one measured run: a child process ------------------------------------------------------------------------

def child_settings(args):
    from stockmax import config

    return config.load().with_(data_dir=Path(args.data_dir), kafka_bootstrap=args.bootstrap,
                               topic_prefix=args.topic_prefix, job_name=f"bench-{uuid.uuid4().hex[:8]}",
                               windows=args.windows)


def run_pure(args) -> dict:
    """The operators alone: ticks in arrival order, a frontier that trails the newest event time by the
    watermark bound, advanced every 1000 ticks (as a bundle of the job would)."""
    import pyarrow.parquet as pq

    from stockmax.operators.symbol import SymbolProcessor, frontier_from_watermark_ms
    from stockmax.operators.tick import Tick

    from stockmax.jobs.pipeline import WORKER_GC_THRESHOLDS

    gc.set_threshold(*WORKER_GC_THRESHOLDS)  # as the job's worker does (SymbolFunction.open)
    settings = child_settings(args)
    rules = settings.rules()
    rows = pq.read_table(args.input).to_pylist()
    ticks = [Tick(r["symbol"], r["price"], r["volume"], r["exchange"], r["seq"], r["event_time"]) for r in rows]
    bound_ms = settings.watermark_bound_ms
    processors: dict[str, SymbolProcessor] = {}
    dirty: set[str] = set()
    outputs = 0
    newest_ms = -1
    watermark_ms = -(2**62)
    started = time.perf_counter()
    for i, tick in enumerate(ticks):
        processor = processors.get(tick.symbol)
        if processor is None:
            processor = processors[tick.symbol] = SymbolProcessor(rules)
        processor.accept(tick, frontier_from_watermark_ms(watermark_ms))
        dirty.add(tick.symbol)
        newest_ms = max(newest_ms, tick.event_time // 1000)
        if i % 1000 == 999:
            watermark_ms = newest_ms - bound_ms - 1
            frontier = frontier_from_watermark_ms(watermark_ms)
            for symbol in dirty:
                out = processors[symbol].advance(frontier)
                outputs += len(out.alerts) + len(out.max_updates) + len(out.rollups)
            dirty = {s for s in dirty if processors[s].pending}
    elapsed = time.perf_counter() - started
    sizes = [len(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)) for p in processors.values()]
    return {"ticks": len(ticks), "seconds": elapsed, "outputs": outputs,
            "state_bytes_per_symbol": statistics.mean(sizes)}


def _flink_result_seconds(job_result) -> float:
    return job_result.get_net_runtime() / 1000


def run_job(args) -> dict:
    """(2): the job's operators, outputs discarded."""
    from pyflink.datastream import StreamExecutionEnvironment

    from stockmax.flink_env import local_configuration
    from stockmax.jobs.pipeline import build

    settings = child_settings(args)
    env = StreamExecutionEnvironment.get_execution_environment(local_configuration(settings))
    build(env, settings, bounded=True, discard_outputs=True)
    seconds = _flink_result_seconds(env.execute(settings.job_name))
    return {"ticks": args.ticks, "seconds": seconds}


def run_sql_hop(args) -> dict:
    """(3): Flink SQL HOP(60 s, 1 s) MAX(price) per symbol over the same topic, JVM only."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from stockmax.flink_env import local_configuration
    from stockmax.jobs.kafka_tables import kafka_options, sql_interval, sql_options

    settings = child_settings(args)
    conf = local_configuration(settings)
    t_env = TableEnvironment.create(EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf)
                                    .build())
    options = {**kafka_options(settings, settings.topic("ticks")), "properties.group.id": settings.job_name,
               "scan.startup.mode": "earliest-offset", "scan.bounded.mode": "latest-offset", "value.format": "json",
               "scan.watermark.idle-timeout": f"{settings.source_idleness_ms} ms"}
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE ticks (
          symbol STRING, price DOUBLE,
          event_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
          WATERMARK FOR event_ts AS event_ts - {sql_interval(settings.watermark_bound_ms + 1)}
        ) WITH ({sql_options(options)})""")
    t_env.execute_sql("CREATE TEMPORARY TABLE maxima (symbol STRING, window_end TIMESTAMP(3), high DOUBLE) "
                      "WITH ('connector' = 'blackhole')")
    result = t_env.execute_sql(f"""
        INSERT INTO maxima
        SELECT symbol, window_end, MAX(price) FROM TABLE(
          HOP(TABLE ticks, DESCRIPTOR(event_ts), INTERVAL '1' SECOND, {sql_interval(args.hop_window_s * 1000)}))
        GROUP BY symbol, window_start, window_end""")
    seconds = _flink_result_seconds(result.get_job_client().get_job_execution_result().result())
    return {"ticks": args.ticks, "seconds": seconds}


def run_full(args) -> dict:
    """(4): `stockmax run --bounded`: every output to Kafka exactly-once, loaded into ClickHouse."""
    from stockmax import runner

    settings = child_settings(args)
    started = time.perf_counter()
    result = runner.run(settings, bounded=True, fresh=True, say=lambda _: None)
    return {"ticks": args.ticks, "seconds": result.job_seconds, "with_load_seconds": time.perf_counter() - started,
            "rollups_loaded": result.rollups_loaded}


CHILDREN = {"pure": run_pure, "job": run_job, "sql-hop": run_sql_hop, "full": run_full}


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=sorted(CHILDREN))
    for name in ("--input", "--data-dir", "--bootstrap", "--topic-prefix", "--windows"):
        parser.add_argument(name, required=True)
    parser.add_argument("--ticks", type=int, required=True)
    parser.add_argument("--hop-window-s", type=int, default=60)
    args = parser.parse_args(argv)
    result = CHILDREN[args.variant](args)
    print("RESULT " + json.dumps(result), flush=True)


def _clean_env() -> dict[str, str]:
    """This environment without stockmax's settings and PyFlink's state: a child sees only what it is given."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("STOCKMAX_", "PYFLINK_"))}


def measured(variant: str, inp: "Input", windows: str, data_dir: Path, bootstrap: str, topic_prefix: str,
             hop_window_s: int = 60, timeout_s: float = 900) -> dict:
    """Run one variant in a child process; its result plus the peak RSS of its process tree."""
    import psutil

    command = [sys.executable, __file__, "child", variant, "--input", str(inp.path), "--data-dir", str(data_dir),
               "--bootstrap", bootstrap, "--topic-prefix", topic_prefix, "--windows", windows,
               "--ticks", str(inp.ticks), "--hop-window-s", str(hop_window_s)]
    child = subprocess.Popen(command, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    peak = 0
    stop = threading.Event()

    def poll():
        nonlocal peak
        root = psutil.Process(child.pid)
        while not stop.wait(0.25):
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        out, err = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return {"ticks": inp.ticks, "seconds": float("inf"), "ticks_per_s": 0.0, "peak_rss": peak,
                "timed_out": timeout_s}
    finally:
        stop.set()
        poller.join()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} failed (exit {child.returncode}):\n{err[-4000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["peak_rss"] = peak
    result["ticks_per_s"] = result["ticks"] / result["seconds"]
    return result


# -- the parent: inputs in Kafka, the runs, the report ----------------------------------------------------------

class Input(NamedTuple):
    """A tick file, published in its own ticks topic."""
    path: Path
    ticks: int
    topic_prefix: str


def publish(settings, path: Path, ticks: int, batched: bool) -> Input:
    """The file in its own ticks topic: per-tick JSON records, or Arrow batch records."""
    from stockmax import kafka_io, replay

    prefix = f"b{uuid.uuid4().hex[:6]}-"
    topic_settings = settings.with_(topic_prefix=prefix)
    kafka_io.create_topics(topic_settings)
    started = time.perf_counter()
    replay.replay(topic_settings, path, progress=False, batch_ticks=1000 if batched else 1)
    say(f"  published {ticks:,} ticks as {'Arrow batches' if batched else 'JSON records'} in "
        f"{time.perf_counter() - started:.0f} s")
    return Input(path, ticks, prefix)


def median_run(variant: str, inp: Input, runs: int, **kwargs) -> dict:
    results = [measured(variant, inp, **kwargs) for _ in range(runs)]
    best = sorted(results, key=lambda r: r["ticks_per_s"])[len(results) // 2]
    best = dict(best)
    best["runs"] = [round(r["ticks_per_s"]) for r in results]
    best["peak_rss"] = max(r["peak_rss"] for r in results)
    return best


LATENCY_SPIKE_PCT = 0.2
# The live runs (bench/live.py), in this order: (variant, stockmax profile, ticks/s, symbols, settings). The
# last three are the memory case: 10 k symbols with the longest window and the dedup horizon 1 min, so that
# the state is full after a minute and the rest of the run shows whether it stays flat (an hour's window would
# need an hour and more of feed); stockmax in the throughput profile, since a checkpoint writes every symbol
# changed since the one before, and with 10 k symbols that is nearly all of them; the SQL baselines beside it
# with the same windows, since their cost grows with the symbols too.
MANY_SYMBOLS_WINDOWS = {"STOCKMAX_WINDOWS": "1s,1m"}
LIVE_RUNS = (
    ("stockmax", "throughput", 40_000, 1000, {}),
    ("sql-over", None, 40_000, 1000, {}),
    ("sql-hop", None, 40_000, 1000, {}),
    ("stockmax", "balanced", 20_000, 1000, {}),
    ("stockmax", "low-latency", 10_000, 1000, {}),
    ("stockmax", "throughput", 20_000, 10_000, MANY_SYMBOLS_WINDOWS),
    ("sql-over", None, 20_000, 10_000, MANY_SYMBOLS_WINDOWS),
    ("sql-hop", None, 20_000, 10_000, MANY_SYMBOLS_WINDOWS),
)


def _live_job(settings, name: str, **env_settings: str):
    """`stockmax run` unbounded in a process group of its own, on topics of its own: (its settings, process)."""
    from stockmax import kafka_io

    prefix = f"{name[0]}{uuid.uuid4().hex[:6]}-"
    s = settings.with_(topic_prefix=prefix, job_name=f"bench-{name}-{uuid.uuid4().hex[:6]}")
    kafka_io.create_topics(s)
    env = _clean_env()
    env.update({"STOCKMAX_DATA_DIR": str(s.data_dir), "STOCKMAX_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
                "STOCKMAX_TOPIC_PREFIX": prefix, "STOCKMAX_JOB_NAME": s.job_name, **env_settings})
    job = subprocess.Popen([sys.executable, "-m", "stockmax.cli", "run", "--fresh"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return s, job


def _stop_live_job(job: subprocess.Popen) -> None:
    """As Ctrl-C does (a savepoint, the loader's last batch), or killed when that takes too long."""
    job.send_signal(signal.SIGINT)
    try:
        job.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)


def latency(settings, inp: Input, rate: int, seconds: float) -> dict:
    """Tick -> alert (and tick -> max update) wall-clock latency: the job runs unbounded (`stockmax run`), ticks
    are published at `rate` per second, and a read_committed consumer notes when each output that a tick caused
    becomes readable."""
    import pyarrow.parquet as pq

    from stockmax import kafka_io
    from stockmax.replay import tick_record

    # A low spike threshold: the random walk then gives alerts every few seconds per symbol, enough samples.
    s, job = _live_job(settings, "latency", STOCKMAX_SPIKE_THRESHOLD_PCT=str(LATENCY_SPIKE_PCT))
    prefix = s.topic_prefix
    sent: dict[tuple[str, int], float] = {}
    seen: dict[str, list[float]] = {"alerts": [], "max_updates": []}
    stop = threading.Event()
    consumer, _ = kafka_io.committed_reader(s, [s.topic("alerts"), s.topic("max_updates")], f"lat-{prefix}")

    def consume():
        first = set()
        while not stop.is_set():
            for tp, records in consumer.poll(timeout_ms=200).items():
                now = time.time()
                kind = "alerts" if tp.topic == s.topic("alerts") else "max_updates"
                for r in records:
                    value = json.loads(r.value)
                    key = (value["symbol"], value["seq"])
                    if key in sent and (kind, key) not in first:
                        first.add((kind, key))
                        seen[kind].append(now - sent[key])

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        time.sleep(15)  # the job starts (JVM, Python worker) before the clock starts
        rows = pq.read_table(inp.path).slice(0, int(rate * seconds)).to_pylist()
        producer = kafka_io.producer(s, linger_ms=5)
        started = time.monotonic()
        for i, row in enumerate(rows):
            due = started + i / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            key, value, timestamp_ms = tick_record(row)
            sent[(row["symbol"], row["seq"])] = time.time()
            producer.send(s.topic("ticks"), key=key, value=value, timestamp_ms=timestamp_ms)
        producer.flush()
        time.sleep(15)  # the last ticks' outputs: watermark, bundle, checkpoint
    finally:
        stop.set()
        reader.join()
        consumer.close()
        _stop_live_job(job)

    def pct(values, q):
        return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 2 else float("nan")

    return {kind: {"n": len(v), "p50": pct(v, 50), "p99": pct(v, 99)} for kind, v in seen.items()} | \
        {"rate": rate, "ticks": len(rows)}


def sustained(settings, path: Path, ticks: int, rate: int, start_s: float = 15, catch_up_s: float = 60) -> dict:
    """The full pipeline live, as it runs in service: `stockmax run` unbounded (its loader beside it), the
    file's Arrow batches published at `rate` ticks/s into a topic of its own; every 0.5 s the job's committed
    source offsets (they move at checkpoints, when the outputs before them are committed too) against what
    was published. Whether it keeps up shows in the lag: bounded while publishing, and gone within a few
    checkpoints after."""
    from stockmax import kafka_io
    from stockmax.replay import replay

    s, job = _live_job(settings, "live")
    admin, topic = kafka_io.admin(s), s.topic("ticks")
    reader, partitions = kafka_io.committed_reader(s, [topic], f"live-{s.topic_prefix}")

    def as_ticks(records: int) -> int:
        return min(records * 1000, ticks)  # records of 1,000 ticks (a partition's last one fewer)

    def committed_ticks() -> int:
        offsets = admin.list_group_offsets(s.job_name)
        if offsets and isinstance(next(iter(offsets)), str):  # keyed by group in some kafka-python versions
            offsets = offsets.get(s.job_name) or {}
        return as_ticks(sum(o.offset for tp, o in (offsets or {}).items() if tp.topic == topic))

    published = threading.Event()
    samples: list[tuple[float, int]] = []  # (seconds since publishing began, lag in ticks)
    try:
        time.sleep(start_s)  # the job starts (JVM, Python worker) before the clock starts
        assert job.poll() is None, f"the live job ended: {job.stderr.read()[-2000:]}"
        started = time.monotonic()
        publisher = threading.Thread(target=lambda: (replay(s, path, progress=False, batch_ticks=1000,
                                                            ticks_per_s=rate), published.set()), daemon=True)
        publisher.start()
        published_at = done_at = None
        while done_at is None and time.monotonic() - (published_at or started) < catch_up_s:
            time.sleep(0.5)
            assert job.poll() is None, f"the live job ended: {job.stderr.read()[-2000:]}"
            elapsed = time.monotonic() - started
            if published_at is None and published.is_set():
                published_at = time.monotonic()
            lag = as_ticks(sum(reader.end_offsets(partitions).values())) - committed_ticks()
            samples.append((elapsed, lag))
            if published_at and lag <= 0:
                done_at = time.monotonic()
    finally:
        reader.close()
        admin.close()
        _stop_live_job(job)
    publish_s = (published_at or time.monotonic()) - started
    while_publishing = [lag for t, lag in samples if t <= publish_s]
    return {"rate": rate, "ticks": ticks, "publish_s": publish_s, "max_lag": max(while_publishing, default=0),
            "lag_at_half": while_publishing[len(while_publishing) // 2] if while_publishing else 0,
            "lag_at_end": while_publishing[-1] if while_publishing else 0,
            "catch_up_s": (done_at - published_at) if done_at else None,
            "ticks_per_s": ticks / (done_at - started) if done_at else None}


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description="stockmax throughput, latency and memory vs Flink SQL")
    parser.add_argument("--ticks", type=int, default=1_000_000, help="ticks in the main input (100 k .. 10 M)")
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="runs per variant on the main input (median)")
    parser.add_argument("--live-seconds", type=float, default=300,
                        help="how long each live run's feed publishes (0: skip the live runs)")
    parser.add_argument("--serving-seconds", type=float, default=20,
                        help="how long each serving load is held (bench/serving.py; 0: skip)")
    parser.add_argument("--scaling-timeout", type=float, default=40, help="seconds a scaling run may take")
    parser.add_argument("--scaling-ticks", type=int, default=100_000, help="ticks per scaling input (0: skip)")
    parser.add_argument("--latency-rate", type=int, default=2000, help="ticks/s published for the latency run")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--live-rate", type=int, default=50_000,
                        help="ticks/s at which the main input is published into a live `stockmax run` (0: skip)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results.md")
    args = parser.parse_args()

    from stockmax import config
    from stockmax.kafka_local import LocalKafka, free_port

    CACHE.mkdir(parents=True, exist_ok=True)
    run_dir = CACHE / "run"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    base = config.load(env={})
    broker = LocalKafka(run_dir / "kafka", base.kafka_jars_dir, port=free_port())
    say(f"starting a Kafka broker on {broker.bootstrap} ...")
    broker.start()
    settings = base.with_(data_dir=run_dir / "data", kafka_bootstrap=broker.bootstrap)
    started = time.perf_counter()
    report = Report(args, settings)
    try:
        if args.live_seconds:
            import live

            for variant, profile, rate, symbols, job_settings in LIVE_RUNS:
                report.live_runs.append(live.run_job(settings, variant, profile, rate, args.live_seconds, symbols,
                                                     job_settings))
        if args.serving_seconds:
            import serving

            report.serving = serving.measure(settings, run_dir / "serving", [1000, 5000, 10000], args.serving_seconds,
                                             50, 1000)
        main_file = input_file(args.ticks, args.symbols, 60)
        json_in = publish(settings, main_file, args.ticks, batched=False)
        batch_in = publish(settings, main_file, args.ticks, batched=True)
        # A prefix of the input for the full pipeline's warm-up run.
        prefix_ticks = min(args.ticks, 100_000)
        prefix_file = CACHE / f"{main_file.stem}-first-{prefix_ticks}.parquet"
        if not prefix_file.exists():
            import pyarrow.parquet as pq

            pq.write_table(pq.read_table(main_file).slice(0, prefix_ticks), prefix_file)
        common = {"windows": settings.windows, "data_dir": run_dir / "data", "bootstrap": broker.bootstrap}
        for name, variant, inp, runs in (
                ("(1) pure operators", "pure", json_in, args.runs),
                ("(2) job, JSON records", "job", json_in, args.runs),
                ("(2) job, Arrow batches", "job", batch_in, args.runs),
                ("(3) Flink SQL HOP(60 s, 1 s) MAX", "sql-hop", json_in, args.runs)):
            say(f"{name}: {runs} run(s) ...")
            report.main[name] = median_run(variant, inp, runs, topic_prefix=inp.topic_prefix, **common)
            say(f"  {report.main[name]['ticks_per_s']:,.0f} ticks/s (runs: {report.main[name]['runs']})")
        # The first transactional runs against a fresh broker were the slowest here (e.g. 34 k, then 45 k):
        # it creates its transaction log then, and its JIT has not seen that path. A broker in service
        # has done both: one run over the input's first ticks, not counted, does them first.
        say(f"(4) full pipeline: a warm-up run over the first {prefix_ticks:,} ticks, not counted ...")
        batch_prefix_in = publish(settings, prefix_file, prefix_ticks, batched=True)
        measured("full", batch_prefix_in, topic_prefix=batch_prefix_in.topic_prefix, **common)
        say(f"(4) full pipeline, Arrow batches: {args.runs} run(s) ...")
        full = report.main["(4) full pipeline, Arrow batches"] = median_run(
            "full", batch_in, args.runs, topic_prefix=batch_in.topic_prefix, **common)
        say(f"  {full['ticks_per_s']:,.0f} ticks/s (runs: {full['runs']})")
        say(f"(4) latency at {args.latency_rate} ticks/s for {args.latency_seconds:g} s ...")
        report.latency = latency(settings, json_in, args.latency_rate, args.latency_seconds)
        say(f"  {report.latency}")
        if args.live_rate:
            say(f"(4) live: the main input published at {args.live_rate:,} ticks/s into `stockmax run` ...")
            report.live = sustained(settings, main_file, args.ticks, args.live_rate)
            say(f"  {report.live}")
        if args.scaling_ticks:
            # 10 k symbols with a 1 h window: the memory case
            for symbols, window_s in ((100, 60), (1000, 60), (10_000, 60), (1000, 3600), (1000, 86_400),
                                      (10_000, 3600)):
                path = input_file(args.scaling_ticks, symbols, window_s)
                inp = publish(settings, path, args.scaling_ticks, batched=True)
                json_scaled = publish(settings, path, args.scaling_ticks, batched=False)
                windows = _window_text(window_s)
                row = {}
                for variant, source in (("pure", inp), ("job", inp), ("sql-hop", json_scaled)):
                    say(f"scaling: {symbols:,} symbols, {windows} window, {variant} ...")
                    row[variant] = measured(variant, source, windows=windows, data_dir=run_dir / "data",
                                            bootstrap=broker.bootstrap, topic_prefix=source.topic_prefix,
                                            hop_window_s=window_s, timeout_s=args.scaling_timeout)
                report.scaling[(symbols, windows)] = row
    finally:
        broker.stop()
        # what was measured is written even when a run failed (the failure is raised after)
        report.seconds = time.perf_counter() - started
        report.write(args.out)
        say(f"wrote {args.out} and {args.out.with_suffix('.png')} in {report.seconds / 60:.1f} min")


def _seconds(x: float) -> str:
    return "-" if x != x else f"{x:.2f} s"


def _window_text(seconds: int) -> str:
    return {60: "1m", 3600: "1h", 86_400: "24h"}[seconds]


class Report:
    def __init__(self, args, settings):
        self.args, self.settings = args, settings
        self.main: dict[str, dict] = {}
        self.latency: dict = {}
        self.live: dict = {}
        self.live_runs: list[dict] = []
        self.serving: dict = {}
        self.scaling: dict[tuple[int, str], dict] = {}
        self.seconds = 0.0

    def write(self, path: Path) -> None:
        mib = lambda b: f"{b / 2**20:,.0f} MiB"
        s = self.settings
        lines = [
            "# stockmax benchmark results", "",
            f"Written by `make bench` (bench/throughput.py) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"in {self.seconds / 60:.1f} min. Machine: {os.cpu_count()} cores, "
            f"{_memory_gib():.0f} GiB, Python {platform.python_version()}, {_java_version()}.", ""]
        if self.live_runs:
            from live import live_table

            lines += [
                "## Live: per-tick JSON, event time = the wall clock", "",
                f"What users do: a feed process of its own (confluent-kafka, not `stockmax replay`) publishes one JSON "
                f"record per tick, event time = now, at a fixed rate for {self.args.live_seconds:g} s, into an "
                "unbounded job at its defaults (stockmax: `stockmax run` with its ClickHouse loader, in the profile "
                "named), read `read_committed` by an independent reader; the feed, the broker, the job and the reader "
                "share the machine. The 10,000-symbol runs are the memory case: the longest window and the dedup "
                "horizon at 1 min (`STOCKMAX_WINDOWS=1s,1m`, the SQL baselines with the same windows): the state is "
                "full after a minute of the feed, and the rest shows whether memory and checkpoints stay flat.", "",
                *self._live_summary(), "", *live_table(self.live_runs), ""]
        if self.serving:
            from serving import serving_table

            lines += ["## Serving: `stockmax serve` against a process per question", "", *serving_table(self.serving), ""]
        if self.live_runs or self.serving:
            lines += ["## Bursts and batches", ""]
        lines += [
            f"Main input: {self.args.ticks:,} ticks, {self.args.symbols:,} symbols, random walk with spikes, 2 % out "
            f"of order (up to {INPUT_MAX_DELAY_MS / 1000:g} s), windows {s.windows}, rollups {s.rollup_resolutions}, parallelism "
            f"{s.parallelism}, Python bundle {s.python_bundle_size:,} / {s.python_bundle_time_ms} ms, checkpoints "
            f"every {s.checkpoint_interval_ms} ms, outputs compressed with {s.kafka_compression}, Python steps in "
            f"{s.python_workers} mode. Ticks/s is the median of {self.args.runs} runs (each run's figure in "
            "brackets); (4) follows one uncounted warm-up run of the full pipeline (a fresh broker creates its "
            "transaction log on first use). Peak RSS is the whole process tree's (client, Flink JVM, Python "
            "worker).", "",
            "| variant | ticks/s | runs | peak RSS | state bytes / symbol |", "|---|---:|---|---:|---:|"]
        for name, r in self.main.items():
            state = f"{r['state_bytes_per_symbol']:,.0f}" if "state_bytes_per_symbol" in r else ""
            lines.append(f"| {name} | {r['ticks_per_s']:,.0f} | {r.get('runs', '')} | {mib(r['peak_rss'])} | {state} |")
        ratio = self._ratio()
        if ratio:
            lines += ["", *ratio]
        if self.latency:
            lat = self.latency
            lines += ["", f"Latency, wall clock from produce to read_committed read, {lat['ticks']:,} ticks published at "
                      f"{lat['rate']:,}/s into `stockmax run` (watermark bound {s.watermark_bound_ms} ms, checkpoints "
                      f"every {s.checkpoint_interval_ms} ms: an output is readable when the checkpoint after it commits; spike "
                      f"threshold {LATENCY_SPIKE_PCT} % for this run, so that alerts are frequent):",
                      "", "| output | samples | p50 | p99 |", "|---|---:|---:|---:|"]
            for kind in ("alerts", "max_updates"):
                v = lat[kind]
                lines.append(f"| tick → {kind.replace('_', ' ')} | {v['n']:,} | {v['p50']:.2f} s | {v['p99']:.2f} s |")
        if self.live:
            live = self.live
            kept_up = (f"all committed {live['catch_up_s']:.1f} s after the last was published "
                       f"({live['ticks_per_s']:,.0f} ticks/s from the first published to the last committed)"
                       if live["catch_up_s"] is not None else "not all committed within a minute after publishing")
            lag = lambda ticks: f"{ticks:,} ticks ({ticks / live['rate']:.1f} s of input)"
            lines += ["", f"Arrow burst (4): `stockmax run` unbounded with its ClickHouse loader, {live['ticks']:,} ticks of the "
                      f"main input published as Arrow batches at {live['rate']:,} ticks/s (took {live['publish_s']:.1f} s); "
                      f"the job's committed source offsets (they move at checkpoints) against what was published, "
                      f"every 0.5 s. Lag half way {lag(live['lag_at_half'])}, at the end of publishing "
                      f"{lag(live['lag_at_end'])}, at most {lag(live['max_lag'])}; {kept_up}. It keeps up when the lag "
                      f"stays flat while publishing (what is in flight until the next checkpoint completes)."]
        if self.scaling:
            lines += ["", f"Scaling ({self.args.scaling_ticks:,} ticks each; job from Arrow batches, SQL from JSON "
                      "records; one run each):", "",
                      "| symbols | window | pure ticks/s | job ticks/s | SQL HOP ticks/s | job / SQL | job peak RSS "
                      "| SQL peak RSS | state bytes / symbol |",
                      "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
            rate = lambda r: f"stopped after {r['timed_out']:.0f} s" if r.get("timed_out") else f"{r['ticks_per_s']:,.0f}"
            for (symbols, window), row in self.scaling.items():
                sql = row["sql-hop"]
                ratio = f"{row['job']['ticks_per_s'] / sql['ticks_per_s']:.2f}" if sql["ticks_per_s"] else "—"
                lines.append(
                    f"| {symbols:,} | {window} | {rate(row['pure'])} | {rate(row['job'])} | {rate(sql)} | {ratio} | "
                    f"{mib(row['job']['peak_rss'])} | {mib(sql['peak_rss'])} | "
                    f"{row['pure'].get('state_bytes_per_symbol', 0):,.0f} |")
        lines += ["", "Reproduce: `make bench` (options: `.venv/bin/python bench/throughput.py --help`).", ""]
        path.write_text("\n".join(lines))
        self._plot(path.with_suffix(".png"))

    def _live_summary(self) -> list[str]:
        from live import job_name

        def quiet(r: dict) -> str:
            if "quiet_flush_s" not in r or not r["kept_up"]:
                return ""
            return (f"; feed stops: last output {_seconds(r['quiet_flush_s'])} after the last tick, the newest "
                    f"output's tick {r.get('quiet_newest_output_gap_ms', float('nan')):,.0f} ms before the last; alert "
                    f"p99 + 1 s = {_seconds(r['alerts']['p99'] + 1)}; {r.get('late_ticks', '-')} late ticks")

        def kept(variant: str, rate: int, symbols: int) -> list[dict]:
            return [r for r in self.live_runs if r["variant"] == variant and r["rate"] == rate
                    and r.get("symbols", 1000) == symbols]
        out = []
        for symbols, rate in sorted({(r.get("symbols", 1000), r["rate"]) for r in self.live_runs}):
            runs = {job_name(r): r for variant in ("stockmax", "sql-over", "sql-hop")
                    for r in kept(variant, rate, symbols)}
            if runs:
                out.append(f"- {rate:,} ticks/s, {symbols:,} symbols: " + "; ".join(
                    f"{name} **failed after {r['failed']['after_s']} s** ({r['failed']['cause']})" if r.get("failed")
                    else f"{name} {'kept up' if r['kept_up'] else '**did not keep up**'} (2nd-half max update p99 "
                    f"{_seconds(r['max_updates']['second_half']['p99'])}{quiet(r)})" for name, r in runs.items()))
        return out

    def _ratio(self) -> list[str]:
        sql = self.main.get("(3) Flink SQL HOP(60 s, 1 s) MAX")
        if not sql:
            return []
        out = []
        for name in [n for n in self.main if n.startswith("(2)")]:
            out.append(f"- {name} / (3) SQL HOP: **{self.main[name]['ticks_per_s'] / sql['ticks_per_s']:.2f}**")
        json_job, batch_job = self.main.get("(2) job, JSON records"), self.main.get("(2) job, Arrow batches")
        if json_job and batch_job:
            out.append(f"- (2) job, JSON records / Arrow batches: "
                       f"**{json_job['ticks_per_s'] / batch_job['ticks_per_s']:.2f}**")
        full = self.main.get("(4) full pipeline, Arrow batches")
        if full:
            out.append(f"- (4) full pipeline: **{full['ticks_per_s']:,.0f} ticks/s** in the job "
                       f"({full['ticks'] / full['with_load_seconds']:,.0f} ticks/s with start-up and the "
                       f"ClickHouse load); target 50,000")
        return out

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = 2 if self.scaling else 1
        fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), squeeze=False)
        ax = axes[0][0]
        names = list(self.main)
        ax.barh(names, [self.main[n]["ticks_per_s"] for n in names], color="#4477aa")
        ax.invert_yaxis()
        ax.set_xlabel("ticks/s (median)")
        ax.set_title(f"{self.args.ticks:,} ticks, {self.args.symbols:,} symbols")
        if self.scaling:
            ax = axes[0][1]
            labels = [f"{s:,} sym\n{w}" for s, w in self.scaling]
            x = range(len(labels))
            for offset, (variant, color) in enumerate((("job", "#4477aa"), ("sql-hop", "#ee6677"))):
                ax.bar([i + offset * 0.4 for i in x], [r[variant]["ticks_per_s"] for r in self.scaling.values()],
                       width=0.4, label={"job": "(2) job, Arrow batches", "sql-hop": "(3) SQL HOP"}[variant],
                       color=color)
            ax.set_xticks([i + 0.2 for i in x], labels, fontsize=8)
            ax.set_ylabel("ticks/s")
            ax.set_title("scaling with symbols and window")
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)


def _memory_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


def _java_version() -> str:
    out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return out[0] if out else "java"


if __name__ == "__main__":
    main()

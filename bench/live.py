"""The live benchmark: what a user's feed does. One JSON record per tick, event time = the wall clock,
published at a fixed rate by a feed process of its own (confluent-kafka, not stockmax's replay), into an
unbounded `stockmax run` (default settings, its ClickHouse loader on), sustained for a while at each rate.

    .venv/bin/python bench/live.py [--rates 5000,10000,20000] [--seconds 120] [--symbols 1000] [--out bench/live.md]
    .venv/bin/python bench/live.py --search 10000:80000:10000 [--seconds 120] [--out bench/live-search.md]

With --search LOW:HIGH:STEP, each job's highest rate kept up on that grid, found by bisection (a run per
rate tried; a rate above one not kept up is not tried), beside each other in one report.

Per rate, every second: the job's committed offsets on the ticks topic against what was published (the
lag; committed offsets move at checkpoints, together with the outputs before them), the RSS of the job's
process tree, the size of its latest checkpoint. A read_committed reader notes when each max update and
alert becomes readable: tick -> output latency is that moment minus the tick's event time (= when it was
published). A rate is kept up when the lag over the second half of the run stays within two checkpoint
intervals' worth of input and does not grow.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from throughput import _clean_env, say  # noqa: E402


def feed(bootstrap: str, topic: str, rate: int, seconds: float, symbols: int, ready, counter, last_stamp) -> None:
    """The feed handler: `rate` ticks/s of one JSON record each, event time = now, record timestamp = event
    time in ms, keyed by symbol. Sends in 10 ms slices so the pace holds without a sleep per tick. Counts
    the ticks sent (counter) and keeps the newest one's event time (µs, last_stamp)."""
    import confluent_kafka
    import orjson

    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 1 << 20,
                                         "queue.buffering.max.messages": 2_000_000, "compression.type": "lz4",
                                         "acks": "all"})
    rng = random.Random(7)
    names = [f"S{i:05d}" for i in range(symbols)]
    prices = [100.0 + rng.random() * 100 for _ in names]
    seqs = [0] * symbols
    ready.set()
    started = time.monotonic()
    sent = newest_us = 0
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        due = int(rate * min(elapsed + 0.01, seconds))
        while sent < due:
            i = rng.randrange(symbols)
            # A random walk with now and then a jump of a few percent: spike alerts to time.
            prices[i] = round(max(0.01, prices[i] * (1 + rng.gauss(0, 0.0005) + (0.03 if rng.random() < 1e-4 else 0))), 4)
            seqs[i] += 1
            now_us = time.time_ns() // 1000
            value = orjson.dumps({"symbol": names[i], "price": prices[i], "volume": float(rng.randrange(1, 500)),
                                  "exchange": "XNAS", "seq": seqs[i], "event_time": now_us})
            while True:
                try:
                    producer.produce(topic, value, names[i].encode(), timestamp=now_us // 1000)
                    break
                except BufferError:
                    producer.poll(0.01)
            sent += 1
            newest_us = now_us
        counter.value = sent
        last_stamp.value = newest_us
        producer.poll(0)
        pause = started + elapsed + 0.01 - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    producer.flush(60)
    counter.value = sent


def kept_up(result: dict) -> bool:
    """Committed offsets move at checkpoints, so the lag is a saw tooth of about a checkpoint interval of
    input. Kept up: over the second half the lag stays within three checkpoint intervals and two seconds of
    input, and everything published is committed within 30 s after the feed stops."""
    allowed = result["rate"] * (3 * result["checkpoint_interval_s"] + 2)
    return result["caught_up_s"] is not None and result["caught_up_s"] <= 30 and result["lag_max_second_half"] <= allowed


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


VARIANTS = {
    "stockmax": ["-m", "stockmax.cli", "run", "--fresh", "--no-progress"],
    "sql-over": [str(ROOT / "bench" / "sql_live_job.py"), "over"],
    "sql-hop": [str(ROOT / "bench" / "sql_live_job.py"), "hop"],
}


def checkpoint_durations_ms(data_dir: Path) -> list[float]:
    """Every completed checkpoint's duration (ms), from the job's Flink log (the local JVM logs into the
    job's data dir)."""
    found = []
    for log in data_dir.glob("logs/*.log"):
        found += [float(m) for m in re.findall(r"Completed checkpoint \d+ for job \w+ \(\d+ bytes, "
                                               r"checkpointDuration=(\d+) ms", log.read_text(errors="replace"))]
    return found


def job_failure(data_dir: Path) -> str:
    """Why a job's JVM went, from its Flink log: the first JVM error (an OutOfMemoryError, say), else the
    exception that failed a task."""
    text = "\n".join(log.read_text(errors="replace") for log in sorted(data_dir.glob("logs/*.log")))
    for pattern in (r"^(java\.lang\.\w+Error\b[^\n]*)", r"switched from \w+ to FAILED[^\n]*\n([\w.$]+[^\n]*)"):
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            return found.group(1)[:200]
    return "its process ended (no error in its Flink log)"


# How the latency reader reads the outputs: as a user does, committed only ("read_committed"); with
# --uncommitted it reads them once written (before their transaction commits at a checkpoint), which
# splits a latency into the part before the sink and the commit's part. Not exactly-once then: diagnosis only.
READER_ISOLATION = "read_committed"


def run_rate(settings, variant: str, rate: int, seconds: float, symbols: int, env_settings: dict[str, str]) -> dict:
    import confluent_kafka
    import orjson
    import psutil

    from stockmax import kafka_io

    prefix = f"live{uuid.uuid4().hex[:6]}-"
    s = settings.with_(topic_prefix=prefix, job_name=f"bench-live-{uuid.uuid4().hex[:6]}",
                       data_dir=settings.data_dir / "bench-live" / prefix.rstrip("-"))
    kafka_io.create_topics(s)
    env = _clean_env()
    env.update({"STOCKMAX_DATA_DIR": str(s.data_dir), "STOCKMAX_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
                "STOCKMAX_TOPIC_PREFIX": prefix, "STOCKMAX_JOB_NAME": s.job_name, **env_settings})
    from stockmax import config

    job_settings = config.load(env=env)  # what the job runs with (its profile's)
    s = s.with_(checkpoint_interval_ms=job_settings.checkpoint_interval_ms)
    job = subprocess.Popen([sys.executable, *VARIANTS[variant]], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    # (read at, monotonic; latency s) per output record read
    latencies: dict[str, list[tuple[float, float]]] = {"max_updates": [], "alerts": []}
    last_read_us = [0]  # when the newest output was read (wall clock, µs)
    newest_output_us = [0]  # the newest event time among the outputs read (µs)
    stop = threading.Event()
    outputs_topics = {s.topic("max_updates"): "max_updates", s.topic("alerts"): "alerts"}

    def read_outputs():
        consumer = confluent_kafka.Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"{prefix}reader",
                                             "isolation.level": READER_ISOLATION, "auto.offset.reset": "earliest",
                                             "enable.auto.commit": False})
        consumer.subscribe(list(outputs_topics))
        while not stop.is_set():
            # consume(n, timeout) can wait out its whole timeout for a batch of n, which would add up to that
            # much to every latency read: wait for one message, then take what is already fetched.
            first = consumer.poll(0.2)
            for message in [] if first is None else [first, *consumer.consume(10_000, timeout=0)]:
                if message.error():
                    continue
                now_us = time.time_ns() // 1000
                event_time = orjson.loads(message.value()).get("event_time")
                if event_time is not None:
                    latencies[outputs_topics[message.topic()]].append((time.monotonic(), (now_us - event_time) / 1e6))
                    last_read_us[0] = now_us
                    newest_output_us[0] = max(newest_output_us[0], event_time)
        consumer.close()

    # The job's own consumer group, asked for its committed offsets only (it never joins the group).
    offsets_reader = confluent_kafka.Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": s.job_name,
                                               "enable.auto.commit": False})
    ticks_partitions = [confluent_kafka.TopicPartition(s.topic("ticks"), p) for p in range(s.topic_partitions)]

    def committed() -> int:
        offsets = kafka_io._retrying(lambda: offsets_reader.committed(ticks_partitions, timeout=10))
        return sum(max(0, tp.offset) for tp in offsets)

    def checkpoint_bytes() -> int:
        # The newest completed one (a checkpoint being written has no _metadata yet); Flink deletes old
        # ones meanwhile (two are retained): one gone while it is read counts as none.
        try:
            chks = sorted((p for p in s.checkpoint_dir.glob("*/chk-*") if (p / "_metadata").exists()),
                          key=lambda p: (p / "_metadata").stat().st_mtime_ns)
            return sum(f.stat().st_size for f in chks[-1].rglob("*") if f.is_file()) if chks else 0
        except FileNotFoundError:
            return 0

    reader = threading.Thread(target=read_outputs, daemon=True)
    reader.start()
    samples = []  # (t, published, committed, rss, checkpoint bytes)
    rss_by_role = []  # {role: bytes} beside each sample: which process a memory rise is in
    cpu = []  # (t, published, {process name: CPU seconds so far}) of the job's process tree
    ready, counter, last_stamp = multiprocessing.Event(), multiprocessing.Value("q", 0), multiprocessing.Value("q", 0)
    failed = None  # {"after_s", "cause"} when the job died while the feed ran
    try:
        # The job is up when it has committed a first checkpoint's offsets for a first record.
        kafka_io.producer(s).send(s.topic("ticks"), b"{}").get(timeout=30)
        deadline = time.monotonic() + 120
        while committed() < 1:
            if job.poll() is not None:
                raise RuntimeError(f"the job ended: {job.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the job did not start within 120 s")
            time.sleep(0.5)
        base = committed()
        publisher = multiprocessing.Process(target=feed, args=(s.kafka_bootstrap, s.topic("ticks"), rate, seconds,
                                                               symbols, ready, counter, last_stamp), daemon=True)
        publisher.start()
        ready.wait(30)
        started = time.monotonic()
        root = psutil.Process(job.pid)
        while publisher.is_alive() or time.monotonic() - started < seconds:
            time.sleep(1)
            if job.poll() is not None:
                # A job that dies under the load (a baseline out of heap) is a result, not a broken bench.
                failed = {"after_s": round(time.monotonic() - started), "cause": job_failure(s.data_dir)}
                publisher.terminate()
                break
            try:
                tree = [root, *root.children(recursive=True)]
                used, by_role = _usage_by_role(tree)
                rss = sum(by_role.values())
                cpu.append((time.monotonic() - started, counter.value, used))
            except psutil.Error:
                rss, by_role = 0, {}
            rss_by_role.append(by_role)
            samples.append((time.monotonic() - started, counter.value, committed() - base, rss, checkpoint_bytes()))
            if time.monotonic() - started > seconds + 60:
                break
        publisher.join(60)
        published = counter.value
        caught_up_s = None
        if not failed:
            # Catch up: what was published gets committed (or does not, within a minute).
            ended = time.monotonic()
            while committed() - base < published and time.monotonic() < ended + 60:
                time.sleep(0.5)
            if committed() - base >= published:
                caught_up_s = time.monotonic() - ended
            # The last outputs' checkpoint; for stockmax, the last ticks' outputs, which the quiet-feed rule
            # releases (quiet_flush_due_s), read by now.
            time.sleep(3 * s.checkpoint_interval_ms / 1000)
            if variant == "stockmax":
                time.sleep(max(0.0, last_stamp.value / 1e6 + quiet_flush_due_s(job_settings) - time.time()))
    finally:
        stop.set()
        reader.join(10)
        offsets_reader.close()
        job.send_signal(signal.SIGINT)
        try:
            job.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
        # Ticks the job found late: a feed stamped as it publishes should have none (stockmax's only; the SQL
        # jobs drop late rows without a word).
        late = sum(1 for _ in kafka_io.read_committed(s, s.topic("late"), 60)) if variant == "stockmax" else None
        _delete_topics(s)
    lags = [p - c for t, p, c, _, _ in samples if seconds / 2 <= t <= seconds]
    durations = checkpoint_durations_ms(s.data_dir)
    result = {
        "variant": variant, "rate": rate, "seconds": seconds, "symbols": symbols, "published": published,
        "caught_up_s": caught_up_s, "checkpoint_interval_s": s.checkpoint_interval_ms / 1000,
        "lag_max_second_half": max(lags, default=0), "lag_mean_second_half": sum(lags) / max(1, len(lags)),
        "rss_mib": [round(r / 2**20) for _, _, _, r, _ in samples[:: max(1, len(samples) // 10)]],
        "peak_rss_mib": round(max((r for *_, r, _ in samples), default=0) / 2**20),
        "rss_mib_by_role": {role: [round(by_role.get(role, 0) / 2**20) for by_role in rss_by_role[:: max(1, len(rss_by_role) // 10)]]
                            for role in sorted({role for by_role in rss_by_role for role in by_role})},
        "checkpoint_kib": round(max((c for *_, c in samples), default=0) / 1024),
        "checkpoint_kib_over_time": [round(c / 1024) for *_, c in samples[:: max(1, len(samples) // 10)]],
        "checkpoint_ms": {"n": len(durations), "p50": _pct(durations, 50), "p90": _pct(durations, 90),
                          "max": max(durations, default=float("nan"))},
    }
    result["kept_up"] = kept_up(result) and not failed
    if late is not None:
        result["late_ticks"] = late
    if variant == "stockmax" and not failed:
        # The feed stopped: from its last tick's event time (= when it was published) to the last output read,
        # and how far the newest output's tick is from the last tick: about a millisecond when the last ticks'
        # outputs all came (some of the last few ticks change a max or min), the watermark bound when the job
        # still holds them.
        result["quiet_flush_s"] = round((last_read_us[0] - last_stamp.value) / 1e6, 3)
        result["quiet_newest_output_gap_ms"] = round((last_stamp.value - newest_output_us[0]) / 1000, 1)
    if failed:
        result["failed"] = failed
    result["cpu_second_half"] = cpu_figures(cpu, seconds)
    for kind, timed in latencies.items():
        values = [latency for _, latency in timed]
        result[kind] = {"n": len(values), "p50": _pct(values, 50), "p99": _pct(values, 99), "p99.9": _pct(values, 99.9)}
        # Read in the feed's second half: the job's start-up (its first checkpoints, a backlog while the
        # Python worker warms up) left out, as for the lag.
        steady = [latency for at, latency in timed if started + seconds / 2 <= at <= started + seconds]
        result[kind]["second_half"] = {"n": len(steady), "p50": _pct(steady, 50), "p99": _pct(steady, 99),
                                       "p99.9": _pct(steady, 99.9)}
        # p99 (ms) of the outputs read in each tenth of the feed: where in the run the tail is.
        tenths = [[] for _ in range(10)]
        for at, latency in timed:
            if started <= at < started + seconds:
                tenths[min(9, int((at - started) * 10 / seconds))].append(latency)
        result[kind]["p99_ms_by_tenth"] = [round(_pct(t, 99) * 1000) if t else None for t in tenths]
    return result


def quiet_flush_due_s(job_settings) -> float:
    """How long after a feed's last tick its outputs are sure to have been released by the quiet-feed rule
    and committed (docs/semantics.md, quiet feeds), with room for a loaded machine."""
    return job_settings.quiet_flush_ms() / 1000 + 5


def _process_role(process) -> str:
    """What a process of a job's tree is: its name, and for Python which one (they are all named python):
    the loader (`stockmax run` spawns it), a Python worker of its own (process mode), or the job's process
    (which runs the Python steps in loopback mode)."""
    name = process.name()
    if not name.startswith("python"):
        return name
    command = " ".join(process.cmdline())
    if "multiprocessing" in command:
        return "python (loader)" if "spawn_main" in command else "python (multiprocessing)"
    if "pyflink" in command or "beam" in command:
        return "python (worker)"
    return "python (job)"


def _usage_by_role(tree) -> tuple[dict[str, float], dict[str, int]]:
    """CPU seconds (user + system) used so far and resident bytes of the processes of a tree, each summed by
    role (_process_role: the job's Python process, which runs the Python steps in loopback mode, its JVM, the
    loader)."""
    used: dict[str, float] = {}
    resident: dict[str, int] = {}
    for process in tree:
        role = _process_role(process)
        times = process.cpu_times()
        used[role] = used.get(role, 0.0) + times.user + times.system
        resident[role] = resident.get(role, 0) + process.memory_info().rss
    return used, resident


def cpu_figures(cpu: list, seconds: float) -> dict:
    """Over the feed's second half: cores used by the job's processes (by name, and all) and CPU µs per tick
    published. A cost that the machine's neighbours move less than a latency (a slower hour stretches both)."""
    half = [sample for sample in cpu if seconds / 2 <= sample[0] <= seconds]
    if len(half) < 2:
        return {}
    (t0, n0, used0), (t1, n1, used1) = half[0], half[-1]
    by_name = {name: used1[name] - used0.get(name, 0.0) for name in used1}
    total = sum(by_name.values())
    return {"cores": round(total / (t1 - t0), 3),
            "cores_by_process": {name: round(used / (t1 - t0), 3) for name, used in sorted(by_name.items())},
            "us_per_tick": round(total * 1e6 / max(1, n1 - n0), 1)}


def _delete_topics(s) -> None:
    """The run's topics go when it ends, so that each run finds the broker as the first did, not holding the
    tens of millions of records of the runs before it (sql-over writes one per tick and window)."""
    from stockmax import kafka_io

    client = kafka_io.admin(s)
    try:
        client.delete_topics([s.topic(kind) for kind in kafka_io.TOPIC_KINDS], timeout_ms=30_000)
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="5000,10000,20000", help="ticks/s, comma-separated, each run in turn")
    parser.add_argument("--seconds", type=float, default=120, help="how long each rate is published")
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--variants", default="stockmax,sql-over,sql-hop",
                        help=f"which jobs to run at each rate, in turn: {', '.join(VARIANTS)}")
    parser.add_argument("--profiles", default="balanced",
                        help="stockmax's profiles (STOCKMAX_PROFILE) to run, each in turn, e.g. low-latency,balanced")
    parser.add_argument("--set", action="append", default=[], metavar="STOCKMAX_NAME=VALUE",
                        help="a setting for the job (repeatable), e.g. STOCKMAX_CHECKPOINT_INTERVAL_MS=1000")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "live.md",
                        help="the report (a table, and every figure as JSON lines below it)")
    parser.add_argument("--search", default=None, metavar="LOW:HIGH:STEP",
                        help="find each job's highest rate kept up on this grid of ticks/s (bisection) instead of --rates")
    parser.add_argument("--render", type=Path, default=None,
                        help="only write the report again from the JSON lines of an earlier one (this file)")
    parser.add_argument("--uncommitted", action="store_true",
                        help="time outputs when written, before their commit (diagnosis: where latency goes)")
    args = parser.parse_args()
    if args.uncommitted:
        global READER_ISOLATION
        READER_ISOLATION = "read_uncommitted"
    if args.render:
        results = [json.loads(line) for line in args.render.read_text().splitlines() if line.startswith('{"variant"')]
        for result in results:
            result.setdefault("checkpoint_interval_s", 2.0)  # the default, in reports from before it was recorded
            result["kept_up"] = kept_up(result)
        write_report(results, args, args.out)
        return

    from stockmax import config
    from stockmax.kafka_local import LocalKafka, free_port

    base = config.load()
    env_settings = dict(item.split("=", 1) for item in args.set)
    run_dir = ROOT / ".cache" / "bench" / f"live-{uuid.uuid4().hex[:6]}"
    broker = LocalKafka(run_dir / "kafka", base.kafka_jars_dir, port=free_port())
    # A stopped run (kill, timeout) stops its job and broker too: SystemExit runs the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    say(f"starting a Kafka broker on {broker.bootstrap} ...")
    broker.start()
    settings = base.with_(data_dir=run_dir / "data", kafka_bootstrap=broker.bootstrap)
    results = []
    jobs = [(variant, profile) for variant in args.variants.split(",")
            for profile in (args.profiles.split(",") if variant == "stockmax" else [None])]
    try:
        if args.search:
            grid = search_grid(args.search)
            for variant, profile in jobs:
                def run(rate: int) -> dict:
                    result = run_job(settings, variant, profile, rate, args.seconds, args.symbols, env_settings)
                    results.append(result)
                    write_report(results, args, args.out)
                    return result
                highest_kept_up(grid, run)
            return
        for rate in [int(r) for r in args.rates.split(",")]:
            for variant, profile in jobs:
                results.append(run_job(settings, variant, profile, rate, args.seconds, args.symbols, env_settings))
                write_report(results, args, args.out)
    finally:
        broker.stop()


def search_grid(text: str) -> list[int]:
    """LOW:HIGH:STEP as the rates it names, LOW first."""
    try:
        low, high, step = (int(x) for x in text.split(":"))
    except ValueError:
        raise SystemExit(f"--search takes LOW:HIGH:STEP in ticks/s, e.g. 10000:80000:10000; got {text!r}") from None
    if not 0 < low <= high or step <= 0:
        raise SystemExit(f"--search needs 0 < LOW <= HIGH and STEP > 0; got {text!r}")
    return list(range(low, high + 1, step))


def highest_kept_up(grid: list[int], run) -> int | None:
    """Bisection over the grid: the highest rate whose run (run(rate) -> a result) kept up, assuming a job
    that keeps up at a rate keeps up below it; None when the lowest did not."""
    good, bad = -1, len(grid)  # indexes: highest known kept up, lowest known not
    while bad - good > 1:
        middle = (good + bad) // 2
        if run(grid[middle])["kept_up"]:
            good = middle
        else:
            bad = middle
    return grid[good] if good >= 0 else None


def run_job(settings, variant: str, profile: str | None, rate: int, seconds: float, symbols: int,
            env_settings: dict[str, str]) -> dict:
    """One live run (run_rate) of a job in a stockmax profile (None: its defaults), said as it goes; the result
    keeps its settings, profile and date."""
    job_settings = {**env_settings, **({"STOCKMAX_PROFILE": profile} if profile else {})}
    say(f"live {job_name({'variant': variant, 'profile': profile})}: {rate:,} ticks/s of per-tick JSON for "
        f"{seconds:.0f} s, {symbols:,} symbols ...")
    result = run_rate(settings, variant, rate, seconds, symbols, job_settings)
    result.update(settings=job_settings, profile=profile, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    if READER_ISOLATION != "read_committed":
        result["reader"] = READER_ISOLATION
    say("  " + json.dumps(result))
    return result


def job_name(result: dict) -> str:
    """A live run's job as the reports name it: the variant, and stockmax's profile."""
    return result["variant"] + (f" ({result['profile']})" if result.get("profile") else "")


def write_report(results: list[dict], args, path: Path) -> None:
    import platform

    lines = [
        "# Live benchmark: per-tick JSON, event time = wall clock",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; `bench/live.py {f'--search {args.search}' if getattr(args, 'search', None) else f'--rates {args.rates}'} --seconds {args.seconds:g} --symbols "
        f"{args.symbols} --variants {args.variants} --profiles {getattr(args, 'profiles', 'balanced')}`{''.join(f' --set {x}' for x in args.set)}. A feed process "
        "publishes one JSON record per tick (confluent-kafka), event time = now, for the time given, at each rate; "
        "each job runs unbounded at its defaults (stockmax: `stockmax run`, loader on); all in one run on one "
        "machine, the feed, the broker and the job sharing its cores.",
        "",
        *(search_table(results, search_grid(args.search)) if getattr(args, "search", None) else []),
        *live_table(results), "", "```"]
    lines += [json.dumps(r) for r in results] + ["```", ""]
    path.write_text("\n".join(lines))


def search_table(results: list[dict], grid: list[int]) -> list[str]:
    """Each job's highest rate kept up among those tried, its latency there, and the rates tried in order."""
    lines = [f"Highest rate kept up on the grid {grid[0]:,} .. {grid[-1]:,} ticks/s (step {grid[1] - grid[0] if len(grid) > 1 else 0:,}), "
             "by bisection; each rate tried is a run in the table below it.", "",
             "| job | highest rate kept up (ticks/s) | tick → max update p50 / p99 there, 2nd half (ms) | rates tried (kept up: +) |",
             "|---|---:|---|---|"]
    for name in dict.fromkeys(job_name(r) for r in results):
        runs = [r for r in results if job_name(r) == name]
        kept = [r for r in runs if r["kept_up"]]
        best = max(kept, key=lambda r: r["rate"]) if kept else None
        half = best["max_updates"].get("second_half") if best else None
        latency = f"{half['p50'] * 1000:,.0f} / {half['p99'] * 1000:,.0f}" if half else "-"
        highest = f"{best['rate']:,}" if best else f"none (below {grid[0]:,})"
        tried = ", ".join(f"{r['rate']:,}{'+' if r['kept_up'] else ''}" for r in runs)
        lines.append(f"| {name} | {highest} | {latency} | {tried} |")
    return lines + [""]


def live_table(results: list[dict]) -> list[str]:
    """The live runs as a Markdown table, what its columns mean, and each run's memory and checkpoint size
    over time (bench/throughput.py puts the same in bench/results.md)."""

    def ms(x: float) -> str:
        return "-" if x != x else f"{x * 1000:,.0f}"

    def steady(figures: dict, tail: bool) -> str:
        half = figures.get("second_half")
        if half is None:  # a run from before the second half was kept
            return "-"
        return (f"{ms(half['p50'])} / {ms(half['p99'])}" + (f" / {ms(half['p99.9'])}" if tail else "")
                + f" (n={half['n']:,})")

    def cpu(r: dict) -> str:
        c = r.get("cpu_second_half")
        return "-" if not c else f"{c['cores']:.2f} / {c['us_per_tick']:,.0f}"

    def quiet(r: dict) -> str:
        # Against the profile's p99 + 1 s (#26); only where the job kept up (else the backlog's time is in it).
        if "quiet_flush_s" not in r or not r["kept_up"]:
            return "-"
        gap = r.get("quiet_newest_output_gap_ms")
        return (f"{r['quiet_flush_s']:.2f} (alert p99 + 1 s: {r['alerts']['p99'] + 1:.2f})"
                + ("" if gap is None else f"; newest output's tick {gap:,.0f} ms before the last"))

    def durations(r: dict) -> str:
        c = r.get("checkpoint_ms")
        return "-" if not c or not c["n"] else f"{c['p50']:,.0f} / {c['p90']:,.0f} / {c['max']:,.0f}"

    lines = [
        "| job | symbols | ticks/s offered | kept up | lag, 2nd half, max / mean (ticks) | caught up after | tick → max update p50 / p99 / p99.9 (ms) | same, 2nd half | tick → alert p50 / p99 (ms) | same, 2nd half | feed stops: last tick → last output (s) | late ticks | peak RSS (MiB) | checkpoint (KiB) | checkpoint p50 / p90 / max (ms) | CPU, 2nd half: cores / µs per tick |",
        "|---|---:|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, a = r["max_updates"], r["alerts"]
        caught = "not within 60 s" if r["caught_up_s"] is None else f"{r['caught_up_s']:.1f} s"
        verdict = "yes" if r["kept_up"] else "no"
        if r.get("failed"):
            verdict = f"no: the job failed after {r['failed']['after_s']} s ({r['failed']['cause']})"
        lines.append(f"| {job_name(r)} | {r.get('symbols', 1000):,} | {r['rate']:,} | {verdict} | "
                     f"{r['lag_max_second_half']:,} / {r['lag_mean_second_half']:,.0f} | {caught} | "
                     f"{ms(m['p50'])} / {ms(m['p99'])} / {ms(m['p99.9'])} (n={m['n']:,}) | {steady(m, True)} | "
                     f"{ms(a['p50'])} / {ms(a['p99'])} (n={a['n']:,}) | {steady(a, False)} | {quiet(r)} | {r.get('late_ticks', '-')} | "
                     f"{r['peak_rss_mib']:,} | {r['checkpoint_kib']:,} | {durations(r)} | {cpu(r)} |")
    lines += ["", "Kept up (`kept_up`): the lag (published minus the job's committed offsets, which move at "
              "checkpoints) stays within three checkpoint intervals and two seconds of input over the second half, "
              "and everything published is committed within 30 s after the feed stops. Caught up: when the job's committed source "
              "offsets reach the end after the feed stops; for a source with nothing more to read, Flink's Kafka reader commits "
              "them only after its fetch poll times out (10 s in the connector), so ~10 s is the floor here, whatever the job "
              "(outputs are committed at the next checkpoint: tests/test_quiet_feed.py). 2nd half: outputs read while the "
              "second half of the feed was published (the job's start-up left out). Feed stops: from the last tick's "
              "event time (when it was published) to when the last output was read committed, with no later tick: "
              "stockmax's quiet-feed rule releases the last ticks (docs/semantics.md); the SQL jobs have no such "
              "rule (their last windows wait for a later tick). Beside it, how far before the last tick the newest "
              "output's tick was: a millisecond or so when every last tick's outputs came, the watermark bound when "
              "the job still holds them (the rule off). sql-over emits a record per "
              "tick and window whether or not the max changed; stockmax only when it changed. sql-hop computes one "
              "1 min window per symbol and second, and its latency is from the newest tick of each window. "
              "Checkpoint (KiB): the largest checkpoint directory seen; checkpoint durations from the job's Flink log. "
              "CPU: what the job's own processes (its Python process with the Python worker, its JVM, the loader; not "
              "the broker, the feed or the reader) used over the second half, in cores and in µs per tick published: "
              "a neighbour on the machine moves it less than a latency.",
              "", "Memory (the job's process tree, MiB), checkpoint size (KiB) and tick → max update p99 (ms), ten samples "
              "over each run:", ""]
    for r in results:
        over_time = r.get("checkpoint_kib_over_time")
        p99s = r.get("max_updates", {}).get("p99_ms_by_tenth")
        lines.append(f"- {job_name(r)}, {r.get('symbols', 1000):,} symbols, {r['rate']:,} ticks/s: RSS "
                     f"{' '.join(map(str, r['rss_mib']))}"
                     + "".join(f" ({role} {' '.join(map(str, rss))})" for role, rss in r.get("rss_mib_by_role", {}).items())
                     + (f"; checkpoint {' '.join(map(str, over_time))}" if over_time else "")
                     + (f"; p99 {' '.join('-' if v is None else f'{v:,}' for v in p99s)}" if p99s else ""))
    return lines


if __name__ == "__main__":
    main()

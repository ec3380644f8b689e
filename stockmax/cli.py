"""The `stockmax` command: everything a user does, one sub-command each."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import config
from .times import format_utc


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _settings(args) -> config.Settings:
    return config.load(args.config)


def cmd_config(args) -> int:
    if args.reference:
        sys.stdout.write(config.settings_reference())
        return 0
    settings = _settings(args)
    width = max(len(k) for k in settings.redacted())
    for key, value in settings.redacted().items():
        print(f"{config.ENV_PREFIX + key.upper():<{width + 9}} {value}")
    return 0


def cmd_kafka(args) -> int:
    from .kafka_local import LocalKafka, bootstrap_answers

    settings = _settings(args)
    broker = LocalKafka.from_settings(settings)
    if args.action == "up":
        broker.start()
        print(f"Kafka broker answers at {broker.bootstrap} (pid {broker.running_pid()}, data in {broker.data_dir})")
    elif args.action == "down":
        print("Kafka broker stopped" if broker.stop() else f"no local broker was running from {broker.data_dir}")
    else:
        up = bootstrap_answers(settings.kafka_bootstrap, **settings.kafka_python_options())
        print(f"Kafka at {settings.kafka_bootstrap}: {'answers' if up else 'does not answer'}")
        return 0 if up else 1
    return 0


def cmd_topics(args) -> int:
    from .kafka_io import TOPIC_KINDS, create_topics

    settings = _settings(args)
    created = create_topics(settings)
    for kind in TOPIC_KINDS:
        name = settings.topic(kind)
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0


def cmd_db(args) -> int:
    from .store import Store

    settings = _settings(args)
    with Store(settings) as store:
        for name in store.migrate():
            print(f"applied {name}")
    print(f"ClickHouse schema is up to date ({settings.redacted()['clickhouse_dsn'] or settings.store_dsn}, "
          f"database {settings.clickhouse_database})")
    return 0


def cmd_sample(args) -> int:
    from . import sample

    max_delay_ms = args.max_delay_ms
    if max_delay_ms is None:
        max_delay_ms = sample.delay_within(_settings(args).watermark_bound_ms)
    table = sample.generate(symbols=args.symbols, duration_s=args.duration, ticks_per_second=args.rate,
                            max_delay_ms=max_delay_ms, seed=args.seed)
    path = sample.write(table, args.output)
    print(f"wrote {table.num_rows} ticks to {path}")
    return 0


def cmd_replay(args) -> int:
    from .replay import replay

    settings = _settings(args)
    if args.speed and args.batch_ticks > 1:
        raise SystemExit("stockmax replay: --speed sends one JSON record per tick, at recorded time; "
                         "--batch-ticks is for replays as fast as possible: use one or the other")
    n = replay(settings, args.file, speed=args.speed, progress=not args.no_progress, batch_ticks=args.batch_ticks)
    print(f"published {n} ticks to {settings.topic('ticks')} at {settings.kafka_bootstrap}")
    return 0


def cmd_run(args) -> int:
    from .runner import run

    settings = _settings(args)
    result = run(settings, bounded=args.bounded, restore_from=args.from_savepoint, fresh=args.fresh,
                 load=not args.no_load, say=lambda text: print(text, flush=True), progress=not args.no_progress)
    loaded = ("rollups left in the topic for `stockmax load`" if args.no_load
              else f"{result.rollups_loaded} rollup rows loaded into ClickHouse")
    print(f"job {'stopped' if result.savepoint else 'finished'}; {loaded}")
    return 0


def cmd_load(args) -> int:
    import threading

    from .loader import StoreLoader
    from .store import Store
    from .store_service import QueryService

    settings = _settings(args)
    with Store(settings) as store:
        store.migrate()
        loader = StoreLoader(settings, store)
        queries = QueryService(store)
        try:
            if args.once:
                loader.drain()
                print(f"loaded {loader.loaded} rollup rows and {loader.ticks_loaded} raw ticks")
            else:
                loader.run(threading.Event())
        finally:
            queries.close()
            loader.close()
    return 0


def _browse(args, kind: str, line) -> int:
    """Print committed records of a topic: one JSON object per line with --json, else line(record)."""
    import itertools
    import json

    from .kafka_io import browse

    settings = _settings(args)
    records = browse(settings, kind, last=None if args.from_beginning else (20 if args.limit is None else args.limit), follow=args.follow)
    if args.from_beginning and args.limit is not None:
        records = itertools.islice(records, args.limit)
    shown = 0
    for record in records:
        print(json.dumps(record, separators=(",", ":")) if args.json else line(record), flush=True)
        shown += 1
    if not shown and not args.json:
        print(f"no committed records in {settings.topic(kind)}", file=sys.stderr)
    return 0


def _time_us(text: str, option: str) -> int:
    from .history import HistoryError
    from .times import parse_utc_us

    try:
        return parse_utc_us(text)
    except ValueError as exc:
        raise HistoryError(f"{option}: {exc}") from None


def _span_us(text: str, option: str) -> int:
    from .history import HistoryError
    from .operators.durations import parse_span_us

    try:
        return parse_span_us(text)
    except ValueError as exc:
        raise HistoryError(f"{option}: {exc}") from None


def cmd_max(args) -> int:
    import json
    import time

    from .history import HistoryError
    from .store_service import open_history

    if args.window:
        if args.start or args.end:
            raise HistoryError("--window goes with --at (or now), not with --from/--to")
        span = _span_us(args.window, "--window")
        at = _time_us(args.at, "--at") if args.at else time.time_ns() // 1000
        # The window ending at `at`, as the job's windows are: (at - W, at].
        start, end = at - span + 1, at + 1
    else:
        if not (args.start and args.end):
            raise HistoryError("give --from and --to, or --window (with --at)")
        start, end = _time_us(args.start, "--from"), _time_us(args.end, "--to")
    source = open_history(_settings(args))
    try:
        price, first_at = source.highest(args.symbol, start, end)
    finally:
        source.close()
    if args.json:
        print(json.dumps({"symbol": args.symbol, "from": format_utc(start), "to": format_utc(end), "max": price,
                          "at": format_utc(first_at)}))
    else:
        print(f"{args.symbol}  max {price:g}  first at {format_utc(first_at)}  "
              f"in [{format_utc(start)}, {format_utc(end)})")
    return 0


def cmd_bars(args) -> int:
    import csv
    import json

    from .store_service import open_history

    resolution_us = _span_us(args.resolution, "--resolution")
    start, end = _time_us(args.start, "--from"), _time_us(args.end, "--to")
    source = open_history(_settings(args))
    try:
        rows = source.bars(args.symbol, resolution_us // 1_000_000, start, end)
    finally:
        source.close()
    columns = ["bucket_start", "open", "high", "high_time", "low", "low_time", "close", "count", "volume", "vwap"]
    out = [{**r, **{c: format_utc(r[c]) for c in ("bucket_start", "high_time", "low_time")}} for r in rows]
    if args.json:
        for row in out:
            print(json.dumps({"symbol": args.symbol, "resolution": args.resolution, **row}))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=["symbol", "resolution", *columns], lineterminator="\n")
        writer.writeheader()
        for row in out:
            writer.writerow({"symbol": args.symbol, "resolution": args.resolution, **row})
    else:
        print(f"{'bucket start (UTC)':<27} {'open':>12} {'high':>12} {'low':>12} {'close':>12} {'count':>7} "
              f"{'volume':>14} {'vwap':>12}")
        for r in out:
            vwap = "" if r["vwap"] is None else f"{r['vwap']:.6g}"
            print(f"{r['bucket_start']:<27} {r['open']:>12g} {r['high']:>12g} {r['low']:>12g} {r['close']:>12g} "
                  f"{r['count']:>7} {r['volume']:>14g} {vwap:>12}")
        if not out:
            print(f"no {args.resolution} bars of {args.symbol} in that range", file=sys.stderr)
    return 0


def cmd_alerts(args) -> int:
    def line(a: dict) -> str:
        reference = "" if a.get("reference_price") is None else f" vs {a['reference_price']:g}"
        return (f"{format_utc(a['event_time'])}  {a['symbol']:<8} {a['kind']:<14} {a['price']:g}{reference} "
                f"({a['change_pct']:+.2f} %)  {a['rule']}")

    return _browse(args, "alerts", line)


def cmd_dead_letters(args) -> int:
    def line(d: dict) -> str:
        return (f"{format_utc(d['rejected_at'])}  {d['source_topic']} partition {d['source_partition']} offset "
                f"{d['source_offset']}  {d['reason']}: {d['message']}  raw: {d['raw_text'][:120]!r}")

    return _browse(args, "dead", line)


def cmd_submit(args) -> int:
    from .cluster import submit

    settings = _settings(args)
    print(f"submitting to the Flink cluster at {settings.flink_rest_address} ...", file=sys.stderr, flush=True)
    job_id = submit(settings, bounded=args.bounded)
    print(job_id)
    print(f"submitted job {job_id}; stop it with `stockmax savepoint {job_id} --stop` or `stockmax cancel "
          f"{job_id}`", file=sys.stderr)
    return 0


def cmd_cancel(args) -> int:
    from .cluster import cancel

    print(f"job {args.job_id}: {cancel(_settings(args), args.job_id)}")
    return 0


def cmd_savepoint(args) -> int:
    from .cluster import savepoint

    location = savepoint(_settings(args), args.job_id, directory=args.directory, stop=args.stop)
    print(location)
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    settings = _settings(args)
    serve(settings, args.host or settings.serve_host, args.port or settings.serve_port,
          say=lambda text: print(text, flush=True))
    return 0


def cmd_demo(args) -> int:
    from .demo import demo, live_demo

    if args.live:
        live_demo(_settings(args), rate=args.rate, say=lambda text: print(text, flush=True))
    else:
        demo(_settings(args), tick_file=args.file)
    return 0


def _browse_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per line, as on the topic")
    p.add_argument("--from-beginning", action="store_true", help="every record from the start of the topic")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="at most N records (default: the newest 20; with --from-beginning: all)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new records until Ctrl-C")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stockmax",
        description="Sliding max/min, spike alerts and rolled-up history for market ticks on Apache Flink. "
                    "Settings: a TOML file (--config, STOCKMAX_CONFIG or ./stockmax.toml) and STOCKMAX_* "
                    "environment variables; `stockmax config` lists them.")
    parser.add_argument("--config", help="TOML settings file (default: $STOCKMAX_CONFIG or ./stockmax.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the clients do")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print the effective settings and their environment variables")
    p.add_argument("--reference", action="store_true",
                   help="print every setting's reference instead (Markdown: docs/settings.md is this)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("kafka", help="start, stop or probe the local single-node Kafka broker (KRaft)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser("topics", help="create stockmax's topics (ticks, alerts, max-updates, rollups, ticks-late, ticks-duplicate, "
                            "ticks-dead, tick-batches), idempotent",
                       description="Creates the missing ones with STOCKMAX_TOPIC_PARTITIONS partitions and "
                                   "retention.ms = STOCKMAX_TOPIC_RETENTION_MS (-1, keep: record timestamps are "
                                   "event times); tick-batches, which only the loader reads, expire by append time "
                                   "after STOCKMAX_TOPIC_TICK_BATCHES_RETENTION_MS (7 days). "
                                   "Names: STOCKMAX_TOPIC_* with STOCKMAX_TOPIC_PREFIX.")
    p.add_argument("action", choices=["create"])
    p.set_defaults(func=cmd_topics)

    p = sub.add_parser("db", help="apply the ClickHouse schema in sql/migrations (idempotent)")
    p.add_argument("action", choices=["migrate"])
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("sample", help="write a realistic sample tick file (CSV or Parquet by extension)")
    p.add_argument("output", type=Path)
    p.add_argument("--symbols", type=int, default=20)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of market time (default 600)")
    p.add_argument("--rate", type=float, default=4.0, help="ticks per second per symbol (default 4)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--max-delay-ms", type=_positive_int, default=None,
                   help="how far out of order a tick may come, in ms of event time (default 3/4 of the "
                        "watermark bound, so that no tick is late; more makes some late on purpose)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("replay", help="publish a CSV or Parquet tick file to the ticks topic",
                       description="Columns: symbol, price, event_time (ISO-8601 UTC or integer epoch µs); "
                                   "optional volume, exchange, seq (numbered by row when absent). Each tick "
                                   "goes as one JSON record, keyed by symbol and stamped with its event time; "
                                   "with --batch-ticks N (as fast as possible only), as Arrow batches of N "
                                   "ticks per record, each to its symbols' partition and stamped with its "
                                   "newest event time: the job's fast path.")
    p.add_argument("file", type=Path)
    p.add_argument("--speed", type=float, default=None,
                   help="replay at N x recorded time (default: as fast as possible)")
    p.add_argument("--batch-ticks", type=_positive_int, default=1,
                   help="ticks per Kafka record, as Arrow batches (default 1: one JSON record per tick; "
                        "1000 is the fast path)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("run", help="run the job on the local Flink mini-cluster, loading rollups and raw ticks "
                                   "into ClickHouse",
                       description="Runs until Ctrl-C or SIGTERM, which stop the job with a savepoint (printed) "
                                   "to resume from. Resumes from the newest retained checkpoint or savepoint of its "
                                   "job name unless --fresh.")
    p.add_argument("--bounded", action="store_true",
                   help="process every tick already in the topic, commit all outputs, load all rollups, stop")
    p.add_argument("--from-savepoint", metavar="PATH", type=Path, default=None,
                   help="start from this savepoint or retained checkpoint (a folder with _metadata)")
    p.add_argument("--fresh", action="store_true",
                   help="ignore the checkpoints an earlier run of this job left (default: resume from the latest)")
    p.add_argument("--no-load", action="store_true",
                   help="do not load rollups into ClickHouse here (run `stockmax load` as its own process)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (bounded) or status line every 5 s (live: records in, not yet committed, "
                        "outputs, how far event time trails the clock, dead letters)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("load", help="load committed rollups and raw ticks into ClickHouse (beside a cluster job)",
                       description="Reads the rollups, tick-batches and ticks-late topics (read_committed), inserts in "
                                   "batches, commits offsets after each insert; retries a refused batch with backoff. "
                                   "Idempotent: rows written twice fold into one.")
    p.add_argument("--once", action="store_true", help="load what is committed now, then stop")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("max", help="the exact highest price of a symbol over a range of event time, from ClickHouse",
                       description="Exact for any range: the coarsest rollups that fit inside it, finer ones at "
                                   "its edges, raw ticks at sub-second edges. Times are ISO-8601 (UTC unless "
                                   "they say otherwise) or epoch microseconds. The range is [--from, --to); "
                                   "--window W is the window (at - W, at] like the job's, at = --at or now.")
    p.add_argument("symbol")
    p.add_argument("--from", dest="start", metavar="T1", help="start of the range (included)")
    p.add_argument("--to", dest="end", metavar="T2", help="end of the range (excluded)")
    p.add_argument("--window", metavar="W", help="instead of --from/--to: the last W (e.g. 5m, 1h, 30d)")
    p.add_argument("--at", metavar="T", help="with --window: the window's end (default: now)")
    p.add_argument("--json", action="store_true", help='one object: {"symbol", "from", "to", "max", "at"}')
    p.set_defaults(func=cmd_max)

    p = sub.add_parser("bars", help="OHLCV bars of a symbol at one rollup resolution, from ClickHouse",
                       description="Bars whose bucket starts in [--from, --to). Columns: bucket start, open, "
                                   "high (and when first reached), low (and when), close, count, volume, VWAP.")
    p.add_argument("symbol")
    p.add_argument("--resolution", default="1m", help="one of STOCKMAX_ROLLUP_RESOLUTIONS (default 1m)")
    p.add_argument("--from", dest="start", metavar="T1", required=True)
    p.add_argument("--to", dest="end", metavar="T2", required=True)
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="one JSON object per bar")
    form.add_argument("--csv", action="store_true", help="CSV with a header")
    p.set_defaults(func=cmd_bars)

    p = sub.add_parser("alerts", help="show spike and threshold alerts from the alert topic (read_committed)",
                       description="A readable line per alert, or one JSON object per line with --json. By default "
                                   "the newest --limit alerts; --follow keeps printing new ones.")
    _browse_options(p)
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("dead-letters", help="show the ticks the job refused, with reason and source offset",
                       description="Reads the dead-letter topic (read_committed). By default the newest --limit "
                                   "records; each names its reason code, message, source topic, partition and "
                                   "offset, and the original bytes (raw_base64 in --json).")
    _browse_options(p)
    p.set_defaults(func=cmd_dead_letters)

    p = sub.add_parser("submit", help="submit the job to a running Flink cluster; prints the job id",
                       description="Runs `flink run --detached --python jobs/pipeline.py` against "
                                   "STOCKMAX_FLINK_REST_ADDRESS with the Kafka connector jar and a staged copy of "
                                   "stockmax's sources. The job takes this machine's STOCKMAX_* settings (Kafka "
                                   "address, topics, windows, rules, and its Flink options: parallelism, "
                                   "checkpoint interval, restarts, bundles) as they must be seen from the cluster; the "
                                   "cluster's Python (STOCKMAX_CLUSTER_PYTHON) needs stockmax's dependencies. Run "
                                   "`stockmax load` beside it to fill ClickHouse.")
    p.add_argument("--bounded", action="store_true", help="stop at the end of what is in the topic now")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("cancel", help="cancel a job on the Flink cluster (its retained checkpoints stay)")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("savepoint", help="take a savepoint of a job on the Flink cluster; prints its location")
    p.add_argument("job_id")
    p.add_argument("--directory", default=None,
                   help="where (default: the cluster's execution.checkpointing.savepoint-dir)")
    p.add_argument("--stop", action="store_true", help="stop the job with the savepoint (to upgrade it)")
    p.set_defaults(func=cmd_savepoint)

    p = sub.add_parser("serve", help="the live max/min, history and alerts over HTTP and a WebSocket stream, and a "
                                     "live page (http://127.0.0.1:8000/ by default)")
    p.add_argument("--host", help="address to listen on (default: serve_host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: serve_port, 8000)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="the whole pipeline on a sample (what `make run` does), then a summary")
    p.add_argument("--file", type=Path, default=None, help="a tick file to use instead of a generated sample")
    p.add_argument("--live", action="store_true", help="a live synthetic feed (event time = now) into the running job, "
                                                       "with `stockmax serve` and its page, until Ctrl-C")
    p.add_argument("--rate", type=int, default=200, help="with --live: ticks per second (default 200)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # the client library's own errors are noise here: stockmax says what failed
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    from .kafka_io import KafkaUnavailable
    from .kafka_local import BrokerError
    from .replay import TickFileError
    from .runner import ResumeError
    from .cluster import ClusterError
    from .history import HistoryError
    from .store import StoreError

    try:
        return args.func(args)
    except (config.ConfigError, KafkaUnavailable, BrokerError, StoreError, TickFileError, ResumeError,
            HistoryError, ClusterError, FileNotFoundError, TimeoutError) as exc:
        print(f"stockmax: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stockmax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

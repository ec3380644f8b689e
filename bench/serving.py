"""The serving benchmark: `stockmax serve` as its users load it, beside the CLI as the baseline.

    .venv/bin/python bench/serving.py [--rates 1000,5000,10000] [--seconds 20] [--clients 1000] [--out bench/serving.md]

Set up: a local broker; a sample (200 symbols) through `stockmax run --bounded` (outputs committed, the
store loaded); then `stockmax serve` on a free port (its loader owns the embedded store). Then:

- live max queries at fixed rates, open loop: `oha -q RATE --latency-correction` (latencies counted from
  when each request was due, not when it was sent), random symbols; p50/p99/p99.9 and what was achieved;
- history queries (exact max over a random range, from ClickHouse) at a fixed rate, the same way;
- the CLI baseline: `stockmax max SYMBOL --window 5m` and `--from/--to` run as a user would (a process each);
- WebSocket fan-out: CLIENTS clients subscribed to one symbol each (spread over the symbols); the
  benchmark commits max updates in Kafka transactions, as the job does, and each client notes when each
  one arrives: push delay = arrival - the moment its transaction's commit returned (one clock: one machine).

oha comes from crates.io (`cargo install oha --locked --root .cache/oha`; this script does it when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from throughput import _clean_env, say  # noqa: E402

OHA = ROOT / ".cache" / "oha" / "bin" / "oha"
SYMBOLS = 200


def ensure_oha() -> Path:
    if OHA.is_file():
        return OHA
    found = shutil.which("oha")
    if found:
        return Path(found)
    say("installing oha from crates.io (cargo install oha --locked; a few minutes, once) ...")
    subprocess.run(["cargo", "install", "oha", "--locked", "--root", str(OHA.parent.parent)], check=True)
    return OHA


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def oha(url_pattern: str, rate: int, seconds: float, connections: int = 50) -> dict:
    """Open-loop load at `rate` requests/s for `seconds`; oha's figures (ms) and the status codes seen."""
    done = subprocess.run([str(ensure_oha()), "-z", f"{seconds}s", "-q", str(rate), "--latency-correction",
                           "-c", str(connections), "--rand-regex-url", "--no-tui", "--output-format", "json",
                           url_pattern], capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"oha failed: {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    percentiles = report["latencyPercentiles"]
    summary = report["summary"]
    return {"rate": rate, "seconds": seconds, "achieved_rps": summary["requestsPerSec"],
            "success_rate": summary["successRate"], "status": report.get("statusCodeDistribution", {}),
            "p50_ms": percentiles["p50"] * 1000, "p99_ms": percentiles["p99"] * 1000,
            "p99.9_ms": percentiles["p99.9"] * 1000, "max_ms": summary["slowest"] * 1000}


def cli_baseline(settings, env: dict, symbol: str, start_us: int, end_us: int, runs: int = 15) -> dict:
    """What a user without `serve` runs: a `stockmax max` process per question."""
    times = {"live window (stockmax max --window 5m)": [], "history range (stockmax max --from --to)": []}
    for _ in range(runs):
        for name, args in (("live window (stockmax max --window 5m)", ["--window", "5m", "--at", str(end_us)]),
                           ("history range (stockmax max --from --to)", ["--from", str(start_us), "--to", str(end_us)])):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "stockmax.cli", "max", symbol, *args], env=env, check=True,
                           capture_output=True, timeout=120)
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: {"p50_ms": _pct(v, 0.5), "p99_ms": max(v), "runs": len(v)} for name, v in times.items()}


async def _clients(url: str, symbols: list[str], clients: int, ready, arrivals, stop_after_s: float) -> None:
    import websockets

    async def one(index: int) -> None:
        symbol = symbols[index % len(symbols)]
        async with websockets.connect(url, max_queue=None) as socket:
            await socket.send(json.dumps({"subscribe": [symbol], "windows": ["1m"], "events": ["max_change"]}))
            await socket.recv()  # subscribed
            ready.value += 1
            deadline = time.monotonic() + stop_after_s
            while time.monotonic() < deadline:
                try:
                    frame = await asyncio.wait_for(socket.recv(), timeout=max(0.01, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                now = time.time()
                for event in json.loads(frame):
                    if event.get("type") == "max_change" and event["seq"] >= 10**12:
                        arrivals.append((event["seq"], now))

    await asyncio.gather(*(one(i) for i in range(clients)))


def _client_process(url, symbols, clients, ready, queue, stop_after_s) -> None:
    arrivals = []
    asyncio.run(_clients(url, symbols, clients, ready, arrivals, stop_after_s))
    queue.put(arrivals)


def fan_out(settings, url: str, symbols: list[str], clients: int, updates: int = 100) -> dict:
    """Push delay to `clients` WebSocket clients of max updates committed by a transactional producer."""
    import confluent_kafka

    context = multiprocessing.get_context("spawn")
    ready, queue = context.Value("i", 0), context.Queue()
    listener = context.Process(target=_client_process, args=(url, symbols, clients, ready, queue, updates * 0.2 + 60))
    listener.start()
    deadline = time.monotonic() + 120
    while ready.value < clients:
        if time.monotonic() > deadline or not listener.is_alive():
            raise RuntimeError(f"only {ready.value} of {clients} stream clients subscribed")
        time.sleep(0.1)
    producer = confluent_kafka.Producer({"bootstrap.servers": settings.kafka_bootstrap,
                                         "transactional.id": f"serving-bench-{uuid.uuid4().hex[:6]}"})
    producer.init_transactions()
    committed_at = {}
    topic = settings.topic("max_updates")
    for i in range(updates):
        seq = 10**12 + i
        symbol = symbols[i % len(symbols)]
        event_time = time.time_ns() // 1000
        update = {"symbol": symbol, "window": "1m", "window_ms": 60000, "event_time": event_time, "seq": seq,
                  "max": 1000.0 + i, "max_time": event_time, "min": 1.0, "min_time": event_time,
                  "moving_average": 500.0, "moving_average_ticks": 20}
        producer.begin_transaction()
        producer.produce(topic, json.dumps(update).encode(), f"{symbol}|1m".encode())
        producer.commit_transaction()
        committed_at[seq] = time.time()
        time.sleep(0.2)  # 5 commits a second, as checkpoints every 200 ms would
    arrivals = queue.get(timeout=300)
    listener.join(60)
    per_update = {}
    delays = []
    for seq, arrived in arrivals:
        delays.append((arrived - committed_at[seq]) * 1000)
        per_update[seq] = per_update.get(seq, 0) + 1
    expected_each = {seq: sum(1 for c in range(clients) if symbols[c % len(symbols)] == symbols[(seq - 10**12) % len(symbols)])
                     for seq in committed_at}
    return {"clients": clients, "updates": updates, "deliveries": len(delays),
            "expected_deliveries": sum(expected_each.values()),
            "p50_ms": _pct(delays, 0.5), "p99_ms": _pct(delays, 0.99), "p99.9_ms": _pct(delays, 0.999),
            "max_ms": max(delays) if delays else float("nan")}


def measure(settings, run_dir: Path, rates: list[int], seconds: float, history_rate: int, clients: int) -> dict:
    """Every serving figure, against the broker in `settings` (a data dir and topics of its own)."""
    import httpx
    import pyarrow.csv as pacsv

    from stockmax import config, sample
    from stockmax.kafka_local import free_port

    ensure_oha()
    settings = settings.with_(data_dir=run_dir / "data", serve_port=free_port(), job_name="serving-bench",
                              topic_prefix=f"serving-{uuid.uuid4().hex[:6]}-", metrics_port="")
    env = {**_clean_env(), **config.environment(settings)}
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count()}
    data = sample.generate(symbols=SYMBOLS, duration_s=600, ticks_per_second=1, spikes_per_symbol=2, seed=3)
    tick_file = run_dir / "ticks.csv"
    tick_file.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(data, tick_file)
    say(f"serving: {data.num_rows} ticks of {SYMBOLS} symbols through stockmax run --bounded (outputs committed, "
        f"store loaded) ...")
    for command in (["topics", "create"], ["replay", str(tick_file)], ["run", "--bounded", "--fresh", "--no-progress"]):
        subprocess.run([sys.executable, "-m", "stockmax.cli", *command], env=env, check=True, capture_output=True,
                       timeout=1800)
    symbols = sorted(set(data.column("symbol").to_pylist()))
    times = data.column("event_time").to_pylist()
    first, last = min(times), max(times)
    say("serving: CLI baseline (a stockmax max process per question) ...")
    results["cli"] = cli_baseline(settings, env, symbols[0], first, last)
    serve = subprocess.Popen([sys.executable, "-m", "stockmax.cli", "serve"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{settings.serve_port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                raise RuntimeError(f"stockmax serve did not become ready: "
                                   f"{serve.stderr.read()[-2000:] if serve.poll() is not None else ''}")
            time.sleep(0.2)
        symbol_regex = r"(AAPL|MSFT|NVDA|AMZN|GOOGL|SYM00[2-9][0-9]|SYM01[0-9][0-9])"
        results["live"] = []
        for rate in rates:
            say(f"serving: live max queries, {rate}/s for {seconds:.0f} s (oha, open loop) ...")
            results["live"].append(oha(f"{url}/api/v1/stocks/{symbol_regex}/max\\?window=5m", rate, seconds))
        span = last - first
        say(f"serving: history queries, {history_rate}/s ...")
        start_us = first + span // 7 + 123_457
        results["history"] = oha(f"{url}/api/v1/stocks/{symbol_regex}/max\\?start={start_us}&end={last - span // 5}",
                                 history_rate, seconds, connections=8)
        say(f"serving: WebSocket fan-out to {clients} clients ...")
        results["fan_out"] = fan_out(settings, f"ws://127.0.0.1:{settings.serve_port}/api/v1/stream", symbols[:50],
                                     clients)
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGINT)
            serve.wait(60)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,5000,10000", help="live max requests/s, each in turn")
    parser.add_argument("--seconds", type=float, default=20, help="how long each rate is held")
    parser.add_argument("--history-rate", type=int, default=50)
    parser.add_argument("--clients", type=int, default=1000, help="WebSocket clients for the fan-out")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "serving.md")
    args = parser.parse_args()

    from stockmax import config
    from stockmax.kafka_local import LocalKafka, free_port

    run_dir = ROOT / ".cache" / "bench" / f"serving-{uuid.uuid4().hex[:6]}"
    base = config.load(env={})
    broker = LocalKafka(run_dir / "kafka", base.kafka_jars_dir, port=free_port())
    say(f"starting a Kafka broker on {broker.bootstrap} ...")
    broker.start()
    try:
        results = measure(base.with_(kafka_bootstrap=broker.bootstrap), run_dir,
                          [int(r) for r in args.rates.split(",")], args.seconds, args.history_rate, args.clients)
    finally:
        broker.stop()
    args.out.write_text("\n".join([f"# Serving benchmark ({results['date']}, {results['cores']} cores)", "",
                                    *serving_table(results), "", "```json", json.dumps(results, indent=1), "```", ""]))
    say(f"wrote {args.out}")


def serving_table(results: dict) -> list[str]:
    lines = ["Made by `bench/serving.py` (its docstring says how): one machine runs the load generator (oha, open "
             "loop, latency counted from when each request was due), `stockmax serve`, its loader and Kafka. "
             "Latencies in ms.", "",
             "| what | rate asked | achieved | p50 | p99 | p99.9 | max |", "|---|---|---|---|---|---|---|"]
    for row in results["live"]:
        lines.append(f"| live max (`/max?window=5m`, random symbols) | {row['rate']:,}/s | {row['achieved_rps']:,.0f}/s "
                     f"({row['success_rate'] * 100:.1f} % ok) | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                     f"{row['p99.9_ms']:.2f} | {row['max_ms']:.1f} |")
    h = results["history"]
    lines.append(f"| history max (`/max?start&end`, ClickHouse) | {h['rate']}/s | {h['achieved_rps']:,.0f}/s "
                 f"({h['success_rate'] * 100:.1f} % ok) | {h['p50_ms']:.2f} | {h['p99_ms']:.2f} | {h['p99.9_ms']:.2f} | "
                 f"{h['max_ms']:.1f} |")
    for name, row in results["cli"].items():
        lines.append(f"| baseline: {name}, a process per call | one at a time | | {row['p50_ms']:.0f} | "
                     f"{row['p99_ms']:.0f} (max of {row['runs']}) | | |")
    f = results["fan_out"]
    lines += ["", f"WebSocket fan-out: {f['clients']:,} clients, {f['updates']} max updates committed in Kafka "
              f"transactions 200 ms apart; {f['deliveries']:,} of {f['expected_deliveries']:,} deliveries; push delay "
              f"after the commit p50 {f['p50_ms']:.1f}, p99 {f['p99_ms']:.1f}, p99.9 {f['p99.9_ms']:.1f}, "
              f"max {f['max_ms']:.1f} ms."]
    return lines


if __name__ == "__main__":
    main()

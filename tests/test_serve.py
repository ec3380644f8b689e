"""`stockmax serve` against the running pipeline: an unbounded `stockmax run` (its loader owns the embedded
store) and `stockmax serve` beside it, answering from the job's committed outputs and from ClickHouse
through the run's loader. Every answer is compared exactly with an independent reading: the committed
records themselves, and the brute-force oracle over the ticks."""

from __future__ import annotations

import json
import os
import signal
import socket as socket_module
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from websockets.sync.client import connect

from cli_env import cli_env
from oracle import apply_order, expected_max_updates, expected_rollups, split_duplicates, update_key
from running_job import CONVERGE_S, CommittedCounts, flink_log_problems, isolated, next_ticks, start_job, wait_until
from stockmax import kafka_io, sample
from stockmax.config import PROJECT_ROOT
from stockmax.kafka_io import admin
from stockmax.kafka_local import free_port
from stockmax.replay import replay

pytestmark = pytest.mark.e2e

TOKEN = "test-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACTS = PROJECT_ROOT / ".cache" / "test-artifacts"


def serve_ready(url: str) -> bool:
    """/healthz says 200: Kafka and the store answer, and the view has caught up."""
    try:
        return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def loader_caught_up(settings) -> bool:
    """The run's loader has committed (after inserting) every record of the topics it loads."""
    client = admin(settings)
    try:
        group = f"{settings.job_name}-loader"
        committed = client.list_group_offsets({group: None}).get(group, {})
    finally:
        client.close()
    consumer = kafka_io._committed_consumer(settings, group_id=None)
    try:
        ends = consumer.end_offsets(list(committed)) if committed else {}
        topics = {settings.topic("rollups"), settings.topic("tick_batches")}
        return bool(committed) and topics <= {tp.topic for tp in committed} and \
            all(committed[tp].offset >= ends[tp] for tp in committed)
    finally:
        consumer.close()


def latest_committed_updates(settings) -> dict[tuple[str, str], dict]:
    """Per (symbol, window), the last max update committed (records of a key are in emission order)."""
    latest = {}
    for update in kafka_io.read_committed_json(settings, "max_updates"):
        latest[(update["symbol"], update["window"])] = update
    return latest


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap, tmp_path_factory):
    """Ticks published and processed by `stockmax run` (outputs committed, store loaded), and
    `stockmax serve` on a free port beside it (bearer tokens on)."""
    from stockmax import config

    tmp_path = tmp_path_factory.mktemp("serve")
    base = config.load(env={}).with_(kafka_bootstrap=kafka_bootstrap)
    settings = isolated(base, tmp_path, "serve", api_tokens=f"{TOKEN},other-token", serve_port=free_port(),
                        metrics_port="")
    data = sample.generate(symbols=4, duration_s=240, ticks_per_second=5, spikes_per_symbol=3, seed=5,
                           duplicate_share=0.01, max_delay_ms=1000).to_pylist()
    kafka_io.create_topics(settings)
    tick_file = tmp_path / "ticks.csv"
    pacsv.write_csv(pa.Table.from_pylist(data + next_ticks(data)), tick_file)
    replay(settings, tick_file, progress=False)
    rules = settings.rules()
    windows_ms = tuple(w // 1000 for w in rules.windows_us)
    expected_updates = expected_max_updates(data, windows_ms, settings.spike_window_ms, settings.watermark_bound_ms,
                                            settings.moving_average_ticks)
    job = start_job(settings)
    serve = None
    try:
        with CommittedCounts(settings, ("max_updates",)) as counts:
            wait_until(lambda: counts.poll()["max_updates"] >= len(expected_updates), "every max update committed",
                       CONVERGE_S, job)
        wait_until(lambda: loader_caught_up(settings), "the store loaded", CONVERGE_S, job)
        serve = subprocess.Popen([sys.executable, "-m", "stockmax.cli", "serve"], env=cli_env(settings),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        base_url = f"http://127.0.0.1:{settings.serve_port}"
        wait_until(lambda: serve_ready(base_url), "stockmax serve ready (/healthz 200)", 60, job, serve)
        with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as http:
            yield {"settings": settings, "data": data, "http": http, "url": base_url, "job": job, "serve": serve,
                   "expected_updates": expected_updates}
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n--- {flink_log_problems(settings)}") from None
    finally:
        for process in (serve, job):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def test_live_max_is_the_latest_committed_update_and_the_oracles_last(pipeline):
    settings, http = pipeline["settings"], pipeline["http"]
    committed = latest_committed_updates(settings)
    oracle_last = {}
    for update in pipeline["expected_updates"]:
        oracle_last[(update["symbol"], update["window"])] = update
    valid_at = {}
    for (symbol, _), update in committed.items():
        valid_at[symbol] = max(valid_at.get(symbol, 0), update["event_time"])
    symbols = sorted({t["symbol"] for t in pipeline["data"]})
    assert {s for s, _ in committed} >= set(symbols)
    for symbol in symbols:
        for window in ("1s", "1m", "5m", "1h"):
            response = http.get(f"/api/v1/stocks/{symbol}/max", params={"window": window})
            assert response.status_code == 200, response.text
            answer = response.json()
            expected = committed[(symbol, window)]
            assert answer == {"source": "live", **expected, "valid_at": valid_at[symbol]}
            assert update_key(answer) == update_key(oracle_last[(symbol, window)])


def brute_force_highest(data, symbol, start_us, end_us):
    kept, _ = split_duplicates(data)
    applied = [t for t in apply_order(kept).get(symbol, []) if start_us <= t["event_time"] < end_us]
    high = max(t["price"] for t in applied)
    return high, min(t["event_time"] for t in applied if t["price"] == high)


def test_historical_max_and_bars_equal_the_brute_force(pipeline):
    http, data = pipeline["http"], pipeline["data"]
    symbol = sorted({t["symbol"] for t in data})[1]
    times = sorted(t["event_time"] for t in data if t["symbol"] == symbol)
    first, last = times[0], times[-1]
    # Ranges with ragged edges (raw ticks), whole seconds and minutes inside (rollups).
    for start, end in [(first, last + 1), (first + 1_234_567, first + 61_000_001), (first + 30_500_000, last - 7)]:
        response = http.get(f"/api/v1/stocks/{symbol}/max", params={"start": str(start), "end": str(end)})
        assert response.status_code == 200, response.text
        high, at = brute_force_highest(data, symbol, start, end)
        assert response.json() == {"source": "history", "symbol": symbol, "start": start, "end": end, "max": high,
                                   "max_time": at}
    # start + window: [start, start + window)
    response = http.get(f"/api/v1/stocks/{symbol}/max", params={"start": str(first), "window": "2m"})
    assert response.json()["max"] == brute_force_highest(data, symbol, first, first + 120_000_000)[0]

    start, end = first // 60_000_000 * 60_000_000, last + 1
    response = http.get(f"/api/v1/stocks/{symbol}/history", params={"start": str(start), "end": str(end),
                                                                    "resolution": "1m"})
    assert response.status_code == 200, response.text
    expected = [r for r in expected_rollups(data, 60) if r["symbol"] == symbol and start <= r["bucket_start"] < end]
    columns = ["bucket_start", "open", "high", "high_time", "low", "low_time", "close", "count", "volume", "vwap"]
    assert [{c: b[c] for c in columns} for b in response.json()["bars"]] == [{c: r[c] for c in columns} for r in expected]


def test_batch_alerts_errors_and_auth(pipeline):
    settings, http, url = pipeline["settings"], pipeline["http"], pipeline["url"]
    symbols = sorted({t["symbol"] for t in pipeline["data"]})
    committed = latest_committed_updates(settings)
    response = http.post("/api/v1/queries/batch", json={"queries": [
        {"symbol": symbols[0], "window": "5m"}, {"symbol": "NOPE", "window": "5m"}, {"symbol": symbols[1], "window": "7x"},
        {"symbol": symbols[2], "window": "1m"}]})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert update_key(results[0]) == update_key(committed[(symbols[0], "5m")])
    assert results[1]["error"]["status"] == 404 and "NOPE" in results[1]["error"]["detail"]
    assert results[2]["error"]["status"] == 400 and "7x" in results[2]["error"]["detail"]
    assert update_key(results[3]) == update_key(committed[(symbols[2], "1m")])

    alerts = kafka_io.read_committed_json(settings, "alerts")
    assert alerts, "the sample should make alerts"
    for symbol in symbols:
        mine = [a for a in alerts if a["symbol"] == symbol]
        assert http.get("/api/v1/alerts", params={"symbol": symbol, "limit": 1000}).json()["alerts"] == mine
    since = sorted(a["event_time"] for a in alerts)[len(alerts) // 2]
    newest_two = sorted((a for a in alerts if a["event_time"] >= since),
                        key=lambda a: (a["event_time"], a["symbol"], a["seq"]))[-2:]
    assert http.get("/api/v1/alerts", params={"since": str(since), "limit": 2}).json()["alerts"] == newest_two

    for path, params, status, words in [
            ("/api/v1/stocks/NOPE/max", {"window": "5m"}, 404, "unknown symbol"),
            (f"/api/v1/stocks/{symbols[0]}/max", {"window": "5x"}, 400, "not a duration"),
            (f"/api/v1/stocks/{symbols[0]}/max", {"window": "2m"}, 400, "not one the job keeps"),
            (f"/api/v1/stocks/{symbols[0]}/max", {"start": "yesterday"}, 400, "ISO-8601"),
            (f"/api/v1/stocks/{symbols[0]}/max", {"start": "2026-01-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}, 400,
             "range is empty"),
            ("/api/v1/stocks/NOPE/max", {"start": "2026-01-01T00:00:00Z"}, 404, "unknown symbol"),
            (f"/api/v1/stocks/{symbols[0]}/history", {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z",
                                                       "resolution": "7m"}, 400, "no rollups at"),
            ("/api/v1/alerts", {"limit": "-1"}, 400, "limit")]:
        response = http.get(path, params=params)
        assert response.status_code == status, (path, params, response.text)
        assert words in response.json()["error"]["detail"], (path, params, response.text)
    assert http.post("/api/v1/queries/batch", content=b"not json").status_code == 400

    assert httpx.get(f"{url}/api/v1/stocks/{symbols[0]}/max?window=5m").status_code == 401
    assert httpx.get(f"{url}/api/v1/stocks/{symbols[0]}/max?window=5m",
                     headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{url}/api/v1/stocks/{symbols[0]}/max?window=5m&token=other-token").status_code == 200
    health = httpx.get(f"{url}/healthz").json()
    assert health == {"status": "ok", "kafka": True, "store": True, "view_caught_up": True, "stream_clients": 0}
    metrics = httpx.get(f"{url}/metrics").text
    assert 'stockmax_serve_requests_total{endpoint="/api/v1/stocks/{symbol}/max",status="404"}' in metrics
    assert "stockmax_serve_view_caught_up 1.0" in metrics
    assert httpx.get(f"{url}/openapi.json").json()["info"]["title"] == "stockmax"


def raw_exchange(port: int, requests: bytes, count: int) -> tuple[list[tuple[int, bytes]], bytes]:
    """Send raw HTTP/1.x bytes on one connection (pipelined when several); the first `count` responses
    (status, body) in order, and what came back for one more request sent after them: b"" when the server
    had closed the connection."""
    with socket_module.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(requests)
        stream = sock.makefile("rb")
        responses = []
        for _ in range(count):
            status = int(stream.readline().split()[1])
            headers = {}
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            responses.append((status, stream.read(int(headers["content-length"]))))
        try:
            sock.sendall(f"GET /api/v1/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                         "Connection: close\r\n\r\n".encode())
            rest = stream.read()
        except (BrokenPipeError, ConnectionResetError):
            rest = b""
        return responses, rest


def test_live_max_answers_keep_http_order_and_connection_rules(pipeline):
    """The live max is answered before the app sees the request; pipelined beside requests the app answers,
    every answer still comes back in order, and `Connection: close` and HTTP/1.0 close the connection."""
    settings = pipeline["settings"]
    symbols = sorted({t["symbol"] for t in pipeline["data"]})
    committed = latest_committed_updates(settings)

    def get(target: str, version: str = "1.1", close: bool = False) -> bytes:
        return (f"GET {target} HTTP/{version}\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                + ("Connection: close\r\n" if close else "") + "\r\n").encode()

    def live(symbol: str, window: str) -> dict:
        return update_key(committed[(symbol, window)])

    responses, _ = raw_exchange(settings.serve_port, b"".join([
        get(f"/api/v1/stocks/{symbols[0]}/max?window=1m"),
        get(f"/api/v1/alerts?symbol={symbols[0]}&limit=1"),  # answered by the app
        get(f"/api/v1/stocks/{symbols[1]}/max?window=5m"),
        get("/api/v1/stocks/NOPE/max?window=5m")]), 4)
    assert [status for status, _ in responses] == [200, 200, 200, 404]
    assert update_key(json.loads(responses[0][1])) == live(symbols[0], "1m")
    assert set(json.loads(responses[1][1])) == {"alerts"}
    assert update_key(json.loads(responses[2][1])) == live(symbols[1], "5m")
    assert "unknown symbol" in json.loads(responses[3][1])["error"]["detail"]

    # Kept open after an answer (the next request is answered), closed after one to `Connection: close`.
    responses, rest = raw_exchange(settings.serve_port, get(f"/api/v1/stocks/{symbols[2]}/max?window=1m"), 1)
    assert update_key(json.loads(responses[0][1])) == live(symbols[2], "1m") and rest.startswith(b"HTTP/1.1 200")
    responses, rest = raw_exchange(settings.serve_port, get(f"/api/v1/stocks/{symbols[2]}/max?window=1m",
                                                            close=True), 1)
    assert update_key(json.loads(responses[0][1])) == live(symbols[2], "1m") and rest == b""
    responses, rest = raw_exchange(settings.serve_port, get(f"/api/v1/stocks/{symbols[3]}/max?window=5m", "1.0"), 1)
    assert update_key(json.loads(responses[0][1])) == live(symbols[3], "5m") and rest == b""


def frames(socket, until, timeout_s: float = 120) -> list[dict]:
    """Events received until `until(events so far)` holds."""
    events = []
    deadline = time.monotonic() + timeout_s
    while not until(events):
        assert time.monotonic() < deadline, f"the stream did not deliver in time; got {events[-5:]}"
        events += json.loads(socket.recv(timeout=deadline - time.monotonic()))
    return events


def test_stream_snapshot_bad_messages_and_pushed_updates(pipeline):
    settings, data = pipeline["settings"], pipeline["data"]
    symbol = sorted({t["symbol"] for t in data})[2]
    committed = latest_committed_updates(settings)
    with connect(f"ws://127.0.0.1:{settings.serve_port}/api/v1/stream?token={TOKEN}") as socket:
        socket.send("{not json")
        error = frames(socket, lambda e: e)[0]
        assert error["type"] == "error"
        socket.send(json.dumps({"subscribe": [symbol], "windows": ["1m", "5x"]}))
        assert frames(socket, lambda e: e)[0] == {"type": "error", "detail": "window: not a duration: '5x' (use e.g. 500ms, 1s, 5m, 1h)"}
        # The socket stayed: a good subscription now gets its answer and the view's current values.
        socket.send(json.dumps({"subscribe": [symbol], "windows": ["1m", "5m"], "events": ["max_change", "alert"]}))
        got = frames(socket, lambda e: sum(x["type"] == "max_change" for x in e) == 2)
        assert got[0] == {"type": "subscribed", "symbols": [symbol], "windows": ["1m", "5m"],
                          "events": ["alert", "max_change"]}
        assert {x["window"]: update_key(x) for x in got[1:]} == \
            {w: update_key(committed[(symbol, w)]) for w in ("1m", "5m")}
        # A new high now: the job commits its max updates, and the stream pushes them.
        last = max(t["event_time"] for t in data) + 2 * 3_600_000_000 + 60_000_000
        spike = [{"symbol": symbol, "price": 10_000.0, "volume": 1.0, "exchange": "X", "seq": 10**9 + 1,
                  "event_time": last}]
        later = [dict(t, seq=10**9 + 2, event_time=last + 10_000_000, price=1.0) for t in next_ticks(data)]
        feed = Path(settings.data_dir) / "spike.csv"
        pacsv.write_csv(pa.Table.from_pylist(spike + later), feed)
        replay(settings, feed, progress=False)
        pushed = frames(socket, lambda e: {(x["window"], x["max"]) for x in e if x["type"] == "max_change"}
                        >= {("1m", 10_000.0), ("5m", 10_000.0)})
        spike_updates = {u["window"]: u for u in kafka_io.read_committed_json(settings, "max_updates")
                         if u["symbol"] == symbol and u["event_time"] == last}
        for event in pushed:
            if event["type"] == "max_change" and event["event_time"] == last:
                assert event == {"type": "max_change", **spike_updates[event["window"]]}
        assert {e["window"] for e in pushed if e["type"] == "max_change" and e["event_time"] == last} == {"1m", "5m"}


def test_the_live_page_draws_pushed_updates_in_chromium(pipeline):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.support.ui import WebDriverWait

    settings, data = pipeline["settings"], pipeline["data"]
    symbol = sorted({t["symbol"] for t in data})[0]
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=ChromeService(executable_path="/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"{pipeline['url']}/?symbols={symbol}&token={TOKEN}")
        # The subscription's snapshot arrives over the WebSocket and is drawn: every window's band at the
        # newest committed max (a pushed update may still be on its way: wait for the outcome).
        committed = latest_committed_updates(settings)
        expected = {w: committed[(symbol, w)]["max"] for w in ("1s", "1m", "5m", "1h")}
        drawn_maxima = ("const c = window.stockmax && window.stockmax.charts['%s'];"
                        "return c && c.pricePoints.length > 0 ? Object.fromEntries(Object.entries(c.bands).map("
                        "([w, b]) => [w, b.maxPoints.length ? b.maxPoints[b.maxPoints.length - 1].value : null])) : null;"
                        % symbol)
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(drawn_maxima) == expected)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "live-page.png"))
    finally:
        driver.quit()


def test_a_restarted_serve_rebuilds_its_view_from_the_topics(pipeline):
    """Stopped (SIGINT, as Ctrl-C) and started again, `stockmax serve` answers what it answered before: its
    view is rebuilt from the committed records, and /healthz says ready only once it has caught up."""
    settings, serve, http = pipeline["settings"], pipeline["serve"], pipeline["http"]
    symbols = sorted({t["symbol"] for t in pipeline["data"]})
    before = {s: http.get(f"/api/v1/stocks/{s}/max", params={"window": "1m"}).json() for s in symbols}
    serve.send_signal(signal.SIGINT)
    assert serve.wait(timeout=60) == 0, serve.stderr.read()[-3000:]
    again = subprocess.Popen([sys.executable, "-m", "stockmax.cli", "serve"], env=cli_env(settings),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: serve_ready(pipeline["url"]), "the restarted serve ready", 60, again)
        committed = latest_committed_updates(settings)
        for symbol in symbols:
            answer = http.get(f"/api/v1/stocks/{symbol}/max", params={"window": "1m"}).json()
            assert answer == before[symbol]
            assert update_key(answer) == update_key(committed[(symbol, "1m")])
    finally:
        again.send_signal(signal.SIGINT)
        again.wait(timeout=60)



def test_serve_takes_over_loading_when_the_run_that_loaded_stops(pipeline):
    """The embedded store has one owner: the process that loads it. Here `stockmax run` loads and `serve`
    asks it; the run stops, and `serve` loads from then on: a bar committed after that reaches the store
    and the history endpoint, exactly."""
    import confluent_kafka

    settings, job, http = pipeline["settings"], pipeline["job"], pipeline["http"]
    if pipeline["serve"].poll() is None:  # this test's own serve takes the port
        pipeline["serve"].send_signal(signal.SIGINT)
        pipeline["serve"].wait(timeout=60)
    serve = subprocess.Popen([sys.executable, "-m", "stockmax.cli", "serve"], env=cli_env(settings),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_until(lambda: serve_ready(pipeline["url"]), "stockmax serve ready beside the run", 60, serve)
        job.send_signal(signal.SIGINT)
        assert job.wait(timeout=120) == 0, job.stderr.read()[-3000:]
        start_us = 1_800_000_000_000_000
        bar = {"symbol": "TAKEN", "resolution_s": 60, "bucket_start": start_us, "open": 10.0, "high": 12.5,
               "high_time": start_us + 5_000_000, "low": 9.75, "low_time": start_us + 7_000_000, "close": 11.0,
               "count": 3, "volume": 6.0, "vwap": 11.25}
        producer = confluent_kafka.Producer({"bootstrap.servers": settings.kafka_bootstrap,
                                             "transactional.id": f"{settings.job_name}-takeover-test",
                                             **settings.kafka_librdkafka_options()})
        producer.init_transactions(60)
        producer.begin_transaction()
        producer.produce(settings.topic("rollups"), json.dumps(bar).encode(), b"TAKEN")
        producer.commit_transaction(60)
        query = {"start": str(start_us), "end": str(start_us + 60_000_000), "resolution": "1m"}

        def bars():
            response = http.get("/api/v1/stocks/TAKEN/history", params=query)
            return response.json()["bars"] if response.status_code == 200 else None
        wait_until(lambda: bars(), "the bar committed after the run stopped, loaded by serve", 120, serve)
        assert bars() == [{k: v for k, v in bar.items() if k not in ("symbol", "resolution_s")}]
    finally:
        serve.send_signal(signal.SIGINT)
        said = serve.communicate(timeout=60)[0]
    assert "this one loads it now" in said

def _commit_max_updates(settings, updates: list[dict]) -> None:
    """Max updates committed in one Kafka transaction, as the job's sink commits them."""
    import confluent_kafka

    producer = confluent_kafka.Producer({"bootstrap.servers": settings.kafka_bootstrap,
                                         "transactional.id": f"{settings.job_name}-test-{time.monotonic_ns()}",
                                         **settings.kafka_librdkafka_options()})
    producer.init_transactions(60)
    producer.begin_transaction()
    for update in updates:
        producer.produce(settings.topic("max_updates"), json.dumps(update).encode(), update["symbol"].encode())
    producer.commit_transaction(60)


def _max_update(symbol: str, seq: int, price: float) -> dict:
    event_time = 1_700_000_000_000_000 + seq * 1_000_000
    return {"symbol": symbol, "window": "1m", "window_ms": 60_000, "event_time": event_time, "seq": seq,
            "max": price, "max_time": event_time, "min": price - 1, "min_time": event_time,
            "moving_average": price - 0.5, "moving_average_ticks": 20}


def test_serve_rides_out_a_kafka_outage(settings, tmp_path):
    """The broker stops under a running `stockmax serve`: live answers go on from memory while /healthz says
    Kafka is down (503); the broker comes back, /healthz says ready again with no new record needed, and what
    is committed after the outage reaches both the live answer and a stream left open, nothing twice."""
    from stockmax.kafka_local import LocalKafka

    broker = LocalKafka(tmp_path / "kafka", settings.kafka_jars_dir, port=free_port())
    broker.start()
    s = isolated(settings, tmp_path, "outage", kafka_bootstrap=broker.bootstrap, serve_port=free_port(),
                 metrics_port="")
    serve = None
    try:
        kafka_io.create_topics(s)
        before = _max_update("OUT", 1, 100.0)
        _commit_max_updates(s, [before])
        serve = subprocess.Popen([sys.executable, "-m", "stockmax.cli", "serve"], env=cli_env(s),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        url = f"http://127.0.0.1:{s.serve_port}"
        wait_until(lambda: serve_ready(url), "stockmax serve ready", 60, serve)
        live = f"{url}/api/v1/stocks/OUT/max?window=1m"
        assert update_key(httpx.get(live).json()) == update_key(before)
        with connect(f"ws://127.0.0.1:{s.serve_port}/api/v1/stream") as socket:
            socket.send(json.dumps({"subscribe": ["OUT"], "windows": ["1m"], "events": ["max_change"]}))
            snapshot = frames(socket, lambda got: any(e["type"] == "max_change" for e in got))
            assert [update_key(e) for e in snapshot if e["type"] == "max_change"] == [update_key(before)]

            assert broker.stop()
            wait_until(lambda: httpx.get(f"{url}/healthz").json()["kafka"] is False, "/healthz to say Kafka is down",
                       120, serve)
            assert httpx.get(f"{url}/healthz").status_code == 503
            assert update_key(httpx.get(live).json()) == update_key(before)  # from memory, through the outage

            broker.start()
            wait_until(lambda: serve_ready(url), "/healthz ready again after the broker came back", 120, serve)
            after = [_max_update("OUT", 2, 101.0), _max_update("OUT", 3, 102.5)]
            _commit_max_updates(s, after)
            wait_until(lambda: update_key(httpx.get(live).json()) == update_key(after[-1]),
                       "the update committed after the outage in the live answer", 120, serve)
            pushed = frames(socket, lambda got: any(e.get("seq") == 3 for e in got))
        # In commit order, the newest last, nothing from before the outage again; a max update superseded by a
        # newer one of its window before the client took it may be left out (coalesced).
        pushed_keys = [update_key(e) for e in pushed if e["type"] == "max_change"]
        committed_keys = [update_key(u) for u in after]
        assert pushed_keys[-1] == committed_keys[-1]
        assert pushed_keys == [k for k in committed_keys if k in pushed_keys]
    finally:
        if serve is not None and serve.poll() is None:
            serve.send_signal(signal.SIGINT)
            serve.wait(timeout=60)
        broker.stop()

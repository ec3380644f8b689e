"""`stockmax serve`: the live answers over HTTP and a WebSocket stream, and a page that draws them.

Live questions (the max and min over a window now) are answered from memory, from the job's committed
outputs (live_view.py); history (any range, bars) from ClickHouse through store_service.py, which on the
embedded default asks the process that loads the store (this one starts that loader when no other runs).
docs/serving.md describes the API, the stream's protocol and what is guaranteed.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hmac
import logging
import re
import time
from pathlib import Path
from urllib.parse import parse_qsl, unquote

import httptools
import orjson
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .config import Settings
from .history import HistoryError, NotFound
from .live_view import EVENT_TOPICS, LiveView, OutputReader
from .operators.durations import format_duration, parse_duration_us, parse_span_us
from .operators.tick import symbol_problem
from .store import StoreError
from .times import parse_utc_us

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
BATCH_MAX_QUERIES = 1000
LIVE_MAX_PATH = re.compile(rb"/api/v1/stocks/([^/]+)/max")  # on the raw (still %-encoded) path
ALERTS_MAX_LIMIT = 10_000


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _error(exc: "ApiError") -> dict:
    return {"error": {"status": exc.status, "detail": exc.detail}}


def _error_body(exc: "ApiError") -> bytes:
    return orjson.dumps(_error(exc))


def _json(value, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


def _time(text: str, name: str) -> int:
    try:
        return parse_utc_us(text)
    except ValueError as exc:
        raise ApiError(400, f"{name}: {exc}") from None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("stockmax_serve_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.stream_clients = Gauge("stockmax_serve_stream_clients", "open WebSocket streams", registry=r)
        self.stream_events = Counter("stockmax_serve_stream_events", "events sent to stream clients", registry=r)
        self.stream_coalesced = Counter("stockmax_serve_stream_coalesced",
                                        "max updates replaced by a newer one before a slow client took them", registry=r)
        self.stream_dropped_clients = Counter("stockmax_serve_stream_dropped_clients",
                                              "stream clients disconnected for falling too far behind", registry=r)
        self.view_records = Gauge("stockmax_serve_view_records", "committed output records read into the view", registry=r)
        self.view_caught_up = Gauge("stockmax_serve_view_caught_up", "1 once the view holds what was committed at start", registry=r)
        self.kafka_up = Gauge("stockmax_serve_kafka_up", "1 while the view's Kafka reader reaches the broker", registry=r)
        # The live max's counters by status, looked up once each: it is the hot question.
        self.live_max_requests = functools.lru_cache(maxsize=None)(
            lambda status: self.requests.labels("/api/v1/stocks/{symbol}/max", str(status)))


class StreamClient:
    """One WebSocket subscriber: what it asked for, and what waits to be sent to it. Max updates wait
    coalesced per (symbol, window) (only the newest matters); alerts and price bars wait in order, at most
    `backlog` of them: a client further behind is disconnected, so memory stays bounded and no alert is
    dropped silently."""

    def __init__(self, socket: WebSocket, backlog: int, metrics: Metrics) -> None:
        self.socket, self.backlog, self.metrics = socket, backlog, metrics
        self.symbols: set[str] = set()
        self.windows: set[str] | None = None  # None: every window
        self.events = set(EVENT_TOPICS)
        self.waiting_max: dict[tuple[str, str], dict] = {}
        self.waiting: collections.deque = collections.deque()
        self.wake = asyncio.Event()
        self.overflowed = False

    def wants(self, event: dict) -> bool:
        return (event["symbol"] in self.symbols and event["type"] in self.events
                and (event["type"] != "max_change" or self.windows is None or event["window"] in self.windows))

    def offer(self, event: dict) -> None:
        if event["type"] == "max_change":
            key = (event["symbol"], event["window"])
            if key in self.waiting_max:
                self.metrics.stream_coalesced.inc()
            self.waiting_max[key] = event
        elif len(self.waiting) >= self.backlog:
            self.overflowed = True
        else:
            self.waiting.append(event)
        self.wake.set()

    def say(self, reply: dict) -> None:
        """An answer to the client's own message (not counted against the backlog)."""
        self.waiting.append(reply)
        self.wake.set()

    def take(self) -> list[dict]:
        events = list(self.waiting) + list(self.waiting_max.values())
        self.waiting.clear()
        self.waiting_max.clear()
        return events


class StreamHub:
    """Fans the reader's events out to the stream clients, on the server's event loop."""

    def __init__(self, metrics: Metrics) -> None:
        self.clients: set[StreamClient] = set()
        self.metrics = metrics
        self.loop: asyncio.AbstractEventLoop | None = None

    def publish(self, events: list[dict]) -> None:
        """From the reader's thread."""
        if self.loop is not None and self.clients:
            self.loop.call_soon_threadsafe(self._fan_out, events)

    def _fan_out(self, events: list[dict]) -> None:
        for client in self.clients:
            for event in events:
                if client.wants(event):
                    client.offer(event)


class Service:
    """The view, its reader, the history source and the stream hub, for one `stockmax serve`."""

    def __init__(self, settings: Settings, history) -> None:
        self.settings = settings
        self.history = history
        self.metrics = Metrics()
        self.hub = StreamHub(self.metrics)
        resolutions = settings.rollup_resolutions_seconds()
        self.view = LiveView(settings.serve_alerts_kept, min(resolutions))
        self.windows = [format_duration(w) for w in settings.rules().windows_us]
        self.reader = OutputReader(settings, self.view, self.hub.publish)
        self.tokens = [t.strip().encode() for t in settings.api_tokens.split(",") if t.strip()]
        # The checked window name of each (symbol, window) asked for live (a failed check is not kept).
        self.live_names = functools.lru_cache(maxsize=100_000)(self.live_question)

    def authorized(self, header: str | None, token: str | None) -> bool:
        if not self.tokens:
            return True
        given = token or (header[7:] if header and header.lower().startswith("bearer ") else None)
        return given is not None and any(hmac.compare_digest(given.encode(), t) for t in self.tokens)

    # -- questions ------------------------------------------------------------------------------
    def check_symbol(self, symbol: str) -> None:
        problem = symbol_problem(symbol)
        if problem:
            raise ApiError(400, problem)

    def check_window(self, window: str) -> str:
        try:
            return format_duration(parse_duration_us(window))
        except ValueError as exc:
            raise ApiError(400, f"window: {exc}") from None

    def live_question(self, symbol: str, window: str | None) -> str:
        """The name of the live window asked for, once symbol and window are checked."""
        self.check_symbol(symbol)
        if window is None:
            raise ApiError(400, "give window (the live max over it), or start (and end, or window) for history")
        name = self.check_window(window)
        if name not in self.windows:
            raise ApiError(400, f"window {window!r} is not one the job keeps live ({', '.join(self.windows)}); "
                                f"for another length ask history with start=")
        return name

    def live_answer(self, symbol: str, name: str) -> dict:
        with self.reader.lock:
            answer = self.view.live_max(symbol, name)
            known = self.view.knows(symbol)
        if answer is None:
            if known:
                raise ApiError(404, f"no {name} max of {symbol} yet")
            raise ApiError(404, f"unknown symbol {symbol!r}: no committed output of it (yet)")
        return {"source": "live", **answer}

    def max_answer(self, symbol: str, window: str | None, start: str | None, end: str | None) -> dict:
        if start is None and end is None:
            return self.live_answer(symbol, self.live_question(symbol, window))
        self.check_symbol(symbol)
        if start is None:
            raise ApiError(400, "end needs start")
        start_us = _time(start, "start")
        if end is not None:
            if window is not None:
                raise ApiError(400, "give end or window with start, not both")
            end_us = _time(end, "end")
        elif window is not None:
            try:
                end_us = start_us + parse_span_us(window)
            except ValueError as exc:
                raise ApiError(400, f"window: {exc}") from None
        else:
            end_us = time.time_ns() // 1000
        price, first_at = self._history(self.history.highest, symbol, start_us, end_us)
        return {"source": "history", "symbol": symbol, "start": start_us, "end": end_us, "max": price,
                "max_time": first_at}

    def _history(self, question, *args):
        try:
            return question(*args)
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        except HistoryError as exc:
            raise ApiError(400, str(exc)) from None
        except StoreError as exc:
            raise ApiError(503, str(exc)) from None

    def bars_answer(self, symbol: str, start: str, end: str, resolution: str) -> dict:
        self.check_symbol(symbol)
        try:
            resolution_us = parse_span_us(resolution)
        except ValueError as exc:
            raise ApiError(400, f"resolution: {exc}") from None
        if resolution_us % 1_000_000:
            raise ApiError(400, f"resolution {resolution!r} is not whole seconds")
        rows = self._history(self.history.bars, symbol, resolution_us // 1_000_000, _time(start, "start"),
                             _time(end, "end"))
        return {"symbol": symbol, "resolution": resolution, "bars": rows}


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="stockmax", version="1", summary="Live and historical max/min of every symbol",
                  docs_url="/docs")
    metrics = service.metrics

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return Response(_error_body(exc), status_code=exc.status, media_type="application/json")

    @app.get("/api/v1/stocks/{symbol}/max")
    async def stock_max(symbol: str, window: str | None = None, start: str | None = None, end: str | None = None):
        """The live max/min over `window` (from memory), or the exact historical max over [start, end) or
        [start, start + window) (from ClickHouse)."""
        if start is None and end is None:  # from memory: answered on the event loop, no thread hand-off
            return _json(service.max_answer(symbol, window, start, end))
        return _json(await asyncio.to_thread(service.max_answer, symbol, window, start, end))

    @app.get("/api/v1/stocks/{symbol}/history")
    async def stock_history(symbol: str, start: str, end: str, resolution: str = "1m"):
        """OHLCV bars with VWAP whose buckets start in [start, end)."""
        return _json(await asyncio.to_thread(service.bars_answer, symbol, start, end, resolution))

    @app.post("/api/v1/queries/batch")
    async def batch(request: Request):
        """{"queries": [{"symbol": .., "window": .., "start": .., "end": ..}, ...]}: each answered as
        /max would, in order; a failed one is {"error": {...}} in its place."""
        try:
            body = orjson.loads(await request.body())
            queries = body["queries"]
            if not isinstance(queries, list) or not all(isinstance(q, dict) for q in queries):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ApiError(400, 'the body must be JSON: {"queries": [{"symbol": "AAPL", "window": "5m"}, ...]}') from None
        if len(queries) > BATCH_MAX_QUERIES:
            raise ApiError(400, f"at most {BATCH_MAX_QUERIES} queries per batch, got {len(queries)}")
        results = []
        for query in queries:
            try:
                if not isinstance(query.get("symbol"), str) or not all(
                        isinstance(query.get(k), (str, type(None))) for k in ("window", "start", "end")):
                    raise ApiError(400, "each query needs a symbol and text window/start/end")
                results.append(await asyncio.to_thread(service.max_answer, query["symbol"], query.get("window"),
                                                       query.get("start"), query.get("end")))
            except ApiError as exc:
                results.append(_error(exc))
        return _json({"results": results})

    @app.get("/api/v1/alerts")
    async def alerts(symbol: str | None = None, since: str | None = None, limit: int = 100):
        """The newest alerts (newest last), of one symbol or all, at or after `since` (event time)."""
        if not 0 <= limit <= ALERTS_MAX_LIMIT:
            raise ApiError(400, f"limit must be in 0 .. {ALERTS_MAX_LIMIT}")
        if symbol is not None:
            service.check_symbol(symbol)
        since_us = _time(since, "since") if since is not None else None
        with service.reader.lock:
            chosen = service.view.recent_alerts(symbol, since_us, limit)
        return _json({"alerts": chosen})

    @app.get("/healthz")
    def healthz():
        """200 once the view holds what was committed at start and Kafka and the store answer; else 503."""
        reader = service.reader
        store_ok = True
        try:
            service.history.highest("__HEALTH__", 0, 1)
        except HistoryError:
            pass
        except StoreError:
            store_ok = False
        status = {"kafka": reader.kafka_ok, "store": store_ok, "view_caught_up": reader.caught_up,
                  "stream_clients": len(service.hub.clients)}
        ready = all((reader.kafka_ok, store_ok, reader.caught_up))
        return _json({"status": "ok" if ready else "not ready", **status}, 200 if ready else 503)

    @app.get("/metrics")
    def prometheus_metrics():
        metrics.view_records.set(service.view.records)
        metrics.view_caught_up.set(1 if service.reader.caught_up else 0)
        metrics.kafka_up.set(1 if service.reader.kafka_ok else 0)
        metrics.stream_clients.set(len(service.hub.clients))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/config")
    async def page_config():
        """What the page needs: the windows kept live and the rollup resolutions."""
        return _json({"windows": service.windows,
                      "resolutions": [format_duration(r * 1_000_000) for r in service.settings.rollup_resolutions_seconds()]})

    @app.websocket("/api/v1/stream")
    async def stream(socket: WebSocket):
        await socket.accept()
        if not service.authorized(socket.headers.get("authorization"), socket.query_params.get("token")):
            await socket.close(code=1008, reason="a valid bearer token is required")
            return
        hub = service.hub
        hub.loop = asyncio.get_running_loop()
        client = StreamClient(socket, service.settings.serve_client_backlog, metrics)
        hub.clients.add(client)
        sender = asyncio.create_task(_send_events(client, metrics))
        try:
            while True:
                _subscription(service, client, await socket.receive_text())
        except WebSocketDisconnect:
            pass
        finally:
            hub.clients.discard(client)
            sender.cancel()

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Outermost: every request is counted, and /api/ refused without a token before any routing.
    app.add_middleware(AuthenticateAndCount, service=service)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html")

    return app


class AuthenticateAndCount:
    """Plain ASGI (Starlette's BaseHTTPMiddleware costs a task and a stream per request): /api/ needs a token
    when tokens are set; every HTTP request is counted by route and status. (The live max is answered before
    the app, by LiveMaxHttp, and counted there.)"""

    UNAUTHORIZED = orjson.dumps({"error": {"status": 401, "detail": "a valid bearer token is required "
                                                                    "(Authorization: Bearer <token>)"}})

    def __init__(self, app, service: "Service") -> None:
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        if scope["path"].startswith("/api/") and self.service.tokens:
            token = next((v for k, v in parse_qsl(scope["query_string"].decode("latin-1")) if k == "token"), None)
            if not self.service.authorized(_authorization(scope["headers"]), token):
                status = 401
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": self.UNAUTHORIZED})
                self.service.metrics.requests.labels("unauthorized", "401").inc()
                return

        async def counted_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            route = scope.get("route")
            self.service.metrics.requests.labels(route.path if route else "other", str(status)).inc()


def _authorization(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The Authorization header of a request's raw (lower-cased) headers, if it has one."""
    return next((v.decode("latin-1") for k, v in headers if k == b"authorization"), None)


class _Answered:
    """Stands for the request/response cycle of a request LiveMaxHttp answered itself (complete)."""

    response_complete = True
    message_event = asyncio.Event()  # set by uvicorn on a lost connection; nothing waits on it


class LiveMaxHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, which answers `GET /api/v1/stocks/{symbol}/max?window=W` itself, as soon as
    the request's headers are parsed: the answer is a dict lookup, while the ASGI round (a task, its events,
    FastAPI's routing) costs several times that and put the p99 over a millisecond at 10 k requests/s. The
    answer comes from the same Service.live_question and live_answer that the app's route calls (through
    max_answer); everything else (other paths and parameters, a missing token, requests pipelined behind one
    the app is answering, a client not reading its answers) goes to the app as before."""

    service: Service  # set by live_max_http(service)

    def on_headers_complete(self) -> None:
        parser = self.parser
        if (parser.get_method() == b"GET" and not self.pipeline and not self.flow.write_paused
                and (self.cycle is None or self.cycle.response_complete) and not parser.should_upgrade()):
            url = httptools.parse_url(self.url)
            live = LIVE_MAX_PATH.fullmatch(url.path)
            if live is not None:
                reply = _live_max_reply(self.service, live[1], url.query, self.headers)
                if reply is not None:
                    return self._send(*reply)
        super().on_headers_complete()

    def _send(self, status: int, body: bytes) -> None:
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content += [b"content-type: application/json\r\ncontent-length: ", b"%d" % len(body), b"\r\n",
                    b"" if keep_alive else b"connection: close\r\n", b"\r\n", body]
        self.transport.write(b"".join(content))
        self.cycle = _Answered
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()


def live_max_http(service: Service) -> type[LiveMaxHttp]:
    return type("ServiceLiveMaxHttp", (LiveMaxHttp,), {"service": service})


@functools.lru_cache(maxsize=100_000)
def _live_request(raw_symbol: bytes, query: bytes | None) -> tuple[str, str | None, str | None] | None:
    """(symbol, window, token) of a live max request's path and query, or None if it has other parameters.
    Cached: a live feed's clients ask the same few questions again and again."""
    params = dict(parse_qsl(query.decode("latin-1"))) if query else {}
    if not set(params) <= {"window", "token"}:
        return None
    return unquote(raw_symbol.decode("latin-1")), params.get("window"), params.get("token")


def _live_max_reply(service: Service, raw_symbol: bytes, query: bytes | None,
                    headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes] | None:
    """The live max's status and body, or None for the app to answer (other parameters, or not authorized:
    the app's 401 is the one definition of it)."""
    request = _live_request(raw_symbol, query)
    if request is None:
        return None
    symbol, window, token = request
    if service.tokens and not service.authorized(_authorization(headers), token):
        return None
    try:
        status, body = 200, orjson.dumps(service.live_answer(symbol, service.live_names(symbol, window)))
    except ApiError as exc:
        status, body = exc.status, _error_body(exc)
    service.metrics.live_max_requests(status).inc()
    return status, body


def _subscription(service: Service, client: StreamClient, text: str) -> None:
    """Apply a subscription message and answer it; a bad one gets an error event (the socket stays open).
    Every frame goes out through the client's sender, so frames never interleave."""
    try:
        message = orjson.loads(text)
        if not isinstance(message, dict) or not set(message) <= {"subscribe", "unsubscribe", "windows", "events"}:
            raise ValueError('a message is {"subscribe": [symbols], "windows": [..], "events": [..]} or '
                             '{"unsubscribe": [symbols]}')
        for key in ("subscribe", "unsubscribe", "windows", "events"):
            value = message.get(key)
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ValueError(f"{key} must be a list of strings")
        for symbol in message.get("subscribe") or []:
            problem = symbol_problem(symbol)
            if problem:
                raise ValueError(problem)
        windows = None
        if message.get("windows") is not None:
            windows = {service.check_window(w) for w in message["windows"]}
        events = message.get("events")
        if events is not None and not set(events) <= set(EVENT_TOPICS):
            raise ValueError(f"events are {', '.join(EVENT_TOPICS)}")
    except ApiError as exc:
        return client.say({"type": "error", "detail": exc.detail})
    except (orjson.JSONDecodeError, ValueError) as exc:
        return client.say({"type": "error", "detail": str(exc)})
    added = set(message.get("subscribe") or []) - client.symbols
    client.symbols |= added
    client.symbols -= set(message.get("unsubscribe") or [])
    if "windows" in message:
        client.windows = windows
    if events is not None:
        client.events = set(events)
    client.say({"type": "subscribed", "symbols": sorted(client.symbols),
                "windows": sorted(client.windows) if client.windows is not None else None,
                "events": sorted(client.events)})
    # What the view holds now for the newly subscribed symbols, so a page draws at once.
    with service.reader.lock:
        for symbol in sorted(added):
            if "price_update" in client.events and symbol in service.view.prices:
                client.offer({"type": "price_update", **service.view.prices[symbol]})
            for window, update in service.view.maxima.get(symbol, {}).items():
                event = {"type": "max_change", **update}
                if client.wants(event):
                    client.offer(event)


async def _send_events(client: StreamClient, metrics: Metrics) -> None:
    """Each frame is a JSON array of events, in the order they were committed (coalesced max updates last)."""
    try:
        while True:
            await client.wake.wait()
            client.wake.clear()
            if client.overflowed:
                metrics.stream_dropped_clients.inc()
                await client.socket.close(code=1013, reason="too far behind: reconnect and resubscribe")
                return
            events = client.take()
            if events:
                await client.socket.send_text(orjson.dumps(events).decode())
                metrics.stream_events.inc(len(events))
    except (WebSocketDisconnect, RuntimeError):
        return


def _history_source(settings: Settings, say):
    """Where history questions go, and the loader this process started (None if another process loads).
    Embedded store: one loader per store, whose process answers everyone (store_service.py); this process
    starts it unless another runs. A server: this process's own connection."""
    from .loader import loader_unless_another
    from .store_service import LocalHistory, RemoteHistory, embedded_dir, owner_address

    if embedded_dir(settings) is None:
        from .store import Store

        return LocalHistory(Store(settings)), None
    loader = loader_unless_another(settings, say)
    if loader is not None:
        say(f"loading the store {embedded_dir(settings)} (no other loader runs)")
    return RemoteHistory(settings, owner_address(settings)), loader


def serve(settings: Settings, host: str, port: int, say=print) -> None:
    """Run `stockmax serve` until interrupted."""
    import threading

    import uvicorn

    from .loader import LoaderProcess
    from .store import StoreLockedError
    from .store_service import RemoteHistory, owner_address

    history, loader = _history_source(settings, say)
    service = Service(settings, history)
    service.reader.start()
    stop = threading.Event()

    def take_over_loading() -> None:  # the run that loaded the store stopped: load it here
        nonlocal loader
        while not stop.wait(10):
            if loader is None and isinstance(history, RemoteHistory) and owner_address(settings) is None:
                try:
                    loader = LoaderProcess(settings)
                    history.close()  # its next question goes to the new owner
                    say("the process that loaded the store stopped: this one loads it now")
                except StoreLockedError:
                    pass

    threading.Thread(target=take_over_loading, name="loader-watch", daemon=True).start()
    say(f"stockmax serve: http://{host}:{port}/ (API under /api/v1, docs at /docs); reading the committed "
        f"outputs of job {settings.job_name!r}")
    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            # uvicorn raises the signal again once it has shut down, which would end this process before
            # the cleanup below (the loader finishing its batch and letting go of the store).
            self._captured_signals.clear()

    try:
        Server(uvicorn.Config(create_app(service), host=host, port=port, log_level="warning", access_log=False,
                              ws_max_size=65536, http=live_max_http(service))).run()
    finally:
        stop.set()
        service.reader.close()
        history.close()
        if loader is not None:
            loader.stop()

"""The PyFlink adapter around SymbolProcessor, driven directly: timers registered, state dropped when idle."""

from __future__ import annotations

import json

from stockmax.jobs.pipeline import ALERTS, LATE, SymbolFunction
from stockmax.operators.symbol import Rules
from stockmax.operators.tick import Tick

START_MS = 1_767_623_400_000


class FakeState:
    def __init__(self):
        self._value = None

    def value(self):
        return self._value

    def update(self, value):
        self._value = value

    def clear(self):
        self._value = None


class FakeCounter:
    def __init__(self):
        self.count = 0

    def inc(self, n=1):
        self.count += n


class FakeRuntime:
    def __init__(self):
        self.state = FakeState()
        self.counters = {}

    def get_state(self, descriptor):
        return self.state

    def get_metrics_group(self):
        return self

    def counter(self, name):
        return self.counters.setdefault(name, FakeCounter())


class FakeContext:
    def __init__(self, watermark_ms):
        self.watermark = watermark_ms
        self.timers = set()

    def timer_service(self):
        return self

    def current_watermark(self):
        return self.watermark

    def register_event_time_timer(self, ms):
        self.timers.add(ms)

    def get_current_key(self):
        return "S"


def fire_timers(function, ctx, up_to_ms):
    """Advance the watermark, firing due timers in time order (and any they register), as Flink does."""
    outputs = []
    ctx.watermark = up_to_ms
    while due := sorted(t for t in ctx.timers if t <= up_to_ms):
        ctx.timers.discard(due[0])
        outputs += list(function.on_timer(due[0], ctx))
    return outputs


def test_ticks_wait_for_the_watermark_and_idle_state_is_dropped():
    rules = Rules(windows_us=(1_000_000, 60_000_000), levels=(100.0,))
    runtime = FakeRuntime()
    function = SymbolFunction(rules)
    function.open(runtime)
    ctx = FakeContext(watermark_ms=START_MS - 10_000)
    for i, price in enumerate([99.5, 100.5]):
        assert list(function.process_element(Tick("S", price, 1.0, "X", i, (START_MS + i) * 1000), ctx)) == []
    assert runtime.state.value() is not None and START_MS in ctx.timers

    outputs = fire_timers(function, ctx, START_MS + 1)  # the watermark passes both ticks
    alerts = [json.loads(row[1]) for tag, row in (o for o in outputs if isinstance(o, tuple)) if tag == ALERTS]
    assert [a["kind"] for a in alerts] == ["threshold_down", "threshold_up"]
    assert any(not isinstance(o, tuple) for o in outputs)  # max updates on the main output

    # A late tick is reported, counted, and changes nothing.
    late = list(function.process_element(Tick("S", 50.0, 1.0, "X", 9, (START_MS - 5) * 1000), ctx))
    assert late[0][0] == LATE and runtime.counters["lateTicks"].count == 1

    # Quiet past the longest window + bound, but the hour's rollup bucket is still open: the state stays.
    idle_end_ms = START_MS + 1 + rules.idle_gap_us // 1000 + 1
    fire_timers(function, ctx, idle_end_ms)
    assert runtime.state.value() is not None
    # Once that bucket closes too, the state goes, by timers the adapter registered itself.
    hour_end_ms = (START_MS // 3_600_000 + 1) * 3_600_000
    outputs = fire_timers(function, ctx, hour_end_ms + 2 * rules.idle_gap_us // 1000)
    assert any(tag != ALERTS and json.loads(row[1]).get("resolution_s") == 3600
               for tag, row in (o for o in outputs if isinstance(o, tuple)))
    assert runtime.state.value() is None
    assert runtime.counters["expiredSymbolStates"].count == 1

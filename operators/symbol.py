"""Everything stockmax keeps for one symbol, driven by ticks and the event-time frontier.

The frontier is what the watermark guarantees: every tick with event_time < frontier has arrived.
(A Flink watermark W in ms gives frontier = (W + 1) * 1000 µs.)

Semantics, in the order they apply to an arriving tick:
1. A tick repeating a remembered (exchange, seq) of its symbol is a duplicate: not applied.
2. A tick with event_time < frontier is late: not applied.
3. Otherwise it is buffered, and applied once the frontier passes it, in (event_time, seq, arrival) order.
Applying a tick: if it comes more than `idle_gap` after the previous applied tick, the symbol starts
fresh (windows, moving average and rules reset; that is also when the job may drop its state). Then, per
configured window, the max and min over (t - W, t] are computed and an update is emitted when either
value changed; the spike and threshold rules are evaluated; the tick joins its rollup bucket at every
resolution.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

from . import snapshot
from .dedup import DuplicateFilter
from .durations import format_duration
from .extrema import MultiWindowExtrema
from .reorder import ReleasedTicks, ReorderBuffer
from .rollups import ROLLUP_FIELDS, RollupBuilder
from .rules import MovingAverage, SpikeRule, ThresholdRule
from .tick import Tick


@dataclass(frozen=True)
class Rules:
    """What a symbol's processor computes; the same for every symbol except where overridden."""

    windows_us: tuple[int, ...] = (1_000_000, 60_000_000, 300_000_000, 3_600_000_000)
    spike_threshold_pct: float = 2.0
    spike_window_us: int = 1_000_000
    levels: tuple[float, ...] = ()
    moving_average_ticks: int = 20
    rollup_resolutions_s: tuple[int, ...] = (1, 60, 3600)
    dedup_horizon_us: int = 60_000_000
    watermark_bound_us: int = 2_000_000
    overrides: dict = field(default_factory=dict)  # symbol -> {spike_threshold_pct, spike_window_us, levels}

    def for_symbol(self, symbol: str) -> "Rules":
        """This symbol's rules. Without the overrides map: a symbol's state, pickled on every tick, carries
        only its own rules."""
        if not self.overrides:
            return self
        extra = dict(self.overrides.get(symbol, {}))
        if "levels" in extra:
            extra["levels"] = tuple(extra["levels"])
        return replace(self, overrides={}, **extra)

    @functools.cached_property  # asked for every tick
    def longest_window_us(self) -> int:
        """What the extrema must keep: the longest max/min window or the spike window."""
        return max(self.windows_us + (self.spike_window_us,))

    @functools.cached_property
    def idle_gap_us(self) -> int:
        """After this long without a tick, nothing in the state can affect the next one."""
        return self.longest_window_us + self.watermark_bound_us


class Outputs(NamedTuple):
    alerts: list[dict]
    max_updates: list[dict]
    rollups: list[dict]


# A max update's fields, in order (the max-updates topic's value is the JSON object of these;
# schemas/max_update.schema.json).
MAX_UPDATE_FIELDS = ("symbol", "window", "window_ms", "event_time", "seq", "max", "max_time", "min", "min_time",
                     "moving_average", "moving_average_ticks")


def max_update(symbol: str, window_us: int, event_time: int, seq: int, high: float, high_time: int, low: float,
               low_time: int, moving_average: float, moving_average_ticks: int) -> dict:
    """The max update of one window at one tick (the max-updates topic's value)."""
    return dict(zip(MAX_UPDATE_FIELDS, (symbol, format_duration(window_us), window_us // 1000, event_time, seq, high,
                                        high_time, low, low_time, moving_average, moving_average_ticks)))


class SymbolProcessor(snapshot.Snapshotted):
    __slots__ = ("rules", "pending", "duplicates", "rollups", "extrema", "spike", "thresholds", "average",
                 "last_values", "last_applied")

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.pending = ReorderBuffer()
        self.duplicates = DuplicateFilter(rules.dedup_horizon_us)
        self.rollups = [RollupBuilder(resolution) for resolution in rules.rollup_resolutions_s]
        self.last_applied: int | None = None
        self._start_fresh()

    def _start_fresh(self) -> None:
        rules = self.rules
        self.extrema = MultiWindowExtrema(rules.longest_window_us)
        self.spike = SpikeRule(rules.spike_threshold_pct, rules.spike_window_us)
        self.thresholds = ThresholdRule(rules.levels)
        self.average = MovingAverage(rules.moving_average_ticks)
        self.last_values: dict[int, tuple[float, float]] = {}

    def accept(self, tick: Tick | tuple, frontier_us: int) -> str | None:
        """Buffer a tick (a Tick, or a plain tuple of its fields: the job skips making a Tick per tick).
        Returns None when accepted, else why not: 'duplicate' or 'late'."""
        _, _, _, exchange, seq, event_time = tick
        if self.duplicates.seen(exchange, seq):
            return "duplicate"
        if event_time < frontier_us:
            return "late"
        self.duplicates.claim(exchange, seq)
        self.pending.push(tick)
        return None

    def release(self, frontier_us: int) -> ReleasedTicks:
        """The buffered ticks below the frontier, as columns in apply order; the duplicate filter
        remembers them until its horizon has passed them."""
        columns = self.pending.release_columns_before(frontier_us)
        self.duplicates.remember_released(columns.exchanges, columns.seqs, columns.event_times)
        return columns

    def advance(self, frontier_us: int) -> Outputs:
        """Apply every buffered tick below the frontier, in order. (operators.columnar does the same for many
        symbols at once.)"""
        return self.apply_released(self.release(frontier_us).ticks(), frontier_us)

    def apply_released(self, ticks: list[Tick], frontier_us: int) -> Outputs:
        """The rest of advance, for the ticks it released."""
        alerts, updates = [], []
        for tick in ticks:
            self._apply(tick, alerts, updates)
        return Outputs(alerts, updates, self.finish(frontier_us))

    def finish(self, frontier_us: int) -> list[dict]:
        """After the ticks below the frontier are applied: forget what the frontier has passed, and hand
        out the rollup rows it closes."""
        return [dict(zip(ROLLUP_FIELDS, row)) for row in self.finish_rows(frontier_us)]

    def finish_rows(self, frontier_us: int) -> list[tuple]:
        """The same, rows as tuples (ROLLUP_FIELDS)."""
        self.duplicates.forget_before(frontier_us)
        return [row for builder in self.rollups for row in builder.close_rows_before(frontier_us)]

    def _apply(self, tick: Tick, alerts: list, updates: list) -> None:
        t, price = tick.event_time, tick.price
        rules = self.rules
        if self.last_applied is not None and t - self.last_applied > rules.idle_gap_us:
            self._start_fresh()
        self.last_applied = t
        extrema = self.extrema
        extrema.push(t, price)
        average = self.average.push(price)
        last_values = self.last_values
        for window in rules.windows_us:
            high, high_time, low, low_time = extrema.window(window)
            if last_values.get(window) != (high, low):
                last_values[window] = (high, low)
                updates.append(max_update(tick.symbol, window, t, tick.seq, high, high_time, low, low_time, average,
                                          rules.moving_average_ticks))
        high, high_time, low, low_time = extrema.window(rules.spike_window_us)
        alerts.extend(self.spike.evaluate(tick, low, low_time, high, high_time))
        alerts.extend(self.thresholds.evaluate(tick))
        for builder in self.rollups:
            builder.add(tick)

    def expired(self, frontier_us: int) -> bool:
        """True when nothing kept can change any output: the state may be dropped."""
        return (not self.pending and all(b.is_empty() for b in self.rollups) and len(self.duplicates) == 0
                and self.last_applied is not None and frontier_us > self.last_applied + self.rules.idle_gap_us)

    def next_due(self) -> int | None:
        """The lowest frontier (µs) at which `advance` has something to do: release the earliest buffered
        tick, close the earliest open rollup bucket, or (with neither) let the state expire. None: the
        processor holds nothing. After advance(f), the answer is above f, so a caller that advances at each
        due point never spins."""
        earliest = self.pending.earliest()
        due = None if earliest is None else earliest + 1
        for builder in self.rollups:
            end = builder.open_end()
            if end is not None and (due is None or end < due):
                due = end
        if due is not None:
            return due
        if self.last_applied is not None:
            return self.last_applied + self.rules.idle_gap_us + 1
        return None

    def due_after_accepting(self, due_before: int | None) -> int | None:
        """The due point after accept() calls, from the one before them (next_due's answer then, or this
        one's), without walking the rollups again: accepting only buffers ticks, so only the earliest
        buffered tick can make the processor due sooner. Never later than next_due; earlier only when a
        tick comes to a processor that was waiting just to expire: advancing at that expiry point then does
        nothing, and next_due is asked again."""
        if due_before is None:
            return self.next_due()
        earliest = self.pending.earliest()
        return due_before if earliest is None or earliest >= due_before else earliest + 1

    def snapshot(self, external: bool = False) -> tuple:
        """Everything this symbol keeps, as plain data (operators/snapshot.py; pickled with its VERSION).
        external: the duplicate filter's sealed chunks named, not included (operators/stored.py)."""
        rules = self.rules
        return (tuple(getattr(rules, name) for name in RULES_FIELDS), self.pending.snapshot(),
                self.duplicates.snapshot(external), [builder.snapshot() for builder in self.rollups],
                self.extrema.snapshot(), self.spike.snapshot(), self.thresholds.snapshot(),
                self.average.snapshot(), self.last_values, self.last_applied)

    @classmethod
    def restore(cls, data: tuple) -> "SymbolProcessor":
        """A processor from its snapshot data, of the current VERSION (snapshot.migrate makes older ones so)."""
        (rules, pending, duplicates, rollups, extrema, spike, thresholds, average, last_values,
         last_applied) = data
        processor = cls.__new__(cls)
        processor.rules = Rules(*rules)
        processor.pending = ReorderBuffer.restore(pending)
        processor.duplicates = DuplicateFilter.restore(duplicates)
        processor.rollups = [RollupBuilder.restore(builder) for builder in rollups]
        processor.extrema = MultiWindowExtrema.restore(extrema)
        processor.spike = SpikeRule.restore(spike)
        processor.thresholds = ThresholdRule.restore(thresholds)
        processor.average = MovingAverage.restore(average)
        processor.last_values, processor.last_applied = last_values, last_applied
        # The buffered ticks' keys: claimed, not yet in the duplicate filter's own state.
        processor.duplicates.claim_all(processor.pending.keys())
        return processor

    def __reduce__(self):
        return restore_processor, (snapshot.VERSION, self.snapshot())

    def state_size(self) -> dict:
        """What the state holds (for measurements)."""
        return {"pending": len(self.pending), "extrema_candidates": self.extrema.candidates(),
                "dedup_keys": len(self.duplicates), "moving_average_ticks": self.rules.moving_average_ticks}


def restore_processor(version: int, data: tuple) -> SymbolProcessor:
    """What a pickled processor calls when it is loaded: its snapshot, migrated to the current version."""
    return SymbolProcessor.restore(snapshot.migrate(version, data))


RULES_FIELDS = tuple(f.name for f in fields(Rules))


def frontier_from_watermark_ms(watermark_ms: int) -> int:
    return (watermark_ms + 1) * 1000


def watermark_ms_for_frontier(frontier_us: int) -> int:
    """The lowest watermark (ms) whose frontier reaches frontier_us: where to set an event-time timer."""
    return -(-frontier_us // 1000) - 1

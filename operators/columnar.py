"""SymbolProcessor.advance for many symbols at once, on numpy columns of every tick they release.

Tick by tick, applying a tick costs ~15 µs of Python (a push per side, a binary search per window and
side, the rules, three rollups). In the job a watermark step releases thousands of ticks across the due
symbols; here they are applied together, column-wise, and each processor is left with the state that its
own `advance` would have left (tested against it), so the two paths mix freely.

Over the released ticks of all symbols, in (symbol, apply order):
- segments: a symbol starts fresh after an idle gap (SymbolProcessor._apply); only a symbol's first
  segment continues its processor's state (extrema candidates, last prices, rule arming, last values).
- window extremes: per side, each segment's held candidates followed by its ticks in one array, and a
  sparse table of the index of the extreme (the latest among equals) over every power-of-two range;
  each tick's window (t - W, t] is a range found by binary search on a (segment, time) key, and its
  extreme is the better of two overlapping table entries.
- changes: each tick's (max, min) against the previous tick's in its segment (or the last values held).
- rules, edge-triggered: a condition fires where it holds and did not hold at the previous tick.
- rollups: per run of ticks in one (symbol, bucket), aggregates by reduceat, added as a run.
Output records are the per-tick path's, as column blocks (max updates), rows (rollups) and lines (alerts):
StepOutputs.
"""

from __future__ import annotations

import itertools
import math
import operator
from array import array
from bisect import bisect_left, bisect_right
from typing import NamedTuple, Sequence

import numpy as np

from .durations import format_duration
from .reorder import ReleasedTicks
from .rollups import ROLLUP_FIELDS, row
from .symbol import MAX_UPDATE_FIELDS, Outputs, SymbolProcessor
from .tick import Tick
from .wire import ColumnBlock, output_line

# Below this many released ticks in a call, the per-tick path is cheaper than numpy's fixed costs.
MIN_COLUMNAR_TICKS = 64
# Up to this many held candidates a side, a step takes them all (picking costs more than it saves).
_ALL_HELD_UP_TO = 8


class StepOutputs(NamedTuple):
    """Output records per kind: max updates as column blocks (ColumnBlock, one per window and step), rollups as
    rows (tuples in ROLLUP_FIELDS order), alerts as lines (output_line). Blocks and rows leave Python as JSON
    arrays, many in one orjson call, and become JSON objects in the JVM (jobs/pipeline.py, SplitOutputs):
    building a dict and serialising its keys was most of a record's cost here (~1.2 µs of ~1.4)."""
    max_updates: list[ColumnBlock]
    alerts: list[bytes]
    rollups: list[tuple]


_MAX_UPDATE_ROW = operator.itemgetter(*MAX_UPDATE_FIELDS)
_ROLLUP_ROW = operator.itemgetter(*ROLLUP_FIELDS)


def _collect(symbol: str, out: Outputs, step: StepOutputs) -> None:
    """The per-tick path's outputs (dicts) into a step's."""
    if out.max_updates:
        step.max_updates.append(ColumnBlock.from_rows(list(map(_MAX_UPDATE_ROW, out.max_updates))))
    key = symbol.encode()
    step.alerts.extend(output_line(key, a) for a in out.alerts)
    step.rollups.extend(map(_ROLLUP_ROW, out.rollups))


def advance_symbols(items: Sequence[tuple[str, SymbolProcessor]], frontier_us: int,
                    min_columnar_ticks: int = MIN_COLUMNAR_TICKS) -> StepOutputs:
    """What `processor.advance(frontier_us)` gives for each (symbol, processor), as StepOutputs. Per key, the
    records come in the order the per-tick path gives them."""
    step = StepOutputs([], [], [])
    by_rules: dict[tuple, list[tuple[str, SymbolProcessor]]] = {}
    for item in items:
        by_rules.setdefault(_rules_key(item[1]), []).append(item)
    for group in by_rules.values():
        released = [processor.release(frontier_us) for _, processor in group]
        total = sum(len(columns.event_times) for columns in released)
        if total == 0 or total < min_columnar_ticks:
            for (symbol, processor), columns in zip(group, released):
                _collect(symbol, processor.apply_released(columns.ticks(), frontier_us), step)
        else:
            _ColumnarStep(group, released).apply(step)
            for _, processor in group:
                step.rollups.extend(processor.finish_rows(frontier_us))
    return step


def _rules_key(processor: SymbolProcessor) -> tuple:
    """Processors whose rules agree on this go through one columnar step (a symbol with overrides has its
    own Rules object, and every processor restored from a checkpoint its own copy)."""
    r = processor.rules
    return (r.windows_us, r.spike_threshold_pct, r.spike_window_us, r.levels, r.moving_average_ticks,
            r.rollup_resolutions_s, r.watermark_bound_us)


def _ranks(lengths: np.ndarray) -> np.ndarray:
    """0 .. n-1 for each n in lengths, concatenated."""
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _floor_log2(n: np.ndarray) -> np.ndarray:
    return np.frexp(n.astype(np.float64))[1] - 1  # exact for the sizes here (< 2**53)


class _RangeExtreme:
    """Index of the max (or min) of values[l..r], the latest index among equals, for many (l, r) at once:
    a sparse table (level k holds the answer for every range of length 2**k)."""

    def __init__(self, values: np.ndarray, is_max: bool, longest_range: int) -> None:
        self.values, self.is_max = values, is_max
        n = len(values)
        levels = int(_floor_log2(np.array([max(1, longest_range)]))[0]) + 1
        table = np.empty((levels, n), dtype=np.int64)
        table[0] = np.arange(n)
        for k in range(1, levels):
            half, size = 1 << (k - 1), n - (1 << k) + 1
            table[k, :size] = self._pick(table[k - 1, :size], table[k - 1, half:half + size])
        self.table = table

    def _pick(self, earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
        """Per pair, the index of the better value; the later one when equal (ranges overlap or abut)."""
        values = self.values
        later_wins = values[later] >= values[earlier] if self.is_max else values[later] <= values[earlier]
        return np.where(later_wins, later, earlier)

    def query(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        k = _floor_log2(right - left + 1)
        return self._pick(self.table[k, left], self.table[k, right - (1 << k) + 1])


class _HeldThenReleased:
    """Per segment, the values held from before (if it continues its processor's state), then its released
    ticks' values: one array for every segment, each segment's part contiguous."""

    def __init__(self, held_len: np.ndarray, seg_len: np.ndarray) -> None:
        total = held_len + seg_len
        self.held_len = held_len
        self.start = np.cumsum(total) - total  # where each segment's part begins
        self.end = self.start + total  # and ends (exclusive)
        self.longest = int(total.max())
        self.segment = np.repeat(np.arange(len(total)), total)  # the segment of each position
        self.tick_pos = np.repeat(self.start + held_len, seg_len) + _ranks(seg_len)  # each released tick's position
        self.held_pos = np.repeat(self.start, held_len) + _ranks(held_len)

    def array(self, released: np.ndarray, held: list, dtype) -> np.ndarray:
        out = np.empty(int(self.end[-1]), dtype)
        out[self.tick_pos] = released
        if len(self.held_pos):
            out[self.held_pos] = held
        return out


class _Side:
    """One side (max or min) of every segment's extrema: held candidates then released ticks, in one array."""

    def __init__(self, is_max: bool, layout: _HeldThenReleased, held_times: list, held_prices: list,
                 t: np.ndarray, p: np.ndarray, longest_us: int) -> None:
        self.layout = layout
        self.times = layout.array(t, held_times, np.int64)
        self.prices = layout.array(p, held_prices, np.float64)
        # A sorted key: a window's left end is a binary search. Each segment's times, shifted to follow the
        # previous segment's with a gap of the longest window, so that t - W never reaches into them. (A
        # key of segment * widest span overflowed int64 for long backfills over many symbols.)
        first, last = self.times[layout.start], self.times[layout.end - 1]
        gap = last - first + longest_us + 1
        shift = np.cumsum(gap) - gap - first
        self.key = self.times + shift[layout.segment]
        self.tick_key = self.key[layout.tick_pos]
        self.extreme = _RangeExtreme(self.prices, is_max, layout.longest)

    def window(self, window_us: int) -> tuple[np.ndarray, np.ndarray]:
        """(price, time) of the extreme over (t - W, t] at each released tick."""
        left = np.searchsorted(self.key, self.tick_key - window_us, side="right")
        best = self.extreme.query(left, self.layout.tick_pos)
        return self.prices[best], self.times[best]

    def kept(self, last_time: np.ndarray, longest_us: int, wanted: np.ndarray
             ) -> tuple[array, array, np.ndarray, np.ndarray]:
        """What each wanted segment holds after its last tick: candidates that no later value at least as
        extreme outlives, newer than the longest window before the segment's last tick. (times, prices,
        where each segment's part starts in them, how many of each part are held values: they come first)."""
        segment = self.layout.segment
        n = len(self.prices)
        last = (self.layout.end - 1)[segment]
        later_best = self.prices[self.extreme.query(np.minimum(np.arange(n) + 1, last), last)]
        beats_later = self.prices > later_best if self.extreme.is_max else self.prices < later_best
        keep = ((np.arange(n) == last) | beats_later) & (self.times > last_time[segment] - longest_us) & wanted[segment]
        pos = np.flatnonzero(keep)
        segments = len(self.layout.start)
        per_segment = np.bincount(segment[pos], minlength=segments)
        held = pos < (self.layout.start + self.layout.held_len)[segment[pos]]
        held_kept = np.bincount(segment[pos[held]], minlength=segments)
        return (array("q", self.times[pos].tobytes()), array("d", self.prices[pos].tobytes()),
                np.append(0, np.cumsum(per_segment)), held_kept)


def _queried(side: tuple[array, array, int, bool], first_t: int, last_t: int, windows: tuple[int, ...]
             ) -> tuple[list, list]:
    """Of a side's held candidates (times, prices, head, is_max), those a window (t - W, t] of a tick in
    [first_t, last_t] can start at: per W, from the first with time > first_t - W to the first with time >
    last_t - W. Prices are strictly monotonic from the head, so the extreme of the held ones inside a window
    is the first of them inside it: the others cannot be a window's answer, and a step costs what its ticks
    and windows need, not what the longest window holds (hundreds of candidates an hour into a feed)."""
    times, prices, head, _ = side
    n = len(times)
    if n - head <= _ALL_HELD_UP_TO:
        return times[head:], prices[head:]
    picked: list[tuple[int, int]] = []
    for window in windows:
        lo = bisect_right(times, first_t - window, head)
        hi = min(bisect_right(times, last_t - window, lo), n - 1) + 1
        if lo < n:
            picked.append((lo, hi))
    picked.sort()
    out_t: list = []
    out_p: list = []
    end = head
    for lo, hi in picked:
        lo = max(lo, end)
        if lo < hi:
            out_t += times[lo:hi]
            out_p += prices[lo:hi]
            end = hi
    return out_t, out_p


def _outliving(side: tuple[array, array, int, bool], cutoff: int, best_new: float, kept_t: array, kept_p: array,
               new_from: int, new_to: int) -> tuple[array, array]:
    """A carried side after its segment: the held candidates newer than the cutoff that beat every tick of
    the segment (strictly: a later equal value outlives them), then its kept ticks (kept_*[new_from:new_to])."""
    times, prices, head, is_max = side
    start = bisect_right(times, cutoff, head)
    # Prices run strictly down (max side) or up (min side) from the head: those that beat best_new are a prefix.
    end = bisect_left(prices, -best_new, start, key=operator.neg) if is_max else bisect_left(prices, best_new, start)
    end = max(start, end)
    return times[start:end] + kept_t[new_from:new_to], prices[start:end] + kept_p[new_from:new_to]


class _Segments(NamedTuple):
    """Runs of a symbol's released ticks between idle gaps (SymbolProcessor._apply starts fresh after one)."""
    first: np.ndarray  # each segment's first tick
    last: np.ndarray  # and its last
    symbol: np.ndarray  # its processor
    carried: np.ndarray  # bool: it continues its processor's state (it is the symbol's first, with no gap)
    symbols_last: np.ndarray  # bool: it is its symbol's last

    def previous(self, values: np.ndarray, held: list, fresh) -> np.ndarray:
        """Each tick's value at the previous tick of its segment; at a segment's first, the held value
        (carried segments, in order) or `fresh`."""
        out = np.empty(len(values), values.dtype)
        out[1:] = values[:-1]
        first = np.full(len(self.first), fresh, values.dtype)
        first[self.carried] = held
        out[self.first] = first
        return out


class _ColumnarStep:
    """One call's released ticks of processors that share their rules, applied column-wise."""

    def __init__(self, group: list[tuple[str, SymbolProcessor]], released: list[ReleasedTicks]) -> None:
        self.symbols = [symbol for symbol, _ in group]
        self.processors = [processor for _, processor in group]
        self.rules = self.processors[0].rules
        self.released = released
        counts = np.fromiter((len(columns.event_times) for columns in released), np.int64, len(released))
        self.symbol_start = np.cumsum(counts) - counts
        self.t, self.p, self.v, self.seq = (
            np.frombuffer(b"".join(getattr(columns, field) for columns in released), dtype)
            for field, dtype in (("event_times", np.int64), ("prices", np.float64), ("volumes", np.float64),
                                 ("seqs", np.int64)))
        self.row_symbol = np.repeat(np.arange(len(group)), counts)
        self.first_of_symbol = np.zeros(len(self.t), bool)
        self.first_of_symbol[self.symbol_start[counts > 0]] = True

    def tick(self, i: int) -> Tick:
        """The i-th released tick (alerts are made from ticks)."""
        s = int(np.searchsorted(self.symbol_start, i, side="right")) - 1
        return Tick._make(column[i - int(self.symbol_start[s])] for column in self.released[s])

    def apply(self, step: StepOutputs) -> None:
        rules, t, p = self.rules, self.t, self.p
        segments = self._segments()
        carried = [self.processors[s] for s in segments.symbol[segments.carried].tolist()]

        # Window extremes, both sides: of each carried processor's candidates, only those a window of this
        # step can start at (see _queried).
        first_t = t[segments.first[segments.carried]].tolist()
        last_t = t[segments.last[segments.carried]].tolist()
        query_windows = tuple(dict.fromkeys(rules.windows_us + (rules.spike_window_us,)))
        sides = []
        for is_max in (True, False):
            held = [_queried(q.extrema.side(is_max), a, b, query_windows) for q, a, b in zip(carried, first_t, last_t)]
            held_len = np.zeros(len(segments.first), np.int64)
            held_len[segments.carried] = [len(times) for times, _ in held]
            layout = _HeldThenReleased(held_len, segments.last - segments.first + 1)
            sides.append(_Side(is_max, layout, list(itertools.chain.from_iterable(times for times, _ in held)),
                               list(itertools.chain.from_iterable(prices for _, prices in held)), t, p,
                               rules.longest_window_us))
        extremes = {w: (*sides[0].window(w), *sides[1].window(w)) for w in query_windows}
        average, recent = self._moving_average(segments, carried)
        self._max_updates(segments, carried, extremes, average, step)
        conditions = self._alerts(segments, carried, extremes, step)
        self._leave_state(segments, sides, extremes, recent, conditions)
        self._add_rollups()

    def _segments(self) -> _Segments:
        t, row_symbol, first_of_symbol = self.t, self.row_symbol, self.first_of_symbol
        previous_applied = [q.last_applied for q in self.processors]
        prev_t = np.empty(len(t), np.int64)
        prev_t[1:] = t[:-1]
        prev_t[first_of_symbol] = [previous_applied[s] or 0 for s in row_symbol[first_of_symbol].tolist()]
        starts_fresh = t - prev_t > self.rules.idle_gap_us
        never_applied = np.array([a is None for a in previous_applied], bool)
        starts_fresh[first_of_symbol & never_applied[row_symbol]] = False
        first = np.flatnonzero(first_of_symbol | starts_fresh)
        symbol = row_symbol[first]
        return _Segments(first, np.append(first[1:], len(t)) - 1, symbol, ~starts_fresh[first],
                         np.append(symbol[1:] != symbol[:-1], True))

    def _moving_average(self, segments: _Segments, carried: list[SymbolProcessor]) -> tuple[np.ndarray, list]:
        """The mean of the last n applied prices of its segment (held ones included) at each tick; and
        each symbol's last n prices after the step (for its last segment)."""
        n_average = self.rules.moving_average_ticks
        held = [q.average.recent() for q in carried]
        held_len = np.zeros(len(segments.first), np.int64)
        held_len[segments.carried] = [len(h) for h in held]
        layout = _HeldThenReleased(held_len, segments.last - segments.first + 1)
        prices = layout.array(self.p, list(itertools.chain.from_iterable(held)), np.float64)
        count = np.minimum(n_average, layout.tick_pos - layout.start[layout.segment[layout.tick_pos]] + 1)
        # The correctly rounded sum of each tick's last n prices (math.fsum, as MovingAverage.push): a plain
        # sum would depend on the order of its terms and differ from it in the last bits.
        price_list = prices.tolist()
        total = np.array([math.fsum(price_list[b - c + 1:b + 1])
                          for b, c in zip(layout.tick_pos.tolist(), count.tolist())], np.float64)
        ends = layout.end[segments.symbols_last].tolist()
        starts = np.maximum(layout.start[segments.symbols_last], layout.end[segments.symbols_last] - n_average)
        recent = [price_list[a:b] for a, b in zip(starts.tolist(), ends)]
        return total / count, recent

    def _max_updates(self, segments: _Segments, carried: list[SymbolProcessor], extremes: dict,
                     average: np.ndarray, step: StepOutputs) -> None:
        """Where a window's (max, min) changed; per key (symbol, window) in tick order."""
        rules, symbols, row_symbol, t, seq = self.rules, self.symbols, self.row_symbol, self.t, self.seq
        for w in rules.windows_us:
            high, high_time, low, low_time = extremes[w]
            last = [q.last_values.get(w, (np.nan, np.nan)) for q in carried]
            changed = ((high != segments.previous(high, [values[0] for values in last], np.nan))
                       | (low != segments.previous(low, [values[1] for values in last], np.nan)))
            rows = np.flatnonzero(changed)
            if len(rows):
                step.max_updates.append(ColumnBlock(
                    [list(map(symbols.__getitem__, row_symbol[rows].tolist())), format_duration(w), w // 1000,
                     t[rows], seq[rows], high[rows], high_time[rows], low[rows], low_time[rows], average[rows],
                     rules.moving_average_ticks], len(rows)))

    def _alerts(self, segments: _Segments, carried: list[SymbolProcessor], extremes: dict,
                step: StepOutputs) -> list[np.ndarray]:
        """The spike rule, then each level's up and down (the order the per-tick path fires them in), each
        firing where its condition holds and did not at the previous tick. Returns the conditions."""
        rules, p, tick = self.rules, self.p, self.tick
        high, high_time, low, low_time = extremes[rules.spike_window_us]
        fraction = rules.spike_threshold_pct / 100.0
        spike, thresholds = self.processors[0].spike, self.processors[0].thresholds  # the group's rules
        conditions = [(p > low * (1 + fraction), [not q.spike.up_armed for q in carried],
                       lambda i: spike.alert(tick(i), "spike_up", float(low[i]), int(low_time[i]))),
                      (p < high * (1 - fraction), [not q.spike.down_armed for q in carried],
                       lambda i: spike.alert(tick(i), "spike_down", float(high[i]), int(high_time[i])))]
        for level_index, level in enumerate(thresholds.levels):
            for kind, holds, armed in (("threshold_up", p > level, "up_armed"), ("threshold_down", p < level, "down_armed")):
                conditions.append((holds, [not getattr(q.thresholds, armed)[level_index] for q in carried],
                                   lambda i, kind=kind, level=level: thresholds.alert(tick(i), kind, level)))
        alerts: list[tuple[int, int, dict]] = []
        for rank, (holds, held_before, make) in enumerate(conditions):
            fires = holds & ~segments.previous(holds, held_before, False)
            alerts.extend((i, rank, make(i)) for i in np.flatnonzero(fires).tolist())
        alerts.sort(key=lambda a: a[:2])
        step.alerts.extend(output_line(a["symbol"].encode(), a) for _, _, a in alerts)
        return [holds for holds, _, _ in conditions]

    def _leave_state(self, segments: _Segments, sides: list[_Side], extremes: dict, recent: list,
                     conditions: list[np.ndarray]) -> None:
        """Each symbol left as its per-tick path would leave it: the state after its last segment."""
        rules = self.rules
        last_time = self.t[segments.last]
        (max_t, max_p, max_at, max_held), (min_t, min_p, min_at, min_held) = (
            side.kept(last_time, rules.longest_window_us, segments.symbols_last) for side in sides)
        # A carried segment's candidates: those it held that outlive its ticks (all it held, not only the
        # ones the step looked at), then what `kept` keeps of its ticks.
        segment_max = np.maximum.reduceat(self.p, segments.first).tolist()
        segment_min = np.minimum.reduceat(self.p, segments.first).tolist()
        cutoff = (last_time - rules.longest_window_us).tolist()
        is_carried = segments.carried.tolist()
        lasts = np.flatnonzero(segments.symbols_last)
        last_ticks = segments.last[lasts]
        window_values = {w: (extremes[w][0][last_ticks].tolist(), extremes[w][2][last_ticks].tolist())
                         for w in rules.windows_us}
        held = [holds[last_ticks].tolist() for holds in conditions]
        for j, g in enumerate(lasts.tolist()):
            q = self.processors[segments.symbol[g]]  # every part of its state is set below, fresh or carried
            if is_carried[g]:
                q.extrema.set_candidates(
                    int(last_time[g]),
                    *_outliving(q.extrema.side(True), cutoff[g], segment_max[g], max_t, max_p, max_at[g] + max_held[g], max_at[g + 1]),
                    *_outliving(q.extrema.side(False), cutoff[g], segment_min[g], min_t, min_p, min_at[g] + min_held[g], min_at[g + 1]))
            else:
                q.extrema.set_candidates(int(last_time[g]), max_t[max_at[g]:max_at[g + 1]], max_p[max_at[g]:max_at[g + 1]],
                                         min_t[min_at[g]:min_at[g + 1]], min_p[min_at[g]:min_at[g + 1]])
            q.average.set_recent(recent[j])
            q.spike.up_armed, q.spike.down_armed = not held[0][j], not held[1][j]
            for level_index in range(len(q.thresholds.levels)):
                q.thresholds.up_armed[level_index] = not held[2 + 2 * level_index][j]
                q.thresholds.down_armed[level_index] = not held[3 + 2 * level_index][j]
            q.last_values = {w: (highs[j], lows[j]) for w, (highs, lows) in window_values.items()}
            q.last_applied = int(last_time[g])

    def _add_rollups(self) -> None:
        """Per resolution, each run of a symbol's ticks in one bucket, aggregated by reduceat. A symbol's
        first run may continue its builder's open bucket and its last may stay open: they go through
        add_run. The runs between are whole buckets, closed before this step's frontier (a later tick of
        the symbol, below it, starts a later bucket): their rows are made here, column-wise."""
        t, p, v, row_symbol = self.t, self.p, self.v, self.row_symbol
        n = len(t)
        index = np.arange(n)
        # Sums of volume and price * volume per run, exact whatever the runs (operators.sums): what the ticks
        # one by one would give, bit for bit.
        volumes, price_volumes = v.tolist(), (p * v).tolist()
        processors, symbols = self.processors, self.symbols
        for r_index, resolution_s in enumerate(self.rules.rollup_resolutions_s):
            size = resolution_s * 1_000_000
            bucket = t - t % size
            run_start = self.first_of_symbol.copy()
            run_start[1:] |= bucket[1:] != bucket[:-1]
            starts = np.flatnonzero(run_start)
            run = np.cumsum(run_start) - 1
            high = np.maximum.reduceat(p, starts)
            low = np.minimum.reduceat(p, starts)
            high_first = np.minimum.reduceat(np.where(p == high[run], index, n), starts)
            low_first = np.minimum.reduceat(np.where(p == low[run], index, n), starts)
            ends = np.append(starts[1:], n) - 1
            run_symbol = row_symbol[starts]
            columns = (bucket[starts], p[starts], high, t[high_first], low, t[low_first], p[ends], ends - starts + 1)
            symbols_first = self.first_of_symbol[starts]
            symbols_last = np.append(run_symbol[1:] != run_symbol[:-1], True)
            edge = np.flatnonzero(symbols_first | symbols_last)
            middle = np.flatnonzero(~(symbols_first | symbols_last))
            middle_symbol = run_symbol[middle]
            rows = [row(symbols[s], resolution_s, *aggregate, volumes[a:b + 1], price_volumes[a:b + 1])
                    for s, *aggregate, a, b in zip(middle_symbol.tolist(), *(column[middle].tolist() for column in columns),
                                                   starts[middle].tolist(), ends[middle].tolist())]
            # Each symbol's middle rows: rows[row_at[s]:row_at[s + 1]].
            row_at = np.searchsorted(middle_symbol, np.arange(len(symbols) + 1)).tolist()
            for s, first, *aggregate, a, b in zip(run_symbol[edge].tolist(), symbols_first[edge].tolist(),
                                                  *(column[edge].tolist() for column in columns),
                                                  starts[edge].tolist(), ends[edge].tolist()):
                builder = processors[s].rollups[r_index]
                if not first and row_at[s] < row_at[s + 1]:
                    builder.add_closed(rows[row_at[s]:row_at[s + 1]])
                builder.add_run(symbols[s], *aggregate, volumes[a:b + 1], price_volumes[a:b + 1])

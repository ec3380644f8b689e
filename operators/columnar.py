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
Output records are the same dicts as the per-tick path's, made into text lines (output_line).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple, Sequence

import numpy as np
import orjson

from .durations import format_duration
from .reorder import ReleasedTicks
from .symbol import Outputs, SymbolProcessor, max_update
from .tick import Tick

# Below this many released ticks in a call, the per-tick path is cheaper than numpy's fixed costs.
MIN_COLUMNAR_TICKS = 64


class OutputLines(NamedTuple):
    """Output records as text lines (output_line), per kind."""
    max_updates: list[str]
    alerts: list[str]
    rollups: list[str]


def output_line(key: str, value: dict) -> str:
    """One output record as one line: its key, a tab, its value as JSON. Neither part can hold a tab or a
    line break: keys are symbols (the schema's pattern) and window names, and JSON escapes both."""
    # orjson: the same compact JSON as json.dumps, ~10x faster; every number here is finite (the parser
    # refuses non-finite prices and volumes).
    return key + "\t" + orjson.dumps(value).decode()


def _lines(symbol: str, out: Outputs, lines: OutputLines) -> None:
    lines.max_updates.extend(output_line(f"{symbol}|{u['window']}", u) for u in out.max_updates)
    lines.alerts.extend(output_line(symbol, a) for a in out.alerts)
    lines.rollups.extend(output_line(symbol, r) for r in out.rollups)


def advance_symbols(items: Sequence[tuple[str, SymbolProcessor]], frontier_us: int,
                    min_columnar_ticks: int = MIN_COLUMNAR_TICKS) -> OutputLines:
    """What `processor.advance(frontier_us)` gives for each (symbol, processor), as lines. Per key, the lines
    come in the order the per-tick path gives them."""
    lines = OutputLines([], [], [])
    by_rules: dict[tuple, list[tuple[str, SymbolProcessor]]] = {}
    for item in items:
        by_rules.setdefault(_rules_key(item[1]), []).append(item)
    for group in by_rules.values():
        released = [processor.pending.release_columns_before(frontier_us) for _, processor in group]
        total = sum(len(columns.event_times) for columns in released)
        if total == 0 or total < min_columnar_ticks:
            for (symbol, processor), columns in zip(group, released):
                _lines(symbol, processor.apply_released(columns.ticks(), frontier_us), lines)
        else:
            _ColumnarStep(group, released).apply(lines)
            for symbol, processor in group:
                lines.rollups.extend(output_line(symbol, row) for row in processor.finish(frontier_us))
    return lines


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


class _Side:
    """One side (max or min) of every segment's extrema: held candidates then released ticks, in one array."""

    def __init__(self, is_max: bool, held_times: list, held_prices: list, held_len: np.ndarray,
                 seg_len: np.ndarray, t: np.ndarray, p: np.ndarray, longest_us: int) -> None:
        total = held_len + seg_len
        start = np.cumsum(total) - total
        self.tick_pos = np.repeat(start + held_len, seg_len) + _ranks(seg_len)  # where each released tick is
        held_pos = np.repeat(start, held_len) + _ranks(held_len)
        n = int(total.sum())
        self.times = np.empty(n, np.int64)
        self.prices = np.empty(n, np.float64)
        self.times[self.tick_pos], self.prices[self.tick_pos] = t, p
        if len(held_pos):
            self.times[held_pos] = np.array(held_times, np.int64)
            self.prices[held_pos] = np.array(held_prices, np.float64)
        self.segment = np.repeat(np.arange(len(total)), total)
        self.seg_end = start + total - 1
        # Sorted key (segment, time): a window's left end is a binary search. Offset by the longest window
        # so that t - W never reaches into the previous segment's keys.
        base = int(self.times.min()) - longest_us
        span = int(self.times.max()) - base + 1
        if len(total) * span >= 2**62:
            raise OverflowError("columnar step too wide for int64 keys")
        self.key = self.segment * span + (self.times - base)
        self.tick_key = self.key[self.tick_pos]
        self.extreme = _RangeExtreme(self.prices, is_max, int(total.max()))

    def window(self, window_us: int) -> tuple[np.ndarray, np.ndarray]:
        """(price, time) of the extreme over (t - W, t] at each released tick."""
        left = np.searchsorted(self.key, self.tick_key - window_us, side="right")
        best = self.extreme.query(left, self.tick_pos)
        return self.prices[best], self.times[best]

    def kept(self, last_time: np.ndarray, longest_us: int, wanted: np.ndarray) -> np.ndarray:
        """Positions of what each wanted segment holds after its last tick: candidates that no later value
        at least as extreme outlives, newer than the longest window before the segment's last tick."""
        n = len(self.prices)
        end = self.seg_end[self.segment]
        after = np.minimum(np.arange(n) + 1, end)
        later_best = self.prices[self.extreme.query(after, end)]
        beats_later = self.prices > later_best if self.extreme.is_max else self.prices < later_best
        is_end = np.arange(n) == end
        keep = (is_end | beats_later) & (self.times > last_time[self.segment] - longest_us) & wanted[self.segment]
        return np.flatnonzero(keep)


class _ColumnarStep:
    """One call's released ticks of processors that share their rules, applied column-wise."""

    def __init__(self, group: list[tuple[str, SymbolProcessor]], released: list[ReleasedTicks]) -> None:
        self.symbols = [symbol for symbol, _ in group]
        self.processors = [processor for _, processor in group]
        self.rules = self.processors[0].rules
        self.released = released
        self.counts = np.fromiter((len(columns.event_times) for columns in released), np.int64, len(released))
        self.symbol_start = np.cumsum(self.counts) - self.counts

    def tick(self, i: int) -> Tick:
        """The i-th released tick (alerts are made from ticks)."""
        s = int(np.searchsorted(self.symbol_start, i, side="right")) - 1
        j = i - int(self.symbol_start[s])
        return Tick._make(column[j] for column in self.released[s])

    def apply(self, lines: OutputLines) -> None:
        rules, processors, counts, released = self.rules, self.processors, self.counts, self.released
        t, p, v, seq = (np.frombuffer(b"".join(getattr(columns, field) for columns in released), dtype)
                        for field, dtype in (("event_times", np.int64), ("prices", np.float64),
                                             ("volumes", np.float64), ("seqs", np.int64)))
        n = len(t)
        row_symbol = np.repeat(np.arange(len(processors)), counts)
        first_of_symbol = np.zeros(n, bool)
        first_of_symbol[self.symbol_start[counts > 0]] = True

        # Segments: a tick more than the idle gap after the previous applied one starts fresh.
        previous_applied = [q.last_applied for q in processors]
        prev_t = np.empty(n, np.int64)
        prev_t[1:] = t[:-1]
        prev_t[first_of_symbol] = [previous_applied[s] or 0 for s in row_symbol[first_of_symbol].tolist()]
        starts_fresh = t - prev_t > rules.idle_gap_us
        never_applied = np.array([a is None for a in previous_applied], bool)
        starts_fresh[first_of_symbol & never_applied[row_symbol]] = False
        seg_first = np.flatnonzero(first_of_symbol | starts_fresh)
        segment = np.cumsum(first_of_symbol | starts_fresh) - 1
        seg_len = np.diff(np.append(seg_first, n))
        seg_symbol = row_symbol[seg_first]
        carried = np.flatnonzero(~starts_fresh[seg_first])  # segments that continue their processor's state
        carried_processors = [processors[s] for s in seg_symbol[carried].tolist()]
        seg_last = seg_first + seg_len - 1
        is_symbols_last = np.append(seg_symbol[1:] != seg_symbol[:-1], True)

        # Window extremes, both sides.
        held = [q.extrema.candidate_lists() for q in carried_processors]
        sides = []
        for times_at, prices_at in ((0, 1), (2, 3)):
            held_len = np.zeros(len(seg_first), np.int64)
            held_len[carried] = [len(h[times_at]) for h in held]
            sides.append(_Side(times_at == 0, list(itertools.chain.from_iterable(h[times_at] for h in held)),
                               list(itertools.chain.from_iterable(h[prices_at] for h in held)),
                               held_len, seg_len, t, p, rules.longest_window_us))
        high_side, low_side = sides
        extremes = {w: (*high_side.window(w), *low_side.window(w))
                    for w in dict.fromkeys(rules.windows_us + (rules.spike_window_us,))}

        def previous(values: np.ndarray, held_values: list, fresh) -> np.ndarray:
            """Each tick's value at the previous tick of its segment; at a segment's first: held or fresh."""
            out = np.empty(n, values.dtype)
            out[1:] = values[:-1]
            first = np.full(len(seg_first), fresh, values.dtype)
            first[carried] = held_values
            out[seg_first] = first
            return out

        # Moving average over the last n applied prices of the segment (held ones included).
        average = self._moving_average(p, seg_first, seg_len, carried, carried_processors)

        # Max updates where a window's (max, min) changed; per key (symbol, window) in tick order.
        symbols, n_average = self.symbols, rules.moving_average_ticks
        for w in rules.windows_us:
            high, high_time, low, low_time = extremes[w]
            last = [q.last_values.get(w, (np.nan, np.nan)) for q in carried_processors]
            changed = ((high != previous(high, [values[0] for values in last], np.nan))
                       | (low != previous(low, [values[1] for values in last], np.nan)))
            rows = np.flatnonzero(changed)
            keys = [f"{symbol}|{format_duration(w)}" for symbol in symbols]
            lines.max_updates.extend([
                output_line(keys[s], max_update(symbols[s], w, et, sq, hi, hi_t, lo, lo_t, avg, n_average))
                for s, et, sq, hi, hi_t, lo, lo_t, avg in zip(
                    row_symbol[rows].tolist(), t[rows].tolist(), seq[rows].tolist(), high[rows].tolist(),
                    high_time[rows].tolist(), low[rows].tolist(), low_time[rows].tolist(), average[rows].tolist())])

        # Rules: the spike rule, then each level (the order the per-tick path fires them in).
        alerts: list[tuple[int, int, dict]] = []
        high, high_time, low, low_time = extremes[rules.spike_window_us]
        fraction = rules.spike_threshold_pct / 100.0
        spike = processors[0].spike  # the same rule for the whole group
        conditions = [(p > low * (1 + fraction), [not q.spike.up_armed for q in carried_processors],
                       lambda i: spike.alert(self.tick(i), "spike_up", float(low[i]), int(low_time[i]))),
                      (p < high * (1 - fraction), [not q.spike.down_armed for q in carried_processors],
                       lambda i: spike.alert(self.tick(i), "spike_down", float(high[i]), int(high_time[i])))]
        levels = processors[0].thresholds.levels
        for level_index, level in enumerate(levels):
            for kind, holds, armed in (("threshold_up", p > level, "up_armed"), ("threshold_down", p < level, "down_armed")):
                conditions.append((holds, [not getattr(q.thresholds, armed)[level_index] for q in carried_processors],
                                   lambda i, kind=kind, level=level: processors[0].thresholds.alert(self.tick(i), kind, level)))
        held_conditions = []
        for rank, (holds, held_before, make) in enumerate(conditions):
            fires = holds & ~previous(holds, held_before, False)
            alerts.extend((i, rank, make(i)) for i in np.flatnonzero(fires).tolist())
            held_conditions.append(holds)
        alerts.sort(key=lambda a: a[:2])
        lines.alerts.extend(output_line(a["symbol"], a) for _, _, a in alerts)

        # What each symbol holds after its last segment.
        self._leave_state(t, p, seg_first, seg_last, seg_symbol, carried, is_symbols_last, high_side, low_side,
                          extremes, average, held_conditions, len(levels))
        self._add_rollups(t, p, v, row_symbol, first_of_symbol)

    def _moving_average(self, p, seg_first, seg_len, carried, carried_processors) -> np.ndarray:
        n_avg = self.rules.moving_average_ticks
        held = [q.average.recent() for q in carried_processors]
        held_len = np.zeros(len(seg_first), np.int64)
        held_len[carried] = [len(h) for h in held]
        total = held_len + seg_len
        start = np.cumsum(total) - total
        tick_pos = np.repeat(start + held_len, seg_len) + _ranks(seg_len)
        prices = np.empty(int(total.sum()), np.float64)
        prices[tick_pos] = p
        prices[np.repeat(start, held_len) + _ranks(held_len)] = list(itertools.chain.from_iterable(held))
        count = np.minimum(n_avg, tick_pos - np.repeat(start, seg_len) + 1)
        acc = np.zeros(len(p))
        for back in range(n_avg):
            acc += np.where(back < count, prices[np.maximum(tick_pos - back, 0)], 0.0)
        self._average_prices, self._average_start = prices, start
        return acc / count

    def _leave_state(self, t, p, seg_first, seg_last, seg_symbol, carried, is_symbols_last, high_side, low_side,
                     extremes, average, held_conditions, level_count) -> None:
        rules, processors = self.rules, self.processors
        is_carried = np.zeros(len(seg_first), bool)
        is_carried[carried] = True
        last_time = t[seg_last]
        kept = []
        for side in (high_side, low_side):
            pos = side.kept(last_time, rules.longest_window_us, is_symbols_last)
            per_segment = np.bincount(side.segment[pos], minlength=len(seg_first))
            kept.append((side.times[pos].tolist(), side.prices[pos].tolist(), np.cumsum(per_segment) - per_segment,
                         per_segment))
        lasts = np.flatnonzero(is_symbols_last)
        last_ticks = seg_last[lasts]
        window_values = {w: (extremes[w][0][last_ticks].tolist(), extremes[w][2][last_ticks].tolist())
                         for w in rules.windows_us}
        condition_values = [holds[last_ticks].tolist() for holds in held_conditions]
        n_avg = rules.moving_average_ticks
        average_prices = self._average_prices
        for j, g in enumerate(lasts.tolist()):
            q = processors[seg_symbol[g]]
            if not is_carried[g]:
                q._start_fresh()
            (max_t, max_p, max_at, max_n), (min_t, min_p, min_at, min_n) = kept
            a, b = max_at[g], max_at[g] + max_n[g]
            c, d = min_at[g], min_at[g] + min_n[g]
            q.extrema.set_candidates(int(last_time[g]), max_t[a:b], max_p[a:b], min_t[c:d], min_p[c:d])
            start = int(self._average_start[g])
            end = int(self._average_start[g + 1]) if g + 1 < len(seg_first) else len(average_prices)
            q.average.set_recent(average_prices[max(start, end - n_avg):end].tolist())
            q.spike.up_armed = not condition_values[0][j]
            q.spike.down_armed = not condition_values[1][j]
            for level_index in range(level_count):
                q.thresholds.up_armed[level_index] = not condition_values[2 + 2 * level_index][j]
                q.thresholds.down_armed[level_index] = not condition_values[3 + 2 * level_index][j]
            q.last_values = {w: (highs[j], lows[j]) for w, (highs, lows) in window_values.items()}
            q.last_applied = int(last_time[g])

    def _add_rollups(self, t, p, v, row_symbol, first_of_symbol) -> None:
        """Per resolution, each run of a symbol's ticks in one bucket added to its builder as one aggregate."""
        n = len(t)
        index = np.arange(n)
        price_volume = p * v
        processors, symbols = self.processors, self.symbols
        for r_index, resolution_s in enumerate(self.rules.rollup_resolutions_s):
            size = resolution_s * 1_000_000
            bucket = t - t % size
            run_start = first_of_symbol.copy()
            run_start[1:] |= bucket[1:] != bucket[:-1]
            starts = np.flatnonzero(run_start)
            run = np.cumsum(run_start) - 1
            high = np.maximum.reduceat(p, starts)
            low = np.minimum.reduceat(p, starts)
            high_first = np.minimum.reduceat(np.where(p == high[run], index, n), starts)
            low_first = np.minimum.reduceat(np.where(p == low[run], index, n), starts)
            ends = np.append(starts[1:], n) - 1
            columns = zip(row_symbol[starts].tolist(), bucket[starts].tolist(), p[starts].tolist(), high.tolist(),
                          t[high_first].tolist(), low.tolist(), t[low_first].tolist(), p[ends].tolist(),
                          (ends - starts + 1).tolist(), np.add.reduceat(v, starts).tolist(),
                          np.add.reduceat(price_volume, starts).tolist())
            for s, *aggregate in columns:
                processors[s].rollups[r_index].add_run(symbols[s], *aggregate)

"""The PyFlink adapter around SymbolProcessor, driven directly: one timer per key, outputs in arrays, state
dropped when idle."""

from __future__ import annotations

import json
import copy
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import orjson
import pytest
from pyflink.common import Row, Types

from stockmax.jobs.keys import MAX_PARALLELISM, partition_keys
from stockmax.jobs.pipeline import DEAD, STORE_MARK, SymbolFunction
from stockmax.operators.wire import OUTPUT_KINDS, decode_outputs, split_outputs_shapes
from stockmax.operators.records import RecordGroup, decode_batch, encode_group
from stockmax.operators.symbol import Rules
from stockmax.operators.tick import Tick, TickLimits

START_MS = 1_767_623_400_000


class FakeState:
    """Values pickled as Flink's state backend holds them: what is stored does not change with the object."""

    def __init__(self):
        self._value = None

    def value(self):
        return None if self._value is None else pickle.loads(self._value)

    def update(self, value):
        self._value = pickle.dumps(value)

    def clear(self):
        self._value = None


class FakeMapState:
    """Values of a PICKLED_BYTE_ARRAY type are pickled here, as PyFlink does; bytes (PRIMITIVE_ARRAY(BYTE))
    are kept as given, and must be bytes."""

    def __init__(self, value_type=Types.PICKLED_BYTE_ARRAY()):
        self.entries = {}
        self.raw = value_type == Types.PRIMITIVE_ARRAY(Types.BYTE())

    def get(self, key):
        return self._decode(self.entries[key]) if key in self.entries else None

    def put(self, key, value):
        if self.raw:
            assert type(value) is bytes, f"a bytes state got {type(value).__name__}"
        self.entries[key] = value if self.raw else pickle.dumps(value)

    def remove(self, key):
        self.entries.pop(key, None)

    def items(self):
        return [(key, self._decode(value)) for key, value in self.entries.items()]

    def _decode(self, value):
        return value if self.raw else pickle.loads(value)


class FakeCounter:
    def __init__(self):
        self.count = 0

    def inc(self, n=1):
        self.count += n


class FakeRuntime:
    """One key's state (the tests' groups all come from one partition, key 0)."""

    def __init__(self):
        self.states = {}
        self.maps = {}
        self.counters = {}

    @property
    def map(self):
        return self.maps["symbols"]

    @property
    def state(self):
        return self.states["schedule"]

    def get_state(self, descriptor):
        return self.states.setdefault(descriptor.name, FakeState())

    def get_map_state(self, descriptor):
        return self.maps.setdefault(descriptor.name, FakeMapState(descriptor.type_info._value_type_info))

    def get_metrics_group(self):
        return self

    def counter(self, name):
        return self.counters.setdefault(name, FakeCounter())

    def add_group(self, name, value):
        return self

    def gauge(self, name, read):
        self.counters[name] = read


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
        return 0  # the partition the tests' batches come from


def group_of(ticks: list[Tick], partition: int = 0, first_offset: int = 0, extra: tuple[bytes, ...] = ()) -> Row:
    """Ticks as the keyed step gets them from the JVM (GroupRecords): a partition's records, one JSON tick
    each, stamped with its event time; extra: records after them (stamped like the last tick)."""
    values = [orjson.dumps(t._asdict()) for t in ticks] + list(extra)
    stamps = [t.event_time // 1000 for t in ticks]
    stamps += [stamps[-1] if stamps else START_MS] * len(extra)
    return Row(partition, encode_group(RecordGroup(list(range(first_offset, first_offset + len(values))), stamps,
                                                   values)))


def store(function, ctx) -> None:
    """The store mark GroupRecords sends each key before a checkpoint barrier (with several subtasks: no
    watermark in it)."""
    assert list(function.process_element(Row(STORE_MARK, encode_group(RecordGroup([], [], []))), ctx)) == []


def store_at(function, ctx, sent_ms: int) -> list:
    """The store mark of a single GroupRecords subtask: it carries the watermark sent before it (8 bytes,
    big-endian); its outputs."""
    return list(function.process_element(Row(STORE_MARK, sent_ms.to_bytes(8, "big", signed=True)), ctx))


def symbol_function(rules: Rules, rewrite_rounds: int = 1) -> SymbolFunction:
    return SymbolFunction(rules, "ticks", TickLimits(), rewrite_rounds=rewrite_rounds)


def fire_timers(function, ctx, up_to_ms):
    """Advance the watermark, firing due timers in time order (and any they register), as Flink does."""
    outputs = []
    ctx.watermark = up_to_ms
    while due := sorted(t for t in ctx.timers if t <= up_to_ms):
        ctx.timers.discard(due[0])
        outputs += list(function.on_timer(due[0], ctx))
    return outputs


def records(outputs, kind):
    """The JSON values of one output kind, from the adapter's rows of texts."""
    return [json.loads(value) for key, value in decode_outputs(outputs, kind)]


def batched_ticks(outputs) -> list[Tick]:
    """The ticks of the tick_batches records (Arrow batches), from the adapter's rows of texts."""
    return [Tick(*row.values()) for _, value in decode_outputs(outputs, "tick_batches")
            for row in decode_batch(value).to_pylist()]


def test_ticks_wait_for_the_watermark_and_idle_state_is_dropped():
    rules = Rules(windows_us=(1_000_000, 60_000_000), levels=(100.0,))
    runtime = FakeRuntime()
    function = symbol_function(rules)
    function.open(runtime)
    ctx = FakeContext(watermark_ms=START_MS - 10_000)
    ticks = [Tick("S", price, 1.0, "X", i, (START_MS + i) * 1000) for i, price in enumerate([99.5, 100.5])]
    ticks.append(Tick("T", 10.0, 1.0, "X", 0, (START_MS + 5) * 1000))
    # A record that is no tick goes to the dead letters, with where it was read, and the ticks go on.
    dead, *rest = list(function.process_element(group_of(ticks, partition=3, first_offset=40, extra=(b"{oops",)), ctx))
    assert dead[0] is DEAD and dead[1][0] == "3:43"
    # Every tick read, for the store's raw ticks, keyed by its partition; nothing else until the watermark.
    assert batched_ticks(rest) == ticks and {key for key, _ in decode_outputs(rest, "tick_batches")} == {"3"}
    assert {kind for kind in OUTPUT_KINDS if decode_outputs(rest, kind)} == {"tick_batches"}
    assert {k: json.loads(dead[1][1])[k] for k in ("reason", "source_partition", "source_offset", "raw_text")} == \
        {"reason": "not_json", "source_partition": 3, "source_offset": 43, "raw_text": "{oops"}
    assert runtime.counters["recordsIn"].count == 4 and runtime.counters["deadLetters"].count == 1
    assert runtime.counters["ticksIn"].count == 3 and runtime.counters["watermarkLagMs"]() > 0
    assert runtime.map.entries == {}  # kept in memory until the checkpoint's store mark
    store(function, ctx)
    assert set(runtime.map.entries) == {"S", "T"}
    assert ctx.timers == {START_MS}  # one timer for the key, at the earliest tick, not one per tick

    outputs = fire_timers(function, ctx, START_MS + 1)  # the watermark passes S's ticks, not T's
    assert [a["kind"] for a in records(outputs, "alerts")] == ["threshold_down", "threshold_up"]
    assert {u["symbol"] for u in records(outputs, "max_updates")} == {"S"}
    assert {key for key, _ in decode_outputs(outputs, "max_updates")} == {"S|1s", "S|1m"}
    assert START_MS + 5 in ctx.timers  # re-armed at T's tick

    # A late tick is reported, counted, and changes nothing.
    late = list(function.process_element(group_of([Tick("S", 50.0, 1.0, "X", 9, (START_MS - 5) * 1000)]), ctx))
    assert [t["seq"] for t in records(late, "late")] == [9] and runtime.counters["lateTicks"].count == 1
    assert [t.seq for t in batched_ticks(late)] == [9]  # stored raw too, as read (the loader marks it not applied)
    # A symbol seen only in late ticks leaves nothing behind.
    list(function.process_element(group_of([Tick("U", 5.0, 1.0, "X", 1, (START_MS - 5) * 1000)]), ctx))
    store(function, ctx)
    assert "U" not in runtime.map.entries

    # Quiet past the longest window + bound, but the hour's rollup bucket is still open: the state stays.
    idle_end_ms = START_MS + 5 + rules.idle_gap_us // 1000 + 1
    fire_timers(function, ctx, idle_end_ms)
    store(function, ctx)
    assert set(runtime.map.entries) == {"S", "T"}
    # Once that bucket closes too, the state goes, by timers the adapter registered itself.
    hour_end_ms = (START_MS // 3_600_000 + 1) * 3_600_000
    outputs = fire_timers(function, ctx, hour_end_ms + 2 * rules.idle_gap_us // 1000)
    assert {(r["symbol"], r["resolution_s"]) for r in records(outputs, "rollups")} >= {("S", 3600), ("T", 3600)}
    # The key's last element was a store mark: timers then write at once (a held watermark released
    # between the marks and the barrier).
    assert runtime.map.entries == {} and runtime.maps["dedup-chunks"].entries == {} and runtime.state.value() is None and ctx.timers == set()
    assert runtime.counters["expiredSymbolStates"].count == 2


def test_a_restored_function_sets_its_key_timer_again():
    """PyFlink 2.0 can checkpoint the state a bundle wrote without the timers it set (they reach the JVM
    through the task's mailbox, after the pre-checkpoint flush). After a restore the function must not
    assume its key has a timer: its first call sets one at the earliest due point again."""
    rules = Rules(windows_us=(1_000_000,), levels=())
    runtime = FakeRuntime()
    before = symbol_function(rules)
    before.open(runtime)
    ctx = FakeContext(watermark_ms=START_MS - 10_000)
    list(before.process_element(group_of([Tick("S", 10.0, 1.0, "X", 0, START_MS * 1000)]), ctx))
    assert ctx.timers == {START_MS}
    store(before, ctx)  # the checkpoint

    restored = symbol_function(rules)  # the same state, a new attempt, and the timer lost
    restored.open(runtime)
    ctx = FakeContext(watermark_ms=START_MS - 10_000)
    # The wake-up GroupRecords sends every key first thing in an attempt (test_group_records_...): no records.
    assert list(restored.process_element(group_of([]), ctx)) == []
    assert ctx.timers == {START_MS}
    outputs = fire_timers(restored, ctx, START_MS + 100)
    assert [u["max"] for u in records(outputs, "max_updates")] == [10.0]


@pytest.mark.parametrize("rewrite_rounds", [1, 3], ids=["whole-state", "journal"])
@pytest.mark.parametrize("marks_carry_watermark", [False, True], ids=["plain-marks", "marks-with-watermark"])
def test_a_restore_from_any_store_mark_gives_what_one_uninterrupted_run_gives(marks_carry_watermark, rewrite_rounds):
    """Symbols live in memory between checkpoints and reach Flink state at store marks. A failure after any
    mark (and a watermark PyFlink releases after it, before the barrier), then a restore from the state the
    checkpoint holds and a replay of the input after it (what Flink does),
    must give every output exactly as a run without the failure: nothing stored later than the mark, nothing
    lost of what came before it, and no tick judged against a watermark lower than the state has seen (the
    restored attempt's watermark starts over, as Flink's does). The input seals and forgets duplicate-filter
    chunks, lets a symbol expire and come back (its new chunks reuse the old ids), repeats ticks and has late
    ones. Marks that carry the watermark sent before them (one GroupRecords subtask) advance the due symbols to
    it at the mark: the same outputs, and the watermark PyFlink releases after the mark writes nothing again.
    Oracle: the uninterrupted run."""
    rules = Rules(windows_us=(1_000_000,), rollup_resolutions_s=(1,), dedup_horizon_us=500_000,
                  watermark_bound_us=100_000, levels=())
    steps = []
    for burst, start_ms in enumerate((START_MS, START_MS + 400, START_MS + 20_000)):  # the last after S expired
        ticks = [Tick(symbol, 100.0 + (i * 7 % 13), 1.0, "X", burst * 1000 + i, (start_ms + i) * 1000)
                 for i in range(150) for symbol in ("S", "T") if symbol == "S" or i % 3 == 0]
        for part in range(0, len(ticks), 70):
            late = [tick._replace(seq=tick.seq + 500, event_time=tick.event_time - 300_000)
                    for tick in ticks[part + 60:part + 62]]  # behind the watermark when they come
            steps.append(("ticks", ticks[part:part + 70] + ticks[part:part + 2] + late))  # two repeats each
            steps.append(("watermark", (ticks[min(part + 69, len(ticks) - 1)].event_time // 1000) - 40))
            steps.append(("store", None))  # an earlier checkpoint's mark
    steps.append(("watermark", START_MS + 40_000))

    def run(function, ctx, steps):
        outputs = []
        for kind, arg in steps:
            if kind == "ticks":
                outputs += list(function.process_element(group_of(arg), ctx))
            elif kind == "wake-up":  # what GroupRecords sends every key first thing in an attempt
                outputs += list(function.process_element(group_of([]), ctx))
            elif kind == "mark":  # a store mark carrying the watermark sent before it
                outputs += store_at(function, ctx, arg)
            elif kind == "store" and marks_carry_watermark:  # an earlier checkpoint's mark, of this run's kind
                outputs += store_at(function, ctx, ctx.watermark)
            elif kind == "store":
                store(function, ctx)
            else:
                outputs += fire_timers(function, ctx, arg)
        return [(kind, value) for kind in OUTPUT_KINDS for _, value in decode_outputs(outputs, kind)]

    def per_symbol(record):
        kind, value = record
        return OUTPUT_KINDS.index(kind), "" if kind == "tick_batches" else json.loads(value)["symbol"]

    def start(runtime, watermark_ms):
        function = symbol_function(rules, rewrite_rounds)
        function.open(runtime)
        return function, FakeContext(watermark_ms)

    whole_runtime = FakeRuntime()
    steps.insert(0, ("wake-up", None))
    function, ctx = start(whole_runtime, START_MS - 10_000)
    whole = run(function, ctx, steps)
    store(function, ctx)
    assert whole_runtime.maps["symbols"].entries == {} and whole_runtime.state.value() is None  # all expired
    assert any(kind == "duplicates" for kind, _ in whole) and any(kind == "late" for kind, _ in whole)
    assert len(whole) > 300
    assert whole_runtime.counters["expiredSymbolStates"].count == 2
    chunks_stored = set()
    journal_entries = 0  # the most a checkpoint held
    # (steps before the mark, steps between the mark and the snapshot): PyFlink holds a watermark that comes
    # while a bundle is open, and the checkpoint's bundle end releases it after the marks.
    cuts = [(cut, 0) for cut in range(2, len(steps), 3)]
    cuts += [(cut, 1) for cut in range(2, len(steps), 2) if steps[cut][0] == "watermark"]
    for mark_at, held in cuts:
        cut = mark_at + held
        runtime = FakeRuntime()
        function, ctx = start(runtime, START_MS - 10_000)
        before = run(function, ctx, steps[:mark_at])
        if marks_carry_watermark:  # the watermark sent last: the held one if any, else the one reached
            before += run(function, ctx, [("mark", steps[mark_at][1] if held else ctx.watermark)])
        else:
            store(function, ctx)
        written = runtime.counters["symbolStatesWritten"].count
        before += run(function, ctx, steps[mark_at:cut])
        if marks_carry_watermark:
            assert runtime.counters["symbolStatesWritten"].count == written, f"written again after step {mark_at}"
        checkpoint = copy.deepcopy(runtime)
        chunks_stored |= set(runtime.maps["dedup-chunks"].entries)
        journal_entries = max(journal_entries, len(runtime.maps["journal"].entries))
        run(function, ctx, steps[cut:cut + 3])  # lost with the failure
        # Flink's watermark starts over in a restored attempt (from the sources' first watermarks after the
        # restore), lower than the one the checkpointed state was built under.
        restored, ctx = start(checkpoint, START_MS - 10_000)
        after = run(restored, ctx, [("wake-up", None)] + steps[cut:])
        # Each symbol's records of each kind in order (Kafka keeps the order per key, not across symbols).
        assert sorted(before + after, key=per_symbol) == sorted(whole, key=per_symbol), f"restored after step {cut} (mark at {mark_at})"
        store(restored, ctx)
        assert {name: m.entries for name, m in checkpoint.maps.items()} == \
            {name: m.entries for name, m in whole_runtime.maps.items()}, f"state left after step {cut}"
    assert {"S|0", "S|1", "T|0"} <= chunks_stored
    assert (journal_entries > 0) == (rewrite_rounds > 1)  # with rounds, restores replayed a journal


def test_a_journal_of_many_symbols_restores_from_every_store_exactly():
    """With rewrite rounds, a store writes a share of the changed symbols whole and the key's journal holds
    what the others accepted and were advanced at; a restore replays it. Twelve symbols of different rates,
    a pause that lets some expire while others go on, and a store after every step: a failure right after
    any store, then a restore and the input after it, gives every output exactly as the run without the
    failure, and leaves the same state. Oracle: the uninterrupted run with every symbol written whole at
    every store (rewrite rounds 1)."""
    rules = Rules(windows_us=(1_000_000, 5_000_000), rollup_resolutions_s=(1,), dedup_horizon_us=2_000_000,
                  watermark_bound_us=100_000, levels=(105.0,), spike_threshold_pct=3.0)
    symbols = [f"S{n}" for n in range(12)]
    steps = []
    for burst, (start_ms, active) in enumerate(((START_MS, symbols), (START_MS + 9_000, symbols[:4]),
                                                (START_MS + 30_000, symbols))):
        for part in range(6):
            base = start_ms + part * 300
            ticks = [Tick(symbol, 100.0 + ((i * 7 + n * 3 + part) % 11) * 0.5, 1.0 + n, "X",
                          burst * 10_000 + part * 100 + i, (base + i * (n + 1)) * 1000)
                     for n, symbol in enumerate(symbols) if symbol in active for i in range(1 + n % 4)]
            steps.append(("ticks", ticks + ticks[:1]))  # one repeat
            steps.append(("watermark", base + 250))
            steps.append(("store", None))
        steps.append(("watermark", start_ms + 8_000))
        steps.append(("store", None))
    steps.append(("watermark", START_MS + 60_000))
    steps.append(("store", None))

    def run(function, ctx, steps):
        outputs = []
        for kind, arg in steps:
            if kind == "ticks":
                outputs += list(function.process_element(group_of(arg), ctx))
            elif kind == "store":
                store(function, ctx)
            else:
                outputs += fire_timers(function, ctx, arg)
        return sorted((kind, value) for kind in OUTPUT_KINDS for _, value in decode_outputs(outputs, kind))

    def start(runtime, rounds):
        function = symbol_function(rules, rounds)
        function.open(runtime)
        ctx = FakeContext(START_MS - 10_000)
        return function, ctx, run(function, ctx, [("ticks", [])])  # the wake-up

    oracle_runtime = FakeRuntime()
    function, ctx, _ = start(oracle_runtime, 1)
    whole = run(function, ctx, steps)
    assert oracle_runtime.counters["expiredSymbolStates"].count > len(symbols)  # all, some of them twice
    assert oracle_runtime.maps["journal"].entries == {}
    stores = [i for i, (kind, _) in enumerate(steps) if kind == "store"]
    journal_held = []
    for cut in stores:
        runtime = FakeRuntime()
        function, ctx, _ = start(runtime, 4)
        before = run(function, ctx, steps[:cut + 1])
        journal_held.append(len(runtime.maps["journal"].entries))
        checkpoint = copy.deepcopy(runtime)
        run(function, ctx, steps[cut + 1:cut + 4])  # lost with the failure
        restored, ctx, _ = start(checkpoint, 4)
        after = run(restored, ctx, steps[cut + 1:])
        assert sorted(before + after) == whole, f"restored after step {cut}"
        assert {name: m.entries for name, m in checkpoint.maps.items()} == \
            {name: m.entries for name, m in oracle_runtime.maps.items()}, f"state left after step {cut}"
    assert max(journal_held) >= 3 and journal_held[-1] == 0


def test_group_records_wakes_every_key_then_groups_each_partition_under_its_key():
    """GroupRecords (the job's JVM step before Python), run by Flink: first thing in an attempt an empty group
    to every partition's key (a restored key must set its timer again, and one whose input all came before the
    checkpoint would get no call), then each partition's records in groups of at most maxRecords under its
    partition's key (a partition beyond the keys, a topic grown under the job, shares a known key, so that
    the store marks before each checkpoint barrier reach it), every record once, in the topic's
    order. Oracle: the records listed by partition."""
    from pyflink.datastream import DataStream, StreamExecutionEnvironment
    from pyflink.java_gateway import get_gateway

    from stockmax import config
    from stockmax.config import FUNCTIONS_JAR
    from stockmax.jobs.pipeline import GROUP_RECORDS_CLASS
    from stockmax.operators.records import decode_group

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    env.add_jars(config.load(env={}).flink_jar(FUNCTIONS_JAR).resolve().as_uri())
    rows = [(f"p{partition}-{offset}".encode(), partition, offset) for offset in range(7) for partition in (0, 1, 2)
            if (partition, offset) != (1, 3)]
    source = env.from_collection(rows, type_info=Types.ROW([Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.INT(), Types.LONG()]))
    gateway = get_gateway()
    keys = gateway.new_array(gateway.jvm.int, 2)
    keys[0], keys[1] = 40, 41
    group_class = getattr(gateway.jvm, GROUP_RECORDS_CLASS)
    assert group_class.STORE_MARK == STORE_MARK  # the store mark's partition field, as the keyed step reads it
    operator = group_class(keys, 3, 1 << 20, 1000, 1000, 0, 0, 0)
    grouped = DataStream(source._j_data_stream.transform("group", group_class.outputType(), operator))
    with grouped.execute_and_collect() as results:
        # A Java byte[] arrives as signed ints.
        out = [(row[0], row[1][0], decode_group(bytes(b % 256 for b in row[1][1])).values) for row in results]
    assert out[:2] == [(40, 0, []), (41, 1, [])]
    assert all(0 < len(values) <= 3 for _, _, values in out[2:])
    key_of = {0: 40, 1: 41, 2: 40}
    for partition in (0, 1, 2):
        mine = [(key, values) for key, p, values in out[2:] if p == partition]
        assert {key for key, _ in mine} == {key_of[partition]}
        assert [v for _, values in mine for v in values] == [value for value, p, _ in rows if p == partition]


def test_outputs_leave_in_texts_of_at_most_outputs_per_row_records_in_order():
    """A watermark step can release hundreds of thousands of records; they leave in rows of texts of at most
    OUTPUTS_PER_ROW records per kind, column blocks split where a text fills up, every record once and in
    order. Oracle: the records listed one by one, against what the texts hold when read back."""
    from stockmax.operators.wire import OUTPUTS_PER_ROW, ColumnBlock, encode_outputs

    def block(first: int, n: int) -> ColumnBlock:
        return ColumnBlock([[f"S{first + i}" for i in range(n)], "1s", 1000, np.arange(first, first + n),
                            np.arange(n, dtype=np.int64), np.linspace(1.5, 9.5, n), np.arange(n) * 7,
                            np.full(n, 0.25), np.arange(n) * 3, np.full(n, 2.0), 20], n)

    sizes = [1, OUTPUTS_PER_ROW - 1, 3, OUTPUTS_PER_ROW, 2 * OUTPUTS_PER_ROW + 17, 5]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    outputs = {kind: [] for kind in OUTPUT_KINDS}
    outputs["max_updates"] = [block(first, n) for first, n in zip(starts, sizes)]
    outputs["rollups"] = [("R", 60, i, 1.0, 2.0, i, 0.5, i, 1.5, 3, 1.0, 1.25) for i in range(OUTPUTS_PER_ROW + 1)]
    outputs["alerts"] = [f"A{i}\t{{}}".encode() for i in range(3 * OUTPUTS_PER_ROW)]
    rows = list(encode_outputs(outputs))
    want_updates = [(f"S{i}|1s", i) for i in range(sum(sizes))]
    assert [(key, json.loads(value)["event_time"]) for key, value in decode_outputs(rows, "max_updates")] == want_updates
    assert [json.loads(value)["bucket_start"] for _, value in decode_outputs(rows, "rollups")] == \
        list(range(OUTPUTS_PER_ROW + 1))
    assert [key for key, _ in decode_outputs(rows, "alerts")] == [f"A{i}" for i in range(3 * OUTPUTS_PER_ROW)]
    for row in rows:
        for kind in OUTPUT_KINDS:
            assert len(decode_outputs([row], kind)) <= OUTPUTS_PER_ROW
    assert len(rows) == -(-sum(sizes) // OUTPUTS_PER_ROW)  # max updates fill every text but the last
    assert list(encode_outputs({kind: [] for kind in OUTPUT_KINDS})) == []


def test_each_partition_key_lands_on_its_own_subtask():
    """Keyed by the partition numbers, 2 partitions at parallelism 2 would both land on subtask 1 (Flink
    hashes keys to key groups). The oracle is Flink's own assignment, asked of the JVM."""
    from pyflink.java_gateway import get_gateway

    assign = get_gateway().jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    assert assign(0, MAX_PARALLELISM, 2) == assign(1, MAX_PARALLELISM, 2)  # why the keys are picked
    for partitions in (1, 2, 3, 4, 8, 12):
        keys = partition_keys(partitions)
        assert len(set(keys)) == partitions
        assert [assign(key, MAX_PARALLELISM, partitions) for key in keys] == list(range(partitions))
        if partitions % 2 == 0:  # fewer subtasks: an even share each
            on = [assign(key, MAX_PARALLELISM, 2) for key in keys]
            assert on.count(0) == on.count(1)


@pytest.mark.parametrize("gc, collectors", [(None, "PS MarkSweep,PS Scavenge"),
                                             ("g1", "G1 Old Generation,G1 Young Generation")])
def test_the_local_jvm_gets_its_heap_gc_and_log_dir_and_they_do_not_leak(tmp_path, gc, collectors):
    """local_configuration hands the JVM it starts a heap cap, its garbage collector (ParallelGC unless
    STOCKMAX_LOCAL_JVM_GC says otherwise) and a log dir in the job's data dir, then takes the variables back:
    left set, a later job started from the same process (the demo, a test) logged into the first one's data
    dir."""
    code = textwrap.dedent("""
        import os, sys
        from pathlib import Path
        from pyflink.java_gateway import get_gateway
        from stockmax import config
        from stockmax.flink_env import local_configuration
        env = {"STOCKMAX_LOCAL_JVM_GC": sys.argv[2]} if sys.argv[2] else {}
        local_configuration(config.load(env=env).with_(data_dir=Path(sys.argv[1]), local_jvm_heap_mb=600))
        jvm = get_gateway().jvm
        print(jvm.System.getProperty("log.file"), jvm.Runtime.getRuntime().maxMemory() // 2**20)
        beans = jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
        print(",".join(sorted(bean.getName() for bean in beans)))
        print("FLINK_LOG_DIR" in os.environ, "JVM_ARGS" in os.environ)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("FLINK_LOG_DIR", "JVM_ARGS")}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), gc or ""], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    jvm_line, collectors_seen, leaked = done.stdout.splitlines()[-3:]
    log_file, heap_mb = jvm_line.split()
    assert Path(log_file).parent == (tmp_path / "logs").resolve()
    assert 500 < int(heap_mb) <= 600
    assert collectors_seen == collectors
    assert leaked == "False False"


def _batch_env_with_functions_jar():
    """A batch TableEnvironment with the job's functions jar (`make setup` builds it), which also puts the jar on
    this process's JVM class path."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from stockmax import config
    from stockmax.config import FUNCTIONS_JAR

    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("pipeline.jars", config.load(env={}).flink_jar(FUNCTIONS_JAR).resolve().as_uri())
    return t_env


def _split_in_flink(rows: list[tuple[bytes, ...]], topics: str,
                    shapes: str | None = None) -> list[tuple[str, bytes, bytes]]:
    """SPLIT_OUTPUTS (the job's Java table function) over rows of texts, one text per topic in topics
    (';'-separated), each read as its shape in shapes says (default: all lines), run by Flink."""
    if shapes is None:
        shapes = ";" * topics.count(";")
    from pyflink.table import DataTypes

    from stockmax.jobs.pipeline import SPLIT_OUTPUTS_CLASS

    width = len(rows[0])
    t_env = _batch_env_with_functions_jar()
    t_env.get_config().set("parallelism.default", "1")
    t_env.create_java_temporary_function("split_outputs", SPLIT_OUTPUTS_CLASS)
    t_env.create_temporary_view("texts", t_env.from_elements(
        [(i, *map(bytearray, texts)) for i, texts in enumerate(rows)],  # PyFlink takes bytearray as BYTES
        DataTypes.ROW([DataTypes.FIELD("i", DataTypes.BIGINT()),
                       *(DataTypes.FIELD(f"t{j}", DataTypes.BYTES()) for j in range(width))])))
    columns = ", ".join(f"t.t{j}" for j in range(width))
    table = t_env.sql_query(f"SELECT t.i, r.topic, r.k, r.v FROM texts AS t, "
                            f"LATERAL TABLE(split_outputs('{topics}', '{shapes}', {columns})) AS r(topic, k, v)")
    # Read back through Arrow in one piece (to_pandas): collect() would cross py4j twice per record (~2 ms).
    records = table.to_pandas()
    # Records of one row in their order; rows in theirs (parallelism 1 keeps both, the stable sort makes sure).
    records = records.sort_values(records.columns[0], kind="stable")
    return [(topic, bytes(k), bytes(v)) for topic, k, v in zip(*(records[c] for c in records.columns[1:]))]


def _split_directly(texts: tuple[bytes, ...], topics: str, shapes: str | None = None) -> list[tuple[str, bytes, bytes]]:
    """The same function called in this process's JVM, without a Flink job: for texts that make it throw (a job
    would fail on the first; one job each would take seconds)."""
    if shapes is None:
        shapes = ";" * topics.count(";")
    from pyflink.java_gateway import get_gateway

    from stockmax.jobs.pipeline import SPLIT_OUTPUTS_CLASS

    _batch_env_with_functions_jar()
    gateway = get_gateway()
    function = getattr(gateway.jvm, SPLIT_OUTPUTS_CLASS)()
    records = gateway.jvm.java.util.ArrayList()
    function.setCollector(gateway.jvm.org.apache.flink.api.common.functions.util.ListCollector(records))
    j_texts = gateway.new_array(gateway.jvm.byte, len(texts), 0)
    for i, text in enumerate(texts):
        j_texts[i] = bytearray(text)
    function.eval(topics, shapes, j_texts)
    return [(str(r.getString(0)), bytes(r.getBinary(1)), bytes(r.getBinary(2))) for r in records]


def test_the_jvm_splits_output_texts_into_the_records_python_joined():
    """The job's outputs cross to the JVM as one text per kind and call; the Java function must give back
    exactly the (topic, key, value) records of their lines, text by text. Oracle: Python's own split of the
    same texts, on random texts (non-ASCII values, tabs inside values, empty texts and lines) and the edge
    cases written out."""
    import random

    import pytest
    from py4j.protocol import Py4JJavaError

    rng = random.Random(7)
    alphabet = "AZaz09._-{}\":,[] é€中🙂\t"

    def line() -> str:
        key = "".join(rng.choice("ABCXYZ.|1m") for _ in range(rng.randint(1, 12)))
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        return f"{key}\t{value}"

    texts = ["", "\n", "\n\n", "A\t", "A\tv\n", "\nA\tv", "A\tv\n\nB\tw\n", "\tno key", "A\tx\ty"]
    texts += ["\n".join(line() for _ in range(rng.randint(0, 30))) + rng.choice(["", "\n"]) for _ in range(300)]
    texts += ["\n".join(line() for _ in range(5000))]  # a long one, many lines
    rng.shuffle(texts)
    topics = ["p.max-updates", "p.alerts", "p_rollups"]
    rows = [tuple(text.encode() for text in texts[i:i + 3]) for i in range(0, len(texts) - 2, 3)]
    expected = [(topic, *l.split(b"\t", 1)) for row in rows for topic, text in zip(topics, row)
                for l in text.split(b"\n") if l]
    assert len(expected) > 8000 and {record[0] for record in expected} == set(topics)
    assert _split_in_flink(rows, ";".join(topics)) == expected

    # A line without a tab can only come from a bug on the Python side: the function throws (failing the job)
    # and names the line.
    assert _split_directly((b"A\tv\nB\tw",), "t") == [("t", b"A", b"v"), ("t", b"B", b"w")]
    with pytest.raises(Py4JJavaError) as failure:
        _split_directly((b"A\tv\nno tab here\n",), "t")
    assert "an output line without a key (no tab): no tab here" in str(failure.value)
    # A text of shape "record" is one record whatever its value's bytes (an Arrow batch): tabs, line breaks,
    # zeros; an empty one is none, and one without a key is a bug too.
    binary = bytes(range(256)) * 3
    assert _split_directly((b"7\t" + binary, b"", b"A\tv\n"), "r;s;t", "record;record;") == \
        [("r", b"7", binary), ("t", b"A", b"v")]
    with pytest.raises(Py4JJavaError) as failure:
        _split_directly((b"no key",), "r", "record")
    assert "an output record without a key (no tab): no key" in str(failure.value)
    # So can texts and topics that do not pair up.
    with pytest.raises(Py4JJavaError) as failure:
        _split_directly((b"A\tv", b"B\tw"), "t;u;v")
    assert "split_outputs: 2 texts for 3 topics (t;u;v)" in str(failure.value)


def test_the_jvm_turns_rows_into_the_json_objects_of_their_fields():
    """Max updates and rollups cross as JSON arrays of rows; each row must come back as the record whose
    value is exactly what orjson.dumps of its dict gives, keyed by its first fields joined with '|'. Oracle:
    orjson on the dicts, for random rows (strings with quotes, escapes, control and non-ASCII characters,
    extreme numbers, nulls, nested values), rows and lines in one call, and the job's own outputs."""
    import random

    import pytest
    from py4j.protocol import Py4JJavaError

    rng = random.Random(11)
    floats = [0.0, -0.0, 1e-7, 5e-324, 1e16, 1e22, 1.7976931348623157e308, -2.5, 0.1 + 0.2, 123.456789]

    def text_value() -> str:
        return "".join(rng.choice('AZ09.|-"\\/\n\t\x01 é€中🙂') for _ in range(rng.randint(0, 12)))

    def value():
        return rng.choice([lambda: rng.randint(-2**63, 2**63 - 1), lambda: rng.choice(floats),
                           lambda: rng.uniform(-1e6, 1e6), text_value, lambda: None, lambda: rng.random() < 0.5,
                           lambda: [rng.randint(0, 9), text_value()], lambda: {"a": [text_value()]}])()

    def scalar():
        return rng.choice([lambda: rng.randint(-2**63, 2**63 - 1), lambda: rng.choice(floats),
                           lambda: rng.uniform(-1e6, 1e6), text_value, lambda: None, lambda: rng.random() < 0.5])()

    def key_part(v) -> str:
        return v if isinstance(v, str) else orjson.dumps(v).decode()

    def made_rows(key_fields: int, width: int) -> list[list]:
        # A row's first field is never an array (then it would start like a column block).
        return [[(text_value() if rng.random() < 0.8 else scalar()) if j == 0 else
                 text_value() if j < key_fields and rng.random() < 0.8 else value() for j in range(width)]
                for _ in range(rng.choice([0, 0, 1, 2, 7, 50]))]

    def made_block(key_fields: int, width: int) -> tuple[list, list[list]]:
        """A column block as the job writes one (numpy columns through orjson's numpy support, values that all
        records share written once), and its records as rows."""
        n = rng.choice([0, 1, 2, 5, 40])
        columns, rows = [], [[] for _ in range(n)]
        for j in range(width):
            kind = "list" if j == 0 else rng.choice(["list", "shared", "floats", "ints"])
            if kind == "shared":  # anything but an array
                shared = rng.choice([scalar, lambda: {"a": [text_value()]}])()
                columns.append(shared)
                values = [shared] * n
            elif kind == "floats":
                column = np.array([rng.choice(floats + [rng.uniform(-1e6, 1e6)]) for _ in range(n)], np.float64)
                columns.append(column)
                values = column.tolist()
            elif kind == "ints":
                column = np.array([rng.randint(-2**63, 2**63 - 1) for _ in range(n)], np.int64)
                columns.append(column)
                values = column.tolist()
            else:
                values = [(text_value() if j < key_fields and rng.random() < 0.8 else value()) for _ in range(n)]
                columns.append(values)
            for row, v in zip(rows, values):
                row.append(v)
        return columns, rows

    shapes = {"two": (2, ("symbol", "window", "n", "x", "y")), "one": (1, ("symbol", "é", "z"))}
    topics = ["p.two", "p.lines", "p.one"]
    shape_text = ";".join(f"{k}:{','.join(f)}" for k, f in (shapes["two"], shapes["one"]))
    shape_text = shape_text.replace(";", ";;")  # the middle text is lines
    rows, expected = [], []
    for i in range(300):
        texts = []
        for topic, kind in zip(topics, ("two", None, "one")):
            if kind is None:
                lines = [f"K{j}\tv{j}".encode() for j in range(rng.randint(0, 3))]
                texts.append(b"\n".join(lines))
                expected += [(topic, *line.split(b"\t", 1)) for line in lines]
                continue
            key_fields, fields = shapes[kind]
            items, made = [], []  # rows and column blocks, in any order; the records they hold
            for _ in range(rng.choice([0, 1, 3])):
                if rng.random() < 0.5:
                    rows_made = made_rows(key_fields, len(fields))
                    items += rows_made
                else:
                    block, rows_made = made_block(key_fields, len(fields))
                    items.append(block)
                made += rows_made
            texts.append(orjson.dumps(items, option=orjson.OPT_SERIALIZE_NUMPY) if items or rng.random() < 0.5
                         else b"")  # nothing: [] or no text at all
            expected += [(topic, "|".join(map(key_part, r[:key_fields])).encode(), orjson.dumps(dict(zip(fields, r))))
                         for r in made]
        rows.append(tuple(texts))
    assert len(expected) > 5000
    blocks = [item for row in rows for text in row[::2] if text for item in orjson.loads(text)
              if item and isinstance(item[0], list)]
    assert len(blocks) > 100 and any(len(block[0]) == 0 for block in blocks)
    assert _split_in_flink(rows, ";".join(topics), shape_text) == expected

    # The job's own texts, as its keyed function writes them for the sink: what its tests read (decode_outputs).
    rules = Rules(windows_us=(1_000_000, 60_000_000), levels=(100.0,))
    function = symbol_function(rules)
    function.open(FakeRuntime())
    ctx = FakeContext(watermark_ms=START_MS - 10_000)
    ticks = [Tick(f"S{i % 7}", 99 + rng.random() * 2, 1.0, "X", i, (START_MS + 37 * i) * 1000) for i in range(3000)]
    outputs = list(function.process_element(group_of(ticks), ctx)) + fire_timers(function, ctx, START_MS + 10**7)
    topic_of = {kind: f"t.{kind}" for kind in OUTPUT_KINDS}
    want = [(topic_of[kind], key.encode(), value) for row in outputs for kind in OUTPUT_KINDS
            for key, value in decode_outputs([row], kind)]
    assert {kind for kind in OUTPUT_KINDS if decode_outputs(outputs, kind)} == {"max_updates", "alerts", "rollups",
                                                                               "tick_batches"}
    assert _split_in_flink([tuple(row) for row in outputs], ";".join(topic_of.values()), split_outputs_shapes()) == want

    # Rows that do not match their shape can only come from a bug on the Python side: the function throws.
    for text, message in ((b'[["A","1s",1,2]]', "a row of 4 values, not 5"), (b'[["A","1s",1,2,3]', "']' expected"),
                          (b'[[["A"],"1s",1,2]]', "a block of 4 columns, not 5"),
                          (b'[[["A"],"1s",1,2,3,4]]', "a block of more than 5 columns"),
                          (b'[[["A","B"],"1s",[1],2,3]]', "a column of 1 values in a block of 2"),
                          (b'[[["A"],"1s",1,2,3],["B"', "a row cut short")):
        with pytest.raises(Py4JJavaError) as failure:
            _split_directly((text,), "t", "2:symbol,window,n,x,y")
        assert message in str(failure.value)


def test_the_loopback_boot_sends_beams_start_worker_request(tmp_path):
    """The local JVM starts Python through python_boot_launcher: PyFlink's beam_boot call goes to
    stockmax/loopback_boot.py, which must send the same StartWorker request beam_boot sends, to the address the
    JVM gives; anything else runs the interpreter. Oracle: Beam's own protobuf types and gRPC servicer, in a
    worker pool served here."""
    from concurrent import futures

    import grpc
    from apache_beam.portability.api.org.apache.beam.model.fn_execution.v1 import beam_fn_api_pb2, beam_fn_api_pb2_grpc

    from stockmax import config
    from stockmax.flink_env import python_boot_launcher

    received = []

    class WorkerPool(beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolServicer):
        def StartWorker(self, request, context):
            received.append(request)
            return beam_fn_api_pb2.StartWorkerResponse(error="no workers today" if request.worker_id == "bad" else "")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(WorkerPool(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        launcher = str(python_boot_launcher(config.load(env={}).with_(data_dir=tmp_path)))
        env = {**os.environ, "PYTHON_LOOPBACK_SERVER_ADDRESS": f"127.0.0.1:{port}", "STOCKMAX_TEST_MARK": "é 1"}
        boot = [launcher, "-m", "pyflink.fn_execution.beam.beam_boot", "--provision_endpoint=localhost:4242",
                "--semi_persist_dir=/var/tmp"]
        done = subprocess.run(boot + ["--id=1-1"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        (request,) = received
        assert request.worker_id == "1-1"
        assert request.provision_endpoint.url == "localhost:4242"
        assert request.params["STOCKMAX_TEST_MARK"] == "é 1"
        assert request.params["SEMI_PERSISTENT_DIRECTORY"] == "/var/tmp"
        assert all(request.params[name] == value for name, value in env.items())  # the whole environment

        refused = subprocess.run(boot + ["--id=bad"], env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "no workers today" in refused.stderr
    finally:
        server.stop(None)

    # Anything else is the interpreter itself, with its arguments.
    done = subprocess.run([launcher, "-c", "import sys; print(sys.executable, sys.argv[1:])", "a b", "c"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == [sys.executable, "['a", "b',", "'c']"]

"""How the job keeps symbols in Flink state so that a state change writes what changed, not a symbol's
whole memory: a symbol's processor is one entry, without the duplicate filter's sealed chunks (most of
a busy symbol's state: the keys of the last dedup horizon); each sealed chunk is an entry of its own,
written once when it is sealed and removed once it is forgotten (DuplicateFilter.take_changes).

`chunks` below is anything with get/put/remove by key: Flink's MapState in the job, a dict's wrapper in
tests. A chunk's key is `symbol|chunk id` (the id is digits, so any symbol text is safe before it).
"""

from __future__ import annotations

import pickle

from . import snapshot
from .schedule import DueSchedule
from .symbol import SymbolProcessor


class StoredSymbolProcessor(SymbolProcessor):
    """A SymbolProcessor that pickles without its sealed dedup chunks (they are stored on their own)."""

    __slots__ = ()

    def __reduce__(self):
        return restore_stored_processor, (snapshot.VERSION, self.snapshot(external=True))


def restore_stored_processor(version: int, data: tuple) -> StoredSymbolProcessor:
    """What a stored processor calls when it is loaded; `attach_chunks` then gives it its sealed chunks."""
    return StoredSymbolProcessor.restore(snapshot.migrate(version, data))


def chunk_key(symbol: str, chunk_id: int) -> str:
    return f"{symbol}|{chunk_id}"


def attach_chunks(symbol: str, processor: SymbolProcessor, chunks) -> SymbolProcessor:
    """A processor just read from state, with its sealed chunks (a no-op unless it was just unpickled)."""
    duplicates = processor.duplicates
    for chunk_id in duplicates.missing_chunks:
        duplicates.attach(chunk_id, chunks.get(chunk_key(symbol, chunk_id)))
    return processor


def store_chunks(symbol: str, processor: SymbolProcessor, chunks) -> None:
    """Write the chunks sealed and remove those forgotten since the last call (before the processor
    itself is written or removed, in the same bundle, so a checkpoint holds both or neither)."""
    sealed, dropped = processor.duplicates.take_changes()
    for chunk_id, contents in sealed:
        chunks.put(chunk_key(symbol, chunk_id), contents)
    for chunk_id in dropped:
        chunks.remove(chunk_key(symbol, chunk_id))


class BufferedChunks:
    """Chunk writes kept until the next store (anything with put/remove), the last write per key winning:
    a chunk forgotten and a new processor's chunk of the same id sealed after it (a symbol that expired and
    came back) leave the new one."""

    __slots__ = ("writes",)

    def __init__(self) -> None:
        self.writes: dict[str, tuple | None] = {}

    def put(self, key: str, contents: tuple) -> None:
        self.writes[key] = contents

    def remove(self, key: str) -> None:
        self.writes[key] = None


class KeySymbols:
    """One job key's symbols in memory between checkpoints, and what changed since the last store.

    PyFlink pickles every state entry written in a bundle when the bundle ends; bundles end at every
    watermark step and every bundle interval, so a busy symbol written on each change was pickled several
    times a second, and with thousands of symbols that, not the ticks, set the pace. Here the job's function
    keeps the processors as objects and writes the changed ones to Flink state once per checkpoint, when the
    checkpoint's store mark comes (GroupRecords). What a checkpoint holds is what it held before: the
    processors, their sealed chunks and the due schedule as of the barrier; a restored attempt reads them
    back (`load`) and works from memory again."""

    __slots__ = ("processors", "schedule", "chunks", "_changed", "watermark_ms", "_watermark_stored")

    def __init__(self, processors: dict, schedule, watermark_ms: int | None = None) -> None:
        self.processors: dict[str, SymbolProcessor] = processors
        self.schedule = schedule
        # The highest watermark the key has judged or advanced at. Stored with the rest: a restored attempt's
        # watermark starts over lower, and judging a tick against it could accept one the state is already
        # past (late before the failure, taken after it).
        self.watermark_ms = self._watermark_stored = watermark_ms
        self.chunks = BufferedChunks()  # where store_chunks writes
        # None: removed. The schedule changes only beside a processor (a due point set or popped with its
        # symbol's put or remove), so it is written whenever any processor is.
        self._changed: dict[str, SymbolProcessor | None] = {}

    def act_at(self, watermark_ms: int) -> int:
        """The watermark the key acts at, given Flink's: never lower than one it acted at before."""
        if self.watermark_ms is None or watermark_ms > self.watermark_ms:
            self.watermark_ms = watermark_ms
        return self.watermark_ms

    @classmethod
    def load(cls, entries, chunks, schedule, watermark_ms: int | None = None) -> "KeySymbols":
        """A key's symbols as a checkpoint held them: entries (symbol, pickled processor) of the processors' state,
        chunks their sealed chunks (get by key), schedule the due schedule (None: none), watermark_ms the
        highest watermark acted at (None: none)."""
        processors = {}
        for symbol, data in entries:
            processor = pickle.loads(data)
            if processor.duplicates.missing_chunks:
                attach_chunks(symbol, processor, chunks)
            elif type(processor) is SymbolProcessor:  # version 1 state: stored whole, no chunks yet
                processor.__class__ = StoredSymbolProcessor
            processors[symbol] = processor
        return cls(processors, schedule if schedule is not None else DueSchedule(), watermark_ms)

    def get(self, symbol: str) -> SymbolProcessor | None:
        return self.processors.get(symbol)

    def put(self, symbol: str, processor: SymbolProcessor) -> None:
        self.processors[symbol] = processor
        self._changed[symbol] = processor

    def remove(self, symbol: str) -> None:
        del self.processors[symbol]
        self._changed[symbol] = None

    def store(self, processors, chunks, schedule, watermark) -> int:
        """Write what changed since the last store to Flink state (processors and chunks: MapStates,
        schedule and watermark: ValueStates); processors as their pickles, made here with the C pickler:
        Flink's own pickled-object type goes through cloudpickle, whose per-object hook made pickling a
        processor ~2x dearer, and the bytes are the same either way. Returns how many processors were
        written or removed. Chunks go first, as store_chunks has always ordered them, though within one
        bundle the order does not matter."""
        if self.watermark_ms != self._watermark_stored:
            watermark.update(self.watermark_ms)
            self._watermark_stored = self.watermark_ms
        for key, contents in self.chunks.writes.items():
            if contents is None:
                chunks.remove(key)
            else:
                chunks.put(key, contents)
        self.chunks.writes.clear()
        if not self._changed:
            return 0
        for symbol, processor in self._changed.items():
            if processor is None:
                processors.remove(symbol)
            else:
                processors.put(symbol, pickle.dumps(processor, pickle.HIGHEST_PROTOCOL))
        written = len(self._changed)
        self._changed.clear()
        if len(self.schedule):
            schedule.update(self.schedule)
        else:
            schedule.clear()
        return written

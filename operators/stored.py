"""How the job keeps symbols in Flink state so that a state change writes what changed, not a symbol's
whole memory: a symbol's processor is one entry, without the duplicate filter's sealed chunks (most of
a busy symbol's state: the keys of the last dedup horizon); each sealed chunk is an entry of its own,
written once when it is sealed and removed once it is forgotten (DuplicateFilter.take_changes).

`chunks` below is anything with get/put/remove by key: Flink's MapState in the job, a dict's wrapper in
tests. A chunk's key is `symbol|chunk id` (the id is digits, so any symbol text is safe before it).
"""

from __future__ import annotations

import bisect
import heapq
import pickle

from . import snapshot
from .columnar import advance_symbols
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


def put_sealed_chunks(symbol: str, processor: SymbolProcessor, chunks) -> list[int]:
    """Write the chunks sealed since the last call; returns the ids of those forgotten since (the caller
    says when they go)."""
    sealed, dropped = processor.duplicates.take_changes()
    for chunk_id, contents in sealed:
        chunks.put(chunk_key(symbol, chunk_id), contents)
    return dropped


def store_chunks(symbol: str, processor: SymbolProcessor, chunks) -> None:
    """Write the chunks sealed and remove those forgotten since the last call (before the processor
    itself is written or removed, in the same bundle, so a checkpoint holds both or neither)."""
    for chunk_id in put_sealed_chunks(symbol, processor, chunks):
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
    keeps the processors as objects and writes to Flink state once per checkpoint, when the checkpoint's
    store mark comes (GroupRecords).

    What a store writes: the key's journal entry, the events of the symbols since the last store (each
    accepted tick, and each advance with the symbols it advanced: all that changes a processor), and the
    whole processors of a share of the changed symbols, those changed longest ago first, so that each is
    rewritten within `rewrite_rounds` stores. A journal entry stays in state while a symbol has events in it
    that its stored processor does not hold. A restored attempt (`load`) reads the processors and replays the
    journal's events after each one's last write: pickling a processor cost ~40 µs in the job, appending a
    tick to the journal well under 1 µs. With one round every changed symbol is written at each store and
    the journal stays empty."""

    __slots__ = ("processors", "schedule", "chunks", "watermark_ms", "_watermark_stored", "rewrite_rounds",
                 "_events", "_journaled", "_changed", "_unsaved", "_expired", "_dropped", "_entries", "_next_entry")

    def __init__(self, processors: dict, schedule, watermark_ms: int | None = None, rewrite_rounds: int = 1,
                 next_entry: int = 0) -> None:
        if rewrite_rounds < 1:
            raise ValueError("rewrite_rounds must be at least 1")
        self.processors: dict[str, SymbolProcessor] = processors
        self.schedule = schedule
        # The highest watermark the key has judged or advanced at. Stored with the rest: a restored attempt's
        # watermark starts over lower, and judging a tick against it could accept one the state is already
        # past (late before the failure, taken after it).
        self.watermark_ms = self._watermark_stored = watermark_ms
        self.chunks = BufferedChunks()  # sealed chunks, and the removals of forgotten ones, until the next store
        self.rewrite_rounds = rewrite_rounds
        # Since the last store: accepted ticks (6-tuples) and advances ((frontier, symbols)), in order. Not
        # kept with one round: every changed symbol is written whole at every store.
        self._events: list[tuple] = []
        self._journaled = rewrite_rounds > 1
        self._changed = False  # since the last store
        # symbol -> the first journal entry with an event its stored processor does not hold
        self._unsaved: dict[str, int] = {}
        # Symbols expired since the last store: written (removed, or their new state) at the next one, so
        # that a replay never sees the old life's events.
        self._expired: set[str] = set()
        # symbol -> chunk ids forgotten since its last write: their entries stay while the stored processor
        # (which names them) is what a restore would start from.
        self._dropped: dict[str, list[int]] = {}
        self._entries: list[int] = []  # the journal entries in state, ascending
        self._next_entry = next_entry

    def act_at(self, watermark_ms: int) -> int:
        """The watermark the key acts at, given Flink's: never lower than one it acted at before."""
        if self.watermark_ms is None or watermark_ms > self.watermark_ms:
            self.watermark_ms = watermark_ms
        return self.watermark_ms

    @classmethod
    def load(cls, entries, chunks, schedule, watermark_ms: int | None = None, journal=(), rules=None,
             rewrite_rounds: int = 1) -> "KeySymbols":
        """A key's symbols as a checkpoint held them: entries (symbol, pickled processor) of the processors' state,
        chunks their sealed chunks (get by key), schedule the due schedule (None: none), watermark_ms the
        highest watermark acted at (None: none), journal its entries (entry, bytes), replayed onto the
        processors (rules: a new symbol's rules come from rules.for_symbol)."""
        processors = {}
        for symbol, data in entries:
            processor = pickle.loads(data)
            if processor.duplicates.missing_chunks:
                attach_chunks(symbol, processor, chunks)
            elif type(processor) is SymbolProcessor:  # version 1 state: stored whole, no chunks yet
                processor.__class__ = StoredSymbolProcessor
            processors[symbol] = processor
        journal = sorted((entry, pickle.loads(data)) for entry, data in journal)
        key = cls(processors, schedule if schedule is not None else DueSchedule(), watermark_ms, rewrite_rounds,
                  journal[-1][0] + 1 if journal else 0)
        key._entries = [entry for entry, _ in journal]
        written_at = {symbol: entry for entry, (_, written) in journal for symbol in written}
        for entry, (events, _) in journal:
            key._replay(entry, events, written_at, rules)
        return key

    def _replay(self, entry: int, events: list[tuple], written_at: dict[str, int], rules) -> None:
        """A journal entry's events, for the symbols whose stored processor does not hold them. What they
        output was committed before; chunks sealed then are in state already."""
        processors, unsaved = self.processors, self._unsaved
        for event in events:
            if len(event) == 2:  # an advance: (frontier, symbols)
                frontier, names = event
                due = [(symbol, processors[symbol]) for symbol in names if written_at.get(symbol, -1) < entry]
                advance_symbols(due, frontier)
                for symbol, processor in due:
                    unsaved.setdefault(symbol, entry)
                    _, dropped = processor.duplicates.take_changes()
                    if dropped:
                        self._dropped.setdefault(symbol, []).extend(dropped)
                    if processor.expired(frontier):  # (a store follows every expiry: not reached)
                        self.remove(symbol)
            else:  # an accepted tick
                symbol = event[0]
                if written_at.get(symbol, -1) >= entry:
                    continue
                processor = processors.get(symbol)
                if processor is None:
                    processor = processors[symbol] = StoredSymbolProcessor(rules.for_symbol(symbol))
                if processor.accept(event, _NO_FRONTIER) is not None:
                    raise RuntimeError(f"journal entry {entry}: {symbol}'s tick {event} was accepted before and "
                                       "not now: the stored state does not match its journal")
                unsaved.setdefault(symbol, entry)

    def get(self, symbol: str) -> SymbolProcessor | None:
        return self.processors.get(symbol)

    def put(self, symbol: str, processor: SymbolProcessor) -> None:
        self.processors[symbol] = processor

    def accepted(self, tick: tuple) -> None:
        """A tick its symbol's processor accepted (symbol first)."""
        if self._journaled:
            self._events.append(tick)
        self._changed = True
        self._unsaved.setdefault(tick[0], self._next_entry)

    def advanced(self, frontier_us: int, symbols: list[str]) -> None:
        """The symbols about to be advanced to the frontier, together."""
        if not symbols:
            return
        if self._journaled:
            self._events.append((frontier_us, tuple(symbols)))
        self._changed = True
        for symbol in symbols:
            self._unsaved.setdefault(symbol, self._next_entry)

    def take_chunk_changes(self, symbol: str, processor: SymbolProcessor) -> None:
        """After an advance: chunks sealed are written at the next store, those forgotten removed once the
        symbol is written whole (or expires)."""
        dropped = put_sealed_chunks(symbol, processor, self.chunks)
        if dropped:
            self._dropped.setdefault(symbol, []).extend(dropped)

    def remove(self, symbol: str) -> None:
        """An expired symbol: gone from memory, and from state at the next store. Its forgotten chunks go
        now, before any chunk of a new life of the symbol (ids start over) is sealed."""
        del self.processors[symbol]
        self._drop_chunks(symbol)
        self._expired.add(symbol)

    def _drop_chunks(self, symbol: str) -> None:
        for chunk_id in self._dropped.pop(symbol, ()):
            self.chunks.remove(chunk_key(symbol, chunk_id))

    def store(self, processors, chunks, schedule, watermark, journal) -> int:
        """Write what changed since the last store to Flink state (processors, chunks and journal: MapStates,
        schedule and watermark: ValueStates); processors as their pickles, made here with the C pickler:
        Flink's own pickled-object type goes through cloudpickle, whose per-object hook made pickling a
        processor ~2x dearer, and the bytes are the same either way. Returns how many processors were
        written or removed."""
        if self.watermark_ms != self._watermark_stored:
            watermark.update(self.watermark_ms)
            self._watermark_stored = self.watermark_ms
        entry, events, unsaved = self._next_entry, self._events, self._unsaved
        if not self._changed:  # nothing happened (a timer right after a mark): nothing to write
            self._write_chunks(chunks)
            return 0
        self._next_entry += 1
        self._events = []
        self._changed = False
        written = self._expired
        self._expired = set()
        rounds = self.rewrite_rounds
        if rounds == 1:
            written.update(unsaved)
        else:
            written.update(heapq.nsmallest(-(-len(unsaved) // rounds), unsaved, key=unsaved.__getitem__))
            # and any not written for `rounds` stores
            written.update(symbol for symbol, first in unsaved.items() if first <= entry - rounds)
        for symbol in written:
            unsaved.pop(symbol, None)
            self._drop_chunks(symbol)
        self._write_chunks(chunks)
        for symbol in written:
            processor = self.processors.get(symbol)
            if processor is None:
                processors.remove(symbol)
            else:
                processors.put(symbol, pickle.dumps(processor, pickle.HIGHEST_PROTOCOL))
        keep_from = min(unsaved.values(), default=entry + 1)
        if keep_from <= entry:
            journal.put(entry, pickle.dumps((events, sorted(written)), pickle.HIGHEST_PROTOCOL))
            self._entries.append(entry)
        stale = bisect.bisect_left(self._entries, keep_from)
        for old in self._entries[:stale]:
            journal.remove(old)
        del self._entries[:stale]
        if len(self.schedule):
            schedule.update(self.schedule)
        else:
            schedule.clear()
        return len(written)

    def _write_chunks(self, chunks) -> None:
        for key, contents in self.chunks.writes.items():
            if contents is None:
                chunks.remove(key)
            else:
                chunks.put(key, contents)
        self.chunks.writes.clear()


# A frontier below any tick: a replayed tick is judged only as a repeat (it was on time when it came).
_NO_FRONTIER = -(1 << 62)

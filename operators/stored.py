"""How the job keeps symbols in Flink state so that a state change writes what changed, not a symbol's
whole memory: a symbol's processor is one entry, without the duplicate filter's sealed chunks (most of
a busy symbol's state: the keys of the last dedup horizon); each sealed chunk is an entry of its own,
written once when it is sealed and removed once it is forgotten (DuplicateFilter.take_changes).

`chunks` below is anything with get/put/remove by key: Flink's MapState in the job, a dict's wrapper in
tests. A chunk's key is `symbol|chunk id` (the id is digits, so any symbol text is safe before it).
"""

from __future__ import annotations

from . import snapshot
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

"""A symbol's state as one versioned snapshot: what a checkpoint holds for it, and the one place where an
older layout becomes the current one.

Each stateful part says what it holds as plain data (`snapshot()`: tuples, lists, arrays, numbers, strings;
no stockmax class; handed straight to pickle, so it may share the part's own containers) and is made again
from it (`restore(data)`, which adopts the freshly unpickled containers); `SymbolProcessor` pickles as
`(VERSION, its parts' data)`. A change to any part's layout raises VERSION, and `migrate` turns every older
version's data into the current one, step by step, so a checkpoint or savepoint of any earlier version
restores into a newer job.

Versions: 1 (2026-12-04); 2 (2026-12-05), the duplicate filter's queue in sealed chunks and a tail;
3 (2026-12-06), numeric columns (extrema candidates, buffered ticks, duplicate-filter keys) as the bytes of
their arrays (`column_bytes`): the pickler writes one string instead of an object per number, which made a
checkpoint's pickling ~4x cheaper.

Policy: snapshots of every version since 1 restore, tested with a stored snapshot of each. State pickled
before versions existed (stockmax before 2026-12-04, objects pickled with their classes' own layouts) is
refused with a clear error: start such a job afresh (`stockmax run --fresh`, or a new STOCKMAX_JOB_NAME).
"""

from __future__ import annotations

import sys
from array import array

VERSION = 3

UNVERSIONED = ("this checkpoint holds stockmax state from before versioned snapshots (2026-12-04), which this "
               "version does not restore; start the job afresh: `stockmax run --fresh` (or a new STOCKMAX_JOB_NAME)")


class SnapshotError(ValueError):
    """A checkpoint's state that this version of stockmax cannot restore."""


def column_bytes(values: array, start: int = 0) -> bytes:
    """An array('q') or array('d') from `start` on as snapshot data: its items' bytes, little-endian (with
    no copy of the array's part on the way)."""
    if sys.byteorder == "little":
        return memoryview(values)[start:].tobytes()
    swapped = values[start:]
    swapped.byteswap()
    return swapped.tobytes()


def column(typecode: str, data: bytes) -> array:
    """The array that column_bytes gave these bytes for ('q': int64, 'd': float64)."""
    values = array(typecode, data)
    if sys.byteorder != "little":
        values.byteswap()
    return values


def _as_bytes(typecode: str, values) -> bytes:
    """A version-2 column (an array, or a list of numbers) as version-3 data."""
    is_column = isinstance(values, array) and values.typecode == typecode
    return column_bytes(values if is_column else array(typecode, values))


def migrate(version: int, data: tuple) -> tuple:
    """A symbol's snapshot data of `version`, as the current VERSION's layout."""
    if version == 1:  # the duplicate filter's queue was one run of columns; now sealed chunks and a tail
        from .dedup import SEAL_KEYS  # (dedup imports this module)

        horizon_us, times, exchanges, seqs, out_of_order = data[2]
        data = (*data[:2], (horizon_us, SEAL_KEYS, [], times, exchanges, seqs, out_of_order, 0), *data[3:])
        version = 2
    if version == 2:  # numeric columns as lists or arrays; now their bytes
        rules, pending, duplicates, rollups, extrema, *rest = data
        symbols, prices, volumes, exchanges, seqs, event_times = pending
        pending = (symbols, _as_bytes("d", prices), _as_bytes("d", volumes), exchanges, _as_bytes("q", seqs),
                   _as_bytes("q", event_times))
        horizon_us, seal_keys, chunks, times, exchanges, seqs, out_of_order, next_chunk = duplicates
        chunks = [(chunk_id, head, None, None, None) if chunk_times is None else
                  (chunk_id, head, _as_bytes("q", chunk_times), chunk_exchanges, _as_bytes("q", chunk_seqs))
                  for chunk_id, head, chunk_times, chunk_exchanges, chunk_seqs in chunks]
        duplicates = (horizon_us, seal_keys, chunks, _as_bytes("q", times), exchanges, _as_bytes("q", seqs),
                      out_of_order, next_chunk)
        longest_us, now, *sides = extrema
        extrema = (longest_us, now, *((is_max, _as_bytes("q", times), _as_bytes("d", prices))
                                      for is_max, times, prices in sides))
        data = (rules, pending, duplicates, rollups, extrema, *rest)
        version = 3
    if version == VERSION:
        return data
    raise SnapshotError(f"symbol state of snapshot version {version!r}, and this stockmax knows versions 1 .. "
                        f"{VERSION}: restore it with the stockmax that wrote it, or start afresh (--fresh)")


class Snapshotted:
    """A stateful part: pickled as its snapshot (for a part pickled alone, e.g. in tests), and refusing the
    layouts of before versioned snapshots with a clear error."""

    __slots__ = ()

    def snapshot(self) -> tuple:
        raise NotImplementedError

    @classmethod
    def restore(cls, data: tuple):
        raise NotImplementedError

    def __reduce__(self):
        return type(self).restore, (self.snapshot(),)

    def __setstate__(self, state):  # only state pickled before snapshots comes here
        raise SnapshotError(UNVERSIONED)

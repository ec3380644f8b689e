"""The wire format of the job's outputs, from the Python step to the JVM: one home for the kinds, the encoder,
and the reference decoder that tests and tools read texts with (jvm/, SplitOutputs, is the job's decoder;
tests/test_job_adapter.py checks the two give the same records).

The keyed function's outputs of one call, per kind one text (bytes): for max updates and rollups a JSON array
of rows (each an array of the fields in ROW_KINDS, in order, as one orjson call writes them) and column blocks
(ColumnBlock: an array of the fields' columns); for RECORD_KINDS one record, "key<TAB>value", its value any
bytes (an Arrow batch of ticks); for the other kinds "key<TAB>JSON value" lines, UTF-8. One element crosses
from Python to the JVM per call, as bytes, which PyFlink passes on at no cost per record (arrays of rows cost
~0.8 µs per record to encode, plus building the rows; a STRING is decoded on the JVM side by Flink's own
per-character loop); SplitOutputs cuts them into (topic, key, value) records again,
in the JVM, still as bytes: a row (or a block's row) becomes the JSON object of its fields (each value's text
as orjson wrote it), keyed by its first fields joined with '|'. Neither part of a line can hold a tab or a
line break: keys are symbols (the schema's pattern) and window names, and JSON escapes both inside strings.
"""

from __future__ import annotations

import itertools

import numpy as np
import orjson

from .rollups import ROLLUP_FIELDS
from .symbol import MAX_UPDATE_FIELDS

OUTPUT_KINDS = ("max_updates", "alerts", "rollups", "late", "duplicates", "tick_batches")

# The kinds given as rows: per kind, how many leading fields make the record key (joined with '|': a max
# update's is symbol|window, a rollup's its symbol), and the fields.
ROW_KINDS = {"max_updates": (2, MAX_UPDATE_FIELDS), "rollups": (1, ROLLUP_FIELDS)}
# The kinds whose records are binary ("key<TAB>value", the value any bytes): one record per text.
RECORD_KINDS = ("tick_batches",)


def output_line(key: bytes, value: dict) -> bytes:
    """One output record as one line of UTF-8: its key, a tab, its value as JSON. Neither part can hold a
    tab or a line break: keys are symbols (the schema's pattern) and window names, and JSON escapes both.
    Bytes, not str: they leave Python as bytes, and a str line cost ~0.3 µs more to decode from orjson's
    bytes and to encode again."""
    # orjson: the same compact JSON as json.dumps, ~10x faster; every number here is finite (the parser
    # refuses non-finite prices and volumes).
    return key + b"\t" + orjson.dumps(value)


class ColumnBlock:
    """Records of a row kind as columns, in the kind's field order: each column either n values (a numpy array,
    or a list) or one value every record shares (a str or a number). The first column is always n values (a
    list). It leaves Python as the JSON array of its columns: orjson writes a numpy array in C, with no
    Python object per value, and a shared value once (for 300 k max updates, 0.07 s against 0.22-0.29 s for
    a tuple per record and orjson on the tuples); SplitOutputs (jvm/) makes each record the JSON object of
    its fields, byte for byte what it makes of the record as a row."""

    __slots__ = ("columns", "n")

    def __init__(self, columns: list, n: int) -> None:
        if not isinstance(columns[0], list) or len(columns[0]) != n:
            raise ValueError("a column block's first column must be a list of its n values")
        self.columns, self.n = columns, n

    @classmethod
    def from_rows(cls, rows: list[tuple]) -> "ColumnBlock":
        return cls([list(column) for column in zip(*rows)], len(rows))

    def slice(self, start: int, stop: int) -> "ColumnBlock":
        """Records start..stop-1 (numpy slices are views: no copy)."""
        stop = min(stop, self.n)
        return ColumnBlock([c[start:stop] if isinstance(c, (list, np.ndarray)) else c for c in self.columns],
                           stop - start)

    def rows(self) -> list[tuple]:
        """The records as rows, values as Python objects (what the per-tick path gives)."""
        return list(zip(*(c.tolist() if isinstance(c, np.ndarray) else c if isinstance(c, list)
                          else itertools.repeat(c, self.n) for c in self.columns)))

    def __repr__(self) -> str:
        return f"ColumnBlock({self.rows()!r})"


def block_columns(value):
    """orjson's `default` for output texts: a ColumnBlock is written as the array of its columns."""
    if isinstance(value, ColumnBlock):
        return value.columns
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def record_rows(records: list) -> list[tuple]:
    """A row kind's records (rows and column blocks) as rows."""
    return [row for item in records for row in (item.rows() if isinstance(item, ColumnBlock) else (item,))]


OUTPUTS_PER_ROW = 2000  # a watermark jump may release thousands of ticks at once: keep each row small


def encode_outputs(outputs: dict[str, list]):
    """The outputs of a call (records per kind of OUTPUT_KINDS) as rows of texts, one text per kind, at most
    OUTPUTS_PER_ROW records per text (one of RECORD_KINDS): the records of ROW_KINDS (rows and column blocks)
    as one JSON array, lines joined."""
    chunks = {kind: _chunks(records, 1 if kind in RECORD_KINDS else OUTPUTS_PER_ROW) for kind, records in outputs.items()}
    for row in itertools.zip_longest(*(chunks[kind] for kind in OUTPUT_KINDS), fillvalue=[]):
        yield tuple(_text(kind, records) for kind, records in zip(OUTPUT_KINDS, row))


def _chunks(records: list, size: int) -> list[list]:
    """records in lists of at most `size` records each; a list of column blocks (max updates) is cut by the
    records the blocks hold, a block across two lists split in two."""
    if not records or not isinstance(records[0], ColumnBlock):
        return [records[start:start + size] for start in range(0, len(records), size)]
    chunks, chunk, room = [], [], size
    for block in records:
        start = 0
        while start < block.n:
            part = block if start == 0 and block.n <= room else block.slice(start, start + room)
            chunk.append(part)
            start += part.n
            room -= part.n
            if room == 0:
                chunks.append(chunk)
                chunk, room = [], size
    return chunks + [chunk] if chunk else chunks


def _text(kind: str, records: list) -> bytes:
    if kind in ROW_KINDS:
        return orjson.dumps(records, default=block_columns, option=orjson.OPT_SERIALIZE_NUMPY) if records else b""
    if kind in RECORD_KINDS:
        return records[0] if records else b""
    return b"\n".join(records)


def split_outputs_shapes() -> str:
    """SplitOutputs' shapes argument: per kind, '' for lines, 'KEY_FIELDS:field,field,...' for rows, 'record'
    for a text that is one record."""
    return ";".join(f"{ROW_KINDS[kind][0]}:{','.join(ROW_KINDS[kind][1])}" if kind in ROW_KINDS
                    else "record" if kind in RECORD_KINDS else "" for kind in OUTPUT_KINDS)


def rows_of(item: list) -> list[list]:
    """An item of a text of rows: a row, or a column block (an array of the fields' columns, each a list of n
    values or one value all n share; the first always a list, which no row's first field is)."""
    if not item or not isinstance(item[0], list):
        return [item]
    n = len(item[0])
    return [list(row) for row in zip(*(column if isinstance(column, list) else [column] * n for column in item))]


def decode_text(kind: str, text: bytes) -> list[tuple[str, bytes]]:
    """The reference decoder: the (key, JSON value) records of one kind's text, as SplitOutputs makes them in
    the job (a row becomes the JSON object of its fields, keyed by its first fields joined with '|')."""
    if not text:
        return []
    if kind in ROW_KINDS:
        key_fields, fields = ROW_KINDS[kind]
        return [("|".join(map(str, row[:key_fields])), orjson.dumps(dict(zip(fields, row))))
                for item in orjson.loads(text) for row in rows_of(item)]
    if kind in RECORD_KINDS:
        key, value = text.split(b"\t", 1)
        return [(key.decode(), value)]
    return [(key.decode(), value) for key, value in (line.split(b"\t", 1) for line in text.split(b"\n") if line)]


def decode_outputs(rows, kind: str) -> list[tuple[str, bytes]]:
    """(key, JSON value) of one kind, from rows of texts as encode_outputs makes them."""
    index = OUTPUT_KINDS.index(kind)
    return [record for row in rows for record in decode_text(kind, row[index])]

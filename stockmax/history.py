"""Historical questions answered from ClickHouse: the exact highest price over any range, and bars.

The highest price over [from, to) is exact for any range, not rounded to bars: the range is cut into the
coarsest rollup buckets that lie wholly inside it, finer buckets towards its edges, and raw ticks for
what is left at each edge (less than the finest resolution). One query reads all the pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

from .operators.tick import symbol_problem
from .store import Store, query_text
from .times import format_utc


class HistoryError(ValueError):
    """A question that has no answer: the message says why (unknown symbol, empty range, ...)."""


class NotFound(HistoryError):
    """A fair question about something the store does not hold: an unknown symbol, or no ticks in range."""


@dataclass(frozen=True)
class Piece:
    resolution_us: int | None  # None: raw ticks
    start_us: int
    end_us: int


def cover(start_us: int, end_us: int, resolutions_us) -> list[Piece]:
    """Cut [start, end) into bucket-aligned pieces, coarsest first, and raw pieces at the edges.

    Their union is exactly [start, end) and they do not overlap. A rollup piece [a, b) at resolution r
    has a and b on multiples of r, so it is whole buckets of r."""
    pieces: list[Piece] = []
    resolutions = sorted(resolutions_us, reverse=True)

    def cut(a: int, b: int, level: int) -> None:
        if a >= b:
            return
        if level == len(resolutions):
            pieces.append(Piece(None, a, b))
            return
        r = resolutions[level]
        first, last = -(-a // r) * r, b // r * r  # the first and last bucket boundaries inside [a, b]
        if first < last:
            pieces.append(Piece(r, first, last))
            cut(a, first, level + 1)
            cut(last, b, level + 1)
        else:
            cut(a, b, level + 1)

    cut(start_us, end_us, 0)
    return pieces


def _highest_sql(pieces: list[Piece]) -> tuple[str, dict]:
    """sql/queries/highest_price.sql with its range conditions for these pieces, and their parameters."""
    rollup_ranges, tick_ranges, parameters = [], [], {}
    for i, piece in enumerate(pieces):
        parameters[f"a{i}"], parameters[f"b{i}"] = piece.start_us, piece.end_us
        if piece.resolution_us is None:
            tick_ranges.append(f"(event_time >= fromUnixTimestamp64Micro({{a{i}:Int64}}, 'UTC') AND "
                               f"event_time < fromUnixTimestamp64Micro({{b{i}:Int64}}, 'UTC'))")
        else:
            parameters[f"r{i}"] = piece.resolution_us // 1_000_000
            rollup_ranges.append(f"(resolution_s = {{r{i}:UInt32}} AND "
                                 f"bucket_start >= fromUnixTimestamp64Micro({{a{i}:Int64}}, 'UTC') AND "
                                 f"bucket_start < fromUnixTimestamp64Micro({{b{i}:Int64}}, 'UTC'))")
    sql = (query_text("highest_price").replace("{rollup_ranges}", " OR ".join(rollup_ranges) or "0")
           .replace("{tick_ranges}", " OR ".join(tick_ranges) or "0"))
    return sql, parameters


def _check_question(symbol: str, start_us: int, end_us: int) -> None:
    """A symbol a tick could carry, and a range that is not empty."""
    problem = symbol_problem(symbol)
    if problem:
        raise HistoryError(problem)
    if start_us >= end_us:
        raise HistoryError(f"the range is empty: from ({format_utc(start_us)}) must be before to ({format_utc(end_us)})")


def _check_known(store: Store, symbol: str) -> None:
    """Called when a question found nothing: tells an unknown symbol from an empty range."""
    if not store.query("symbol_known", symbol=symbol)[0]["known"]:
        raise NotFound(f"unknown symbol {symbol!r}: the store holds no tick or rollup of it")


def highest(store: Store, symbol: str, start_us: int, end_us: int) -> tuple[float, int]:
    """(highest price, first event time it was reached, µs) of `symbol` over [start_us, end_us)."""
    _check_question(symbol, start_us, end_us)
    resolutions = [s * 1_000_000 for s in store.settings.rollup_resolutions_seconds()]
    sql, parameters = _highest_sql(cover(start_us, end_us, resolutions))
    rows = store.rows(sql, {"symbol": symbol, **parameters})
    if rows:
        return float(rows[0][0]), int(rows[0][1])
    _check_known(store, symbol)
    raise NotFound(f"no ticks of {symbol} in [{format_utc(start_us)}, {format_utc(end_us)})")


def bars(store: Store, symbol: str, resolution_s: int, start_us: int, end_us: int) -> list[dict]:
    """The rollup rows of `symbol` at one resolution whose buckets start in [start_us, end_us)."""
    _check_question(symbol, start_us, end_us)
    stored = store.settings.rollup_resolutions_seconds()
    if resolution_s not in stored:
        raise HistoryError(f"no rollups at {resolution_s} s; the resolutions are "
                           f"{', '.join(f'{r} s' for r in stored)} (STOCKMAX_ROLLUP_RESOLUTIONS)")
    rows = store.query("bars", symbol=symbol, resolution_s=resolution_s, from_us=start_us, to_us=end_us)
    if not rows:
        _check_known(store, symbol)
    return rows

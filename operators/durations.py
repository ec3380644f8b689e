"""Window lengths as people write them: 1ms, 500ms, 1s, 5m, 1h, 24h."""

from __future__ import annotations

import functools
import re

_UNITS_US = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h)\s*$")
_SPAN_PATTERN = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
MAX_WINDOW_US = 24 * 3_600_000_000


def parse_duration_us(text: str) -> int:
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 1s, 5m, 1h)")
    value = int(match.group(1)) * _UNITS_US[match.group(2)]
    if not 1_000 <= value <= MAX_WINDOW_US:
        raise ValueError(f"window {text!r} is outside 1ms .. 24h")
    return value


def parse_span_us(text: str) -> int:
    """A length of time for a question about history (e.g. 5m, 36h, 30d): positive, no upper bound."""
    match = _SPAN_PATTERN.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a length of time: {text!r} (use e.g. 500ms, 5m, 1h, 30d)")
    return int(match.group(1)) * _UNITS_US[match.group(2)]


@functools.lru_cache(maxsize=256)  # called for every max update, with a handful of distinct windows
def format_duration(us: int) -> str:
    for unit in ("h", "m", "s", "ms"):
        if us % _UNITS_US[unit] == 0:
            return f"{us // _UNITS_US[unit]}{unit}"
    raise ValueError(f"{us} µs is not a whole number of milliseconds")


def parse_windows(text: str) -> tuple[int, ...]:
    """'1s,1m,5m,1h' -> sorted distinct lengths in µs."""
    windows = sorted({parse_duration_us(part) for part in text.split(",") if part.strip()})
    if not windows:
        raise ValueError("no windows configured")
    return tuple(windows)

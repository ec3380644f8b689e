"""Event times as people write them: ISO-8601 UTC or epoch microseconds, in and out."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def parse_utc_us(text: str) -> int:
    """ISO-8601 (UTC unless it says otherwise) or integer epoch µs -> epoch µs."""
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO-8601 (e.g. 2026-01-05T14:30:00Z) nor epoch microseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // timedelta(microseconds=1)  # exact: no float on the way


def format_utc(us: int) -> str:
    """Epoch µs -> ISO-8601 UTC with microseconds, e.g. 2026-01-05T14:30:00.123456Z."""
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

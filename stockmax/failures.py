"""Failures on purpose, for the recovery tests (STOCKMAX_FAIL_AT_TICKS)."""

from __future__ import annotations

import os


class InjectedFailure(RuntimeError):
    """Raised on purpose (STOCKMAX_FAIL_AT_TICKS) to prove that the job recovers exactly once."""


class FailureInjector:
    """Fails once at each configured tick count of an attempt. A marker file per point remembers that it
    fired: Flink state would be restored to before the failure and make it fire again, forever."""

    def __init__(self, points: tuple[int, ...], marker_dir: str) -> None:
        self.points = set(points)
        self.marker_dir = marker_dir
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks in self.points:
            marker = os.path.join(self.marker_dir, f"failed-at-{self.ticks}")
            if not os.path.exists(marker):
                os.makedirs(self.marker_dir, exist_ok=True)
                open(marker, "w").close()
                raise InjectedFailure(f"injected failure at tick {self.ticks} (STOCKMAX_FAIL_AT_TICKS)")

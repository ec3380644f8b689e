"""Everything stockmax keeps for one symbol, driven by ticks and the event-time frontier.

The frontier is what the watermark guarantees: every tick with event_time < frontier has arrived.
(A Flink watermark W in ms gives frontier = (W + 1) * 1000 µs.)
"""

from __future__ import annotations

from .reorder import ReorderBuffer
from .rollups import RollupBuilder
from .spikes import SpikeDetector
from .tick import Tick


class SymbolProcessor:
    __slots__ = ("pending", "spikes", "rollups")

    def __init__(self, spike_threshold_pct: float, spike_window_ms: int, rollup_resolution_s: int) -> None:
        self.pending = ReorderBuffer()
        self.spikes = SpikeDetector(spike_threshold_pct, spike_window_ms * 1000)
        self.rollups = RollupBuilder(rollup_resolution_s)

    def accept(self, tick: Tick, frontier_us: int) -> bool:
        """Buffer a tick; False when it is late (its time is already behind the frontier): not applied."""
        if tick.event_time < frontier_us:
            return False
        self.pending.push(tick)
        return True

    def advance(self, frontier_us: int) -> tuple[list[dict], list[dict]]:
        """Apply every buffered tick below the frontier in order; return (alerts, closed rollups)."""
        alerts = []
        for tick in self.pending.release_before(frontier_us):
            alerts.extend(self.spikes.on_tick(tick))
            self.rollups.add(tick)
        return alerts, self.rollups.close_before(frontier_us)


def frontier_from_watermark_ms(watermark_ms: int) -> int:
    return (watermark_ms + 1) * 1000

"""Runs the pure operators over ticks in arrival order, as the job would with no tick late: the reference
a Flink run is compared with (the operators themselves are checked against the oracle elsewhere)."""

from __future__ import annotations

from stockmax.operators.symbol import Rules, SymbolProcessor
from stockmax.operators.tick import Tick

END_OF_INPUT = 2**62


def run_processor(arrivals: list[Tick], rules: Rules) -> dict[str, list]:
    processors, outcome = {}, {"alerts": [], "max_updates": [], "rollups": [], "rejected": []}
    for tick in arrivals:
        p = processors.setdefault(tick.symbol, SymbolProcessor(rules.for_symbol(tick.symbol)))
        reason = p.accept(tick, -END_OF_INPUT)
        if reason:
            outcome["rejected"].append((reason, tick))
    for p in processors.values():
        out = p.advance(END_OF_INPUT)
        outcome["alerts"] += out.alerts
        outcome["max_updates"] += out.max_updates
        outcome["rollups"] += out.rollups
    return outcome

"""Runs the pure operators over ticks in arrival order, as the job would with no tick late: the reference
a Flink run is compared with (the operators themselves are checked against the oracle elsewhere)."""

from __future__ import annotations

import orjson

from stockmax.operators.columnar import advance_symbols
from stockmax.operators.symbol import Rules, SymbolProcessor
from stockmax.operators.tick import Tick
from stockmax.operators.wire import OUTPUT_KINDS, decode_outputs, encode_outputs

END_OF_INPUT = 2**62


def keyed_values(kind: str, records: list) -> list[tuple[str, dict]]:
    """A StepOutputs kind's records as (key, value), through the wire format (encoded, then read by its
    reference decoder), as they leave the job."""
    rows = encode_outputs({k: records if k == kind else [] for k in OUTPUT_KINDS})
    return [(key, orjson.loads(value)) for key, value in decode_outputs(rows, kind)]


def values_of(kind: str, records: list) -> list[dict]:
    return [value for _, value in keyed_values(kind, records)]


def run_processor(arrivals: list[Tick], rules: Rules, columnar: bool = False) -> dict[str, list]:
    """columnar: every symbol advanced at once by operators.columnar instead of each by its own advance."""
    processors, outcome = {}, {"alerts": [], "max_updates": [], "rollups": [], "rejected": []}
    for tick in arrivals:
        p = processors.setdefault(tick.symbol, SymbolProcessor(rules.for_symbol(tick.symbol)))
        reason = p.accept(tick, -END_OF_INPUT)
        if reason:
            outcome["rejected"].append((reason, tick))
    if columnar:
        lines = advance_symbols(list(processors.items()), END_OF_INPUT, min_columnar_ticks=0)
        for kind in ("alerts", "max_updates", "rollups"):
            outcome[kind] = values_of(kind, getattr(lines, kind))
        return outcome
    for p in processors.values():
        out = p.advance(END_OF_INPUT)
        outcome["alerts"] += out.alerts
        outcome["max_updates"] += out.max_updates
        outcome["rollups"] += out.rollups
    return outcome

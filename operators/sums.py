"""Sums of floats that do not depend on the order or grouping of their terms: every path that adds the same
values (tick by tick, or column-wise in runs of any length, before or after a restore) gives the same bits.

A sum is kept as a short list of floats whose exact (real-number) sum is the exact sum of every value added;
its value is that exact sum correctly rounded (math.fsum, which is exact for any list). Adding values appends
them; now and then the list is folded into its few exact terms.
"""

from __future__ import annotations

import math
from typing import Iterable

# A list longer than this is folded (exact_terms) when values are added to it.
FOLD_AT = 32


def exact_terms(values: Iterable[float]) -> list[float]:
    """A few floats whose exact sum is exactly the sum of values: the correctly rounded sum, then the correctly
    rounded rest, and so on until nothing is left (one or two terms, almost always)."""
    values = list(values)
    terms: list[float] = []
    while True:
        rest = math.fsum(values + [-term for term in terms])
        if rest == 0.0:
            return terms
        terms.append(rest)


def add(terms: list[float], values: Iterable[float]) -> list[float]:
    """terms (of a sum) with values added, folded when long."""
    terms.extend(values)
    return exact_terms(terms) if len(terms) > FOLD_AT else terms


def value(terms: list[float]) -> float:
    """The sum, correctly rounded."""
    return math.fsum(terms)

"""stockmax: sliding max/min, spike alerts and rolled-up history for market ticks on Apache Flink."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# The product layout keeps operators/ and jobs/ at the top of the checkout; they are this package's
# subpackages stockmax.operators and stockmax.jobs. A wheel install copies them in (pyproject.toml maps
# them); from a source checkout (editable install, `python -m` at the root, a Flink worker with the
# checkout on its PYTHONPATH) this finds them in place, however the interpreter was started.
_checkout = _Path(__file__).resolve().parents[1]
if (_checkout / "pyproject.toml").is_file() and (_checkout / "operators" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - __path__ is defined for packages

#!/usr/bin/env bash
# The test command (make test, .ci/run). pytest exits 5 when it collected no test: that is a failure here.
# Two workers (pytest-xdist), each with its own broker: most of a test's time is spent waiting on JVMs,
# brokers and checkpoints, so two at a time fit two cores; worksteal evens out the long ones. Arguments
# after ours win (-n 0: one process).
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -n 2 --dist worksteal "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "run-tests: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$code"

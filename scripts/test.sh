#!/usr/bin/env bash
# Runs the whole test suite on a real Postgres (embedded unless DATABASE_URL is set).
# Exit status is pytest's, except that "no tests ran" (5) is a failure too.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
"$BIN/python" -m pytest -q -rs "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "No tests ran: that is a failure." >&2
  exit 1
fi
exit "$status"

#!/usr/bin/env bash
# Runs the whole test suite on a real Postgres (embedded unless DATABASE_URL is set),
# then the push-path tier on Postgres 17 with real pg_cron and pg_net, measuring which
# lines of django_autoembed ran (`make coverage` reports them against the floor).
# "No tests ran" (pytest's 5) is a failure too.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"

run() {
  "$BIN/python" -m pytest -q -rs "$@"
  local status=$?
  if [ "$status" -eq 5 ]; then
    echo "No tests ran: that is a failure." >&2
    return 1
  fi
  return "$status"
}

run --cov --cov-report= --cov-fail-under=0 -m "not pgcron and not soak" "$@" || exit $?
AUTOEMBED_PUSH_TIER=1 run --cov --cov-append --cov-report= --cov-fail-under=0 -m pgcron tests/integration/test_push_path.py || exit $?

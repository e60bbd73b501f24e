#!/usr/bin/env bash
# The rest of tox.ini's matrix: Django 6 on Python 3.12 and 3.13, core suite.
# The interpreters are looked up directly (PATH first, then pyenv's versions, found from
# the pyenv command's own location rather than from HOME, which CI may leave empty), and
# their folders go first on PATH for tox. A missing interpreter is an error: the matrix
# is how Django 6 support is proved.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"

roots=()
[ -n "${PYENV_ROOT:-}" ] && roots+=("$PYENV_ROOT")
if command -v pyenv >/dev/null; then
  roots+=("$(cd "$(dirname "$(readlink -f "$(command -v pyenv)")")/.." && pwd)")
fi
roots+=("${HOME:-/nonexistent}/.pyenv" /root/.pyenv /opt/pyenv)

find_python() {  # find_python 3.12 -> a path to a real python3.12, or nothing
  local version=$1 found root candidate
  found=$(command -v "python$version" 2>/dev/null || true)
  if [ -n "$found" ] && "$found" -c 'import sys' 2>/dev/null; then
    echo "$found"
    return
  fi
  for root in "${roots[@]}"; do
    for candidate in "$root"/versions/"$version".*/bin/"python$version"; do
      if [ -x "$candidate" ] && "$candidate" -c 'import sys' 2>/dev/null; then
        echo "$candidate"
        return
      fi
    done
  done
}

path_prefix=""
for version in 3.12 3.13; do
  python=$(find_python "$version")
  if [ -z "$python" ]; then
    echo "test-matrix: no python$version found on PATH or under ${roots[*]}/versions." >&2
    echo "Install it (for example: pyenv install $version) and run make test-matrix again." >&2
    exit 1
  fi
  echo "test-matrix: python$version is $python"
  path_prefix="$path_prefix$(dirname "$python"):"
done

PATH="$path_prefix$PATH" "$BIN/tox" -e py312-django6,py313-django6 -- "$@"

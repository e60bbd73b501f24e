#!/usr/bin/env bash
# Build the sdist and wheel, check their metadata, then install the wheel into a fresh
# venv and run one end-to-end test against it, away from the source tree: a file left
# out of the package (SQL, migrations, py.typed) fails here, not on a user's machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${VENV:-.venv}/bin"
PYTHON="${PYTHON:-python3.11}"

rm -rf dist
"$BIN/python" -m build --outdir dist . >/dev/null
"$BIN/twine" check --strict dist/*

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
wheel=$(ls dist/*.whl)
"$work/venv/bin/pip" install -q "${wheel}[test]"
# The tests and the example project, without the package's source beside them.
cp -r tests example_project manage.py pyproject.toml "$work/"
cd "$work"
venv/bin/python - <<'PY'
import importlib.metadata

import django_autoembed
assert "site-packages" in django_autoembed.__file__, django_autoembed.__file__
# The version is kept in one place: the metadata reads it from the package.
assert importlib.metadata.version("django-autoembed") == django_autoembed.__version__
PY
venv/bin/python -m pytest -q -p no:cacheprovider \
  "tests/integration/test_user_paths.py::test_startproject_with_one_installed_apps_line_goes_from_makemigrations_to_vectors"

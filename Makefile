# The two commands the README promises: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test coverage lint test-matrix typecheck package install install-local install-dev install-docs docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"

install-local: install
	# torch 2.13.0 is the CPU wheel; an unpinned torch would pull a CUDA build.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test,local]"

demo: install-local
	$(BIN)/python manage.py migrate --verbosity 0
	$(BIN)/python example_project/demo.py

test: install-local
	bash scripts/test.sh

# The lines of django_autoembed the last `make test` ran (subprocesses included),
# with the floor set in pyproject.toml.
coverage: install-dev
	$(BIN)/coverage report

install-dev: install
	$(BIN)/pip install -q ruff mypy django-stubs coverage pytest-cov build twine tox

PY_SOURCES := django_autoembed tests bench example_project docs manage.py

lint: install-dev
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)

# mypy with django-stubs over the package, with its strict flags (pyproject.toml), in
# the environment the package runs in: the local provider's libraries installed too.
typecheck: install-local install-dev
	$(BIN)/mypy django_autoembed

# The rest of tox.ini's matrix: Django 6 on Python 3.12 and 3.13 (core suite); the
# script finds the interpreters even where HOME is empty and pyenv's shims cannot.
test-matrix: install-dev
	bash scripts/test-matrix.sh -m "not pgcron and not soak"

# The package as users get it: build, check the metadata, install the wheel into a
# fresh venv and run one end-to-end test there (a missed package-data file fails it).
package: install-dev
	bash scripts/package.sh

# The documentation site (docs/), every warning an error; its code examples run in
# `make test` (tests/test_docs.py).
install-docs: install
	$(BIN)/pip install -q -e ".[test,docs]"

docs: install-docs
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "The docs are in docs/_build/html/index.html"

bench: install-local
	$(BIN)/pip install -q matplotlib gunicorn
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV)

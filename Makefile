# The two commands the README promises: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-matrix typecheck install install-local bench clean

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

# mypy with django-stubs over the package (STYLE.md).
typecheck: install
	$(BIN)/pip install -q mypy django-stubs
	$(BIN)/mypy django_autoembed

# The rest of tox.ini's matrix: Django 6 on Python 3.12 and 3.13 (core suite;
# tox skips an interpreter this machine lacks).
test-matrix: install
	$(BIN)/pip install -q tox
	$(BIN)/tox -e py312-django6,py313-django6 -- -m "not pgcron and not soak"

bench: install
	$(BIN)/pip install -q matplotlib
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV)

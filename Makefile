# The two commands of README's quick start, on a fresh Linux machine with python3 >= 3.10:
#
#   make demo    # first use: creates .venv and installs the project; then `clipinspect demo`
#   make test    # same environment; runs `python -m pytest` (what .ci/run runs)
#   make lint    # ruff check + ruff format --check (config in pyproject.toml; .ci/run runs it)
#   make format  # ruff format + ruff check --fix: what `make lint` wants
#
# Pass options through ARGS, e.g. `make test ARGS="-x -q tests/deploy"` or
# `make demo ARGS="--source folder"`. PYTHON picks the interpreter that creates the venv.
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= train,export,edge,dev
ARGS ?=
# Reinstalled when pyproject.toml changes (new dependency, new entry point).
STAMP := $(VENV)/.installed

.PHONY: demo test lint format venv clean-venv

demo: $(STAMP)
	$(VENV)/bin/clipinspect demo $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/python -m ruff check .
	$(VENV)/bin/python -m ruff format --check .

format: $(STAMP)
	$(VENV)/bin/python -m ruff format .
	$(VENV)/bin/python -m ruff check --fix .

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "clipinspect needs python3 >= 3.10; this is " + sys.version.split()[0] + " (make PYTHON=python3.11 ...)")'
	@{ $(PYTHON) -m venv --help && $(PYTHON) -c "import ensurepip"; } >/dev/null 2>&1 || { echo "make: $(PYTHON) has no venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[$(EXTRAS)]'
	@touch $@

clean-venv:
	rm -rf $(VENV)

# Two entry points for a newcomer: `make demo` and `make test`. Each sets itself up (a virtualenv in
# .venv with the project installed) and is idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-deps lint bench setup compile clean

# Debian packages the tests drive for real, as command:package. PostgreSQL itself is not installed
# here: the tests expect a server on 127.0.0.1:5432 (README).
TEST_TOOLS := chromium:chromium redis-server:redis-server chattr:e2fsprogs setpriv:util-linux

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(MAKE) compile
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

# An editable install compiles nothing: byte-compile the project as a wheel's install would, so a CLI
# call run with PYTHONDONTWRITEBYTECODE set does not compile its ~90 modules again (~0.1 CPU s a call).
compile:
	$(BIN)/python -m compileall -q app tasks workers

demo: $(STAMP)
	$(BIN)/python -m workers.demo

# Two pytest processes (pytest-xdist): most tests wait on subprocesses, servers and disks, so two keep
# both cores busy; TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

test: lint test-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Installs the missing ones as root with apt-get; otherwise names them and the command, and stops.
test-deps:
	@missing=""; for tool in $(TEST_TOOLS); do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || missing="$$missing $${tool#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing Debian packages the tests use:$$missing"; \
	    apt-get update -qq && apt-get install -y -qq $$missing; \
	  else \
	    echo "make: the tests need these Debian packages:$$missing; install them with" >&2; \
	    echo "  sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check app tasks workers tests bench migrations celeryconfig.py
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .demo

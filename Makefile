# Everything the project needs is installed by these targets into .venv, with the machine's python3.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PG_URL ?= postgres://postgres@127.0.0.1:5432/convexa
SANDBOX_PORT ?= 8787
# Run once, on SQLite: the browser and the HTTP load test check the UI and gunicorn, not the database.
PG_SKIP := --ignore=tests/admin/test_browser.py --ignore=tests/e2e/test_load.py

.PHONY: install demo test test-sqlite test-postgres serve worker sandbox bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q ".[dev]"
	touch $@

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput

demo: install
	@bash scripts/demo.sh

test: install
	$(PY) -m pytest
	@if $(PY) scripts/pg_ready.py "$(PG_URL)"; then \
		echo "== PostgreSQL reachable: running the suite again on $(PG_URL)"; \
		DATABASE_URL="$(PG_URL)" $(PY) -m pytest $(PG_SKIP); \
	else \
		echo "== PostgreSQL not reachable at $(PG_URL): suite ran on SQLite only"; \
	fi

test-sqlite: install
	$(PY) -m pytest

test-postgres: install
	DATABASE_URL="$(PG_URL)" $(PY) -m pytest $(PG_SKIP)

serve: migrate
	exec $(VENV)/bin/gunicorn -c gunicorn.conf.py

worker: migrate
	$(PY) manage.py run_skiptrace_worker

sandbox: install
	$(PY) manage.py batchdata_sandbox --port $(SANDBOX_PORT)

bench: install
	$(PY) scripts/bench.py

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) data/test_convexa.db*

# Trader V3 — `make run` starts the trader on the embedded default; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest migrate exchange bench clean

# The first run installs for about half a minute: say so, and let pip show each package as it goes.
$(STAMP): requirements.txt requirements-dev.txt
	@echo "== installing Trader V3 into $(VENV) (first run only: about 30 s) =="
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -r requirements-dev.txt
	@echo "== installed =="
	touch $(STAMP)

migrate: $(STAMP)
	$(BIN)/python manage.py migrate --noinput

run: migrate
	$(BIN)/python manage.py runtrader $(ARGS)

exchange: migrate
	$(BIN)/python manage.py runexchange $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# Trader V3 — `make run` starts the trader on the embedded default; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The suite waits (processes starting, sockets, timers), so it runs in more workers than there are cores; but each
# worker imports and collects the whole suite (about 1.5 s of CPU), and CPU is what a shared 2-core machine runs
# short of. Three alternating runs each of pytest: 5 workers 34.3 s median wall, 4 workers 37.1 s at the same CPU;
# 6 workers 36.9 s with 16 % more CPU than 5.
PYTEST_WORKERS ?= 5

.PHONY: run test lint typecheck pytest compile migrate exchange bench clean

# The first run installs for about half a minute: say so, and let pip show each package as it goes.
$(STAMP): requirements.txt requirements-dev.txt
	@echo "== installing Trader V3 into $(VENV) (first run only: about 30 s) =="
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --disable-pip-version-check --progress-bar on -r requirements-dev.txt
	@echo "== installed =="
	touch $(STAMP)

# Where PYTHONDONTWRITEBYTECODE is set Python never saves the project's compiled modules, and every start
# compiles them again (a quarter of a second of a trader's launch); compiled here once, as pip does for libraries.
compile: $(STAMP)
	@$(BIN)/python -m compileall -q apps trader_v3

migrate: compile
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
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Lint first (a second), then the type check beside the tests: mypy's output waits until pytest is done and
# either failing fails the target.
test: lint
	@out=$$(mktemp); $(BIN)/mypy . >$$out 2>&1 & mypy=$$!; \
	$(MAKE) --no-print-directory pytest; tests=$$?; \
	wait $$mypy; types=$$?; echo "$(BIN)/mypy ."; cat $$out; rm -f $$out; \
	test $$tests -eq 0 -a $$types -eq 0

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

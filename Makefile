# Two commands from a fresh clone: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck unit bench faults soak clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The broker tests mostly wait (group joins, retry schedules): four workers, each with its own
# broker, keep both cores busy.
# The browser tests run last, on two workers: Chromium beside the broker tests that measure
# rates and timings made those miss their bounds on two cores.
test: lint typecheck browser
	$(BIN)/pytest -n 4 --dist worksteal -m 'not browser'
	$(BIN)/pytest -n 2 -m browser

# The portal's browser tests drive the system's Chromium (Playwright's own download does not
# work everywhere this runs); installed with the system's package manager when missing.
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
		echo "Chromium is missing: installing it with apt-get (the portal's browser tests need it)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

unit: $(STAMP)
	$(BIN)/pytest -m 'not kafka' -n 2

demo: $(STAMP)
	$(BIN)/python -m tools.demo $(if $(DURATION),--duration $(DURATION),)

bench: $(STAMP)
	$(BIN)/python -m bench.e2e

# The fault-injection suite at full size (docs/reliability.md); `make test` runs it short.
faults: $(STAMP)
	$(BIN)/python -m tools.faults

# A steady mixed load for DURATION minutes (default 35), sampled every 10 s; plot and numbers
# in bench/results/soak/.
soak: $(STAMP)
	$(BIN)/python -m tools.faults.soak $(if $(DURATION),--minutes $(DURATION),)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

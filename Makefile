# `make quickstart` and `make test` set up .venv themselves when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: quickstart test test-fast soak bench clean-runs browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/pretrainlab study configs/quickstart.yaml

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# the study page (`report --html`) is tested in headless Chromium: Debian's package, installed once
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# the long reliability run: five kills per workload and the large bad-input corpus (issue 14)
soak: $(STAMP)
	PRETRAINLAB_SOAK=1 $(BIN)/python -m pytest -q -s tests/soak tests/corpus

# every benchmark, then benchmarks/results.md (benchmarks/README.md); editable, so the install stays the checkout
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/run_all.py

clean-runs:
	rm -rf runs

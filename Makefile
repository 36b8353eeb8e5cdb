# mtbc — one command builds the book, one command runs the tests.
#   make book        build the HTML book into _build/html (offline; no BUSI data needed)
#   make test        run the whole test suite (unit, real-data, papermill smoke, browser)
#   make test-fast   the unit tests only (tests/<package>/, no real data, no browser)
#   make lab         open JupyterLab on the notebook templates
#   make reproduce   re-run everything from the raw data (hours on a CPU): needs MTBC_DATA
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book test test-fast lab reproduce audit grid recipe leakage chromium clean

# (Re)create the environment when it is missing or the pins changed.
$(STAMP): pyproject.toml requirements-lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements-lock.txt -e '.[test,fast-png]'
	@touch $@

book: $(STAMP)
	$(BIN)/mtbc book build

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow and not data and not browser" --ignore=tests/integration --ignore=tests/browser

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# Headless Chromium for the browser tests (Debian package; nothing downloads its own browser).
# Installed only when asked (INSTALL_CHROMIUM=1, as CI does); otherwise a missing one stops
# `make test` with the one command to run.
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$(INSTALL_CHROMIUM)" = 1 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make: chromium is missing for the browser tests: run 'sudo apt-get install chromium' (or make test INSTALL_CHROMIUM=1 as root)" >&2; exit 1; fi; }

reproduce: $(STAMP)
	@if [ -z "$$MTBC_DATA" ]; then \
	  echo "make reproduce: set MTBC_DATA to the BUSI folder holding benign/ malignant/ normal/ (Dataset_BUSI_with_GT, Al-Dhabyani et al. 2020; see README.md), e.g. make reproduce MTBC_DATA=../shared/data/BUSI" >&2; exit 2; fi
	@test -d "$$MTBC_DATA" || { echo "make reproduce: MTBC_DATA=$$MTBC_DATA is not a folder (expected the BUSI folder holding benign/ malignant/ normal/)" >&2; exit 2; }
	$(MAKE) audit recipe grid leakage book

# Executed notebooks for the book, each stamped with the machine it ran on (the chapters that
# read the data take it from $MTBC_DATA).
book/%.ipynb: notebooks/%.ipynb
	$(BIN)/mtbc book chapter $*

audit: $(STAMP)
	$(MAKE) -B book/dataset_audit.ipynb book/duplicate_explorer.ipynb

# The committed ablation grids: the campaign (the paper's U-Net++ and nnU-Net, six trainings
# each under the cpu profile: the results chapter's grids until a replica or paper grid is
# complete), then the grids made with the project's first networks (ResNet-34 U-Net++: all six
# trainings; planned nnU-Net: ST(Seg), ST(Cls), MT+DO; the U-Net++ MT+DO again under the steady
# profile, for the appendix's learning-rate comparison).
grid: $(STAMP)
	$(BIN)/mtbc grid --backbone unetplusplus --profile cpu --data "$$MTBC_DATA"
	$(BIN)/mtbc grid --backbone nnunet --profile cpu --data "$$MTBC_DATA"
	$(BIN)/mtbc grid --backbone unetplusplus-r34 --data "$$MTBC_DATA"
	$(BIN)/mtbc grid --backbone nnunet-planned --settings st-seg st-cls mt-do --data "$$MTBC_DATA"
	$(BIN)/mtbc grid --backbone unetplusplus-r34 --profile steady --settings mt-do --data "$$MTBC_DATA"
	$(BIN)/mtbc claims unetplusplus cpu nnunet cpu
	$(MAKE) -B book/results.ipynb book/appendix.ipynb

# The recipe study (fold 0, validation only) and the leakage study (raw BUSI, two split designs).
recipe: $(STAMP)
	$(BIN)/mtbc recipe --data "$$MTBC_DATA"
	$(MAKE) -B book/recipe.ipynb

leakage: $(STAMP)
	$(BIN)/mtbc leakage --data "$$MTBC_DATA"
	$(MAKE) -B book/leakage.ipynb

clean:
	rm -rf _build

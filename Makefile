# meprop: the two commands of the README, and the set-up they share.
#   make report   set up (first time only), run the quick benchmark, build the HTML report
#   make test     set up (first time only), run the test suite
# GPU users: install your own torch into .venv first, then pass CONSTRAINTS= (see README).

PYTHON      ?= python3
VENV        ?= .venv
CONSTRAINTS ?= constraints.txt
PROFILE     ?= quick
RESULTS     ?= results/$(PROFILE)
REPORT      ?= reports/$(PROFILE)
PYTEST_ARGS ?=

PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.meprop-setup
PIP_C  := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

.PHONY: setup report bench test clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS) scripts/setup_data.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_C) -e '.[dev]'
	bash scripts/setup_data.sh $(PY)
	touch $(STAMP)

bench: setup
	$(PY) -m meprop bench --profile $(PROFILE) --out $(RESULTS) --resume

report: bench
	$(PY) -m meprop report $(RESULTS) --out $(REPORT)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

clean-results:
	rm -rf $(RESULTS) $(REPORT)

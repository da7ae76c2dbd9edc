# meprop: the two commands of the README, and the set-up they share.
#   make report   set up (first time only), run the quick benchmark, build the HTML report
#   make test     set up (first time only), run the test suite
# More:
#   make paper    the paper's quick training presets (MNIST, POS); `make report` then includes them
#   make converge the quick time-to-accuracy presets (`make report` runs them: "Does it pay off?")
#   make asv      asv benchmarks for HEAD in this environment, published offline into reports/asv
#   make kernels  (re)build the compiled CPU kernels (part of setup)
#   make gpu-check  CUDA tests, tuning on CUDA, a short CUDA benchmark and its report (< 8 min, one GPU)
# GPU users: install your own torch into .venv first, then pass CONSTRAINTS= (see README).

PYTHON      ?= python3
VENV        ?= .venv
CONSTRAINTS ?= constraints.txt
PROFILE     ?= quick
RESULTS     ?= results/$(PROFILE)
TRAIN_RESULTS ?= results/paper-quick
REPORT      ?= reports/$(PROFILE)
PAPER_PRESETS ?= mnist-adam mnist-unified mnist-table3 pos-adam
CONVERGE_PRESETS ?= mnist-adam pos-adam lm mnist-width
CONVERGE_RESULTS ?= results/converge-quick
PYTEST_ARGS ?=

PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.meprop-setup
KERNELS := $(VENV)/.meprop-kernels
PIP_C  := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

.PHONY: setup kernels report bench paper converge asv asv-compare test gpu-check clean-results

setup: $(STAMP) $(KERNELS)

$(STAMP): pyproject.toml $(CONSTRAINTS) scripts/setup_data.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PIP_C) -e '.[dev]'
	bash scripts/setup_data.sh $(PY)
	touch $(STAMP)

# The compiled CPU kernels (meprop/kernels), built into the user cache (TORCH_EXTENSIONS_DIR,
# else ~/.cache/meprop/kernels; MEPROP_KERNELS_DIR moves it): rebuilt when their source changes; a failed
# build is reported and meprop runs on its PyTorch path (it warns once at first use).
$(KERNELS): $(STAMP) $(wildcard meprop/kernels/csrc/*.cpp meprop/kernels/csrc/*.h) meprop/kernels/_build.py
	$(PY) -m meprop.kernels build --quiet && touch $(KERNELS) || true

kernels: $(KERNELS)

bench: setup
	$(PY) -m meprop bench --profile $(PROFILE) --out $(RESULTS) --resume

report: bench converge
	$(PY) -m meprop report $(RESULTS) $(CONVERGE_RESULTS) $(wildcard $(TRAIN_RESULTS)) --out $(REPORT)

# Time to accuracy (docs/time_to_accuracy.md): the quick presets, dense and meProp side by side.
converge: setup
	for preset in $(CONVERGE_PRESETS); do \
		$(PY) -m meprop converge --preset $$preset --quick --quiet --out $(CONVERGE_RESULTS) --resume || exit 1; \
	done

paper: setup
	for preset in $(PAPER_PRESETS); do \
		$(PY) -m meprop train --preset $$preset --quick --out $(TRAIN_RESULTS)/$$preset.jsonl --resume || exit 1; \
	done

asv: setup
	$(PY) -m asv machine --yes
	$(PY) -m asv run --python=same --set-commit-hash=$$(git rev-parse HEAD)
	MEPROP_PYTHON=$(PY) bash scripts/asv_publish.sh reports/asv

asv-compare: setup  # BASE=<commit> HEAD=<commit>; the factor suits a shared 2-core machine
	$(PY) -m asv compare --factor 1.3 $(BASE) $(HEAD)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

gpu-check: setup
	bash scripts/gpu_check.sh $(PY) cuda

clean-results:
	rm -rf $(RESULTS) $(REPORT)

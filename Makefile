# meprop: the two commands of the README, and the set-up they share.
#   make report   set up (first time only), run the quick benchmark and two quick time-to-accuracy
#                 presets, build the HTML report (244 s measured on a fresh clone, idle 2-core machine)
#   make test     set up (first time only), run the test suite
# More:
#   make report PROFILE=standard CONVERGE_PRESETS=all   the fuller grid and every preset (README, Profiles)
#   make paper    the paper's quick training presets (MNIST, POS); `make report` then includes them
#   make converge the quick time-to-accuracy presets (`make report` runs them: "Does it pay off?")
#   make studies-report  the report of the long time-to-accuracy runs kept in studies/ (measures nothing)
#   make first-run-time  time `make report` on a fresh clone of HEAD (own venv, no pip or kernel cache)
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
# the time-to-accuracy presets `make report` runs (their quick plans: 2 seeds each); all: every preset
CONVERGE_PRESETS ?= mnist-adam pos-adam
CONVERGE_RESULTS ?= results/converge-quick
PYTEST_ARGS ?=

PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.meprop-setup
KERNELS := $(VENV)/.meprop-kernels
DEV    := $(VENV)/.meprop-dev
PIP_C  := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
# --no-compile: pip would byte-compile all of torch (about a minute of CPU); Python compiles
# the modules a run imports on first use instead
PIP    := $(PY) -m pip install --quiet --no-compile
# CONVERGE_PRESETS=all: every preset of meprop.lab.converge.presets (read once set up)
CONVERGE_LIST = $(if $(filter all,$(CONVERGE_PRESETS)),$(shell $(PY) -c \
	'from meprop.lab.converge.presets import CONVERGENCE_PRESETS as p; print(*p)'),$(CONVERGE_PRESETS))

.PHONY: setup kernels report report-only studies-report bench paper converge asv asv-compare test gpu-check clean-results first-run-time

setup: $(STAMP) $(KERNELS)

# The lab (meprop[bench]) and the data; `make test` adds the test tools (meprop[dev]) on its first run.
$(STAMP): pyproject.toml $(CONSTRAINTS) scripts/setup_data.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) $(PIP_C) -e '.[bench]'
	bash scripts/setup_data.sh $(PY)
	touch $(STAMP)

$(DEV): $(STAMP)
	$(PIP) $(PIP_C) -e '.[dev]'
	touch $(DEV)

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

report-only:  # the page from the results already there (measures nothing)
	$(PY) -m meprop report $(RESULTS) $(CONVERGE_RESULTS) $(wildcard $(TRAIN_RESULTS)) --out $(REPORT)

# The long time-to-accuracy runs the repository keeps (studies/README.md: commands, machine, cost),
# read from their archives into one report; nothing is measured.
studies-report: setup
	$(PY) -m meprop report $(sort $(dir $(wildcard studies/*/*/results.jsonl.gz))) --out reports/studies

# Time to accuracy (docs/time_to_accuracy.md): the quick presets, dense and meProp side by side.
converge: setup
	for preset in $(CONVERGE_LIST); do \
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

test: setup $(DEV)
	$(PY) -m pytest $(PYTEST_ARGS)

gpu-check: setup $(DEV)
	bash scripts/gpu_check.sh $(PY) cuda

clean-results:
	rm -rf $(RESULTS) $(REPORT)

# A newcomer's first `make report`, timed: a fresh clone of HEAD (committed work only) in a
# temporary folder, with its own venv, data folder and kernel build, and no pip cache; each
# step's seconds, then the total (the README's "First run" figure).
first-run-time:
	@tmp=$$(mktemp -d) && git clone --quiet . "$$tmp/meprop" && cd "$$tmp/meprop" && \
	unset MEPROP_DATA_DIR TORCH_EXTENSIONS_DIR MAKEFLAGS && \
	export PIP_NO_CACHE_DIR=1 MEPROP_KERNELS_DIR="$$tmp/kernels" && \
	echo "first-run: $$(nproc) cores, load average $$(cut -d' ' -f1-3 /proc/loadavg), in $$tmp/meprop" && \
	t0=$$(date +%s) && for step in $(STAMP) kernels bench converge report-only; do \
		s=$$(date +%s); $(MAKE) --no-print-directory $$step PROFILE=$(PROFILE) \
			CONVERGE_PRESETS="$(CONVERGE_PRESETS)" PYTHON=$(PYTHON) || exit 1; \
		echo "first-run: $$step $$(( $$(date +%s) - s )) s"; done && \
	echo "first-run: make report took $$(( $$(date +%s) - t0 )) s in all (load average $$(cut -d' ' -f1-3 /proc/loadavg))"

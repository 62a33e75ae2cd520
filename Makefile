# The four steps of the MNIST CNN exercise. `make help` lists the targets.
# On a fresh machine with only Python 3 and make, `make model3` and `make test` set everything up themselves.
#   PYTHON=...    use an existing environment instead of .venv
#   DATA_DIR=...  where MNIST/raw lives (default: $MNIST_DATA_DIR, else data)
#   CLUSTER=tcp://HOST:8786  sweeps (seeds, search, ablation, frontier) run on that Dask scheduler's workers

SHELL := /bin/bash
VENV := .venv
ifeq ($(origin PYTHON), undefined)
PYTHON := $(VENV)/bin/python
ENV := $(VENV)/.installed
TEST_ENV := $(VENV)/.installed-test
else
ENV :=
TEST_ENV :=
endif
DATA_DIR ?= $(or $(MNIST_DATA_DIR),data)
export MNIST_DATA_DIR := $(DATA_DIR)
STEP ?= model3
N ?= 20
JOBS ?= 1
ARGS ?=
CLUSTER_FLAG := $(if $(CLUSTER),--cluster $(CLUSTER))

.PHONY: help setup data model1 model2 model3 model4 all test check seeds search ablation frontier report bench demo clean

help:  ## list the targets
	@grep -E '^[a-z0-9 ]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

setup: $(ENV)  ## create .venv from requirements.txt (done by every target that needs it)

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

# Playwright drives the browser test of `make demo`'s page; the browser is Debian's chromium (the test skips without).
$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-test.txt
	touch $@

data: $(ENV)  ## verify MNIST in DATA_DIR, fetching it if absent
	$(PYTHON) -c "import sys; from harness.mnist import data_command; sys.exit(data_command('$(DATA_DIR)'))"

model1 model2 model3 model4: $(ENV)  ## run a step with its defaults; fails when its targets fail
	$(PYTHON) $@.py $(ARGS)

all: model1 model2 model3 model4  ## the four steps, in order

test: $(ENV) $(TEST_ENV) data  ## the smoke run: every step trained on a small subset, and the fast unit tests
	$(PYTHON) -m pytest -q -m "not slow and not committed" tests

check: $(ENV) $(TEST_ENV) data  ## the rest: Dask clusters, the browser, killed writes, the lab's drivers, and that results/ are today's code's
	$(PYTHON) -m pytest -q -m "slow or committed" tests

seeds: $(ENV)  ## STEP over N seeds (default 20), JOBS at once: make seeds STEP=model3 N=20 JOBS=2
	$(PYTHON) $(STEP).py --seeds $(N) --jobs $(JOBS) $(CLUSTER_FLAG) $(ARGS)

search: $(ENV)  ## STEP's recipes (results/STEP/search-recipes.txt) screened on a validation split, 3 seeds each
	$(PYTHON) -m lab.search $(STEP) results/$(STEP)/search-recipes.txt --jobs $(JOBS) $(CLUSTER_FLAG) $(ARGS)

# One change at a time to the step's recipe of today, ABLATION_SEEDS seeds each: NAME:FLAGS, the flags joined by +,
# and where a variant is another script's net that script first. Every row of the table lab/report.py's ablation_rows
# makes is one of these (its ABLATION_ROWS, held equal by tests/test_ablation.py), or "full": the step's own `make
# seeds`. Rows today's code cannot make again are its history tables (HISTORY), each row with the commit that made it.
ABLATIONS_model3 := clean-0:--clean-epochs=0  rotate-7:--rotate=7  no-augment:--no-augment
ABLATIONS_model4 := scale-0:--scale=0  clean-0:--clean-epochs=0  no-augment:--no-augment  aug-5-1:--rotate=5+--shift=1
ABLATION_DIR_model3 := results/ablation
ABLATION_DIR_model4 := results/model4/ablation
# As many seeds as each step's rows were made with: step 4's rule, 9 seeds in 10, needs ten to say anything.
ABLATION_SEEDS_model3 := 3
ABLATION_SEEDS_model4 := 10
ABLATION_SEEDS ?= $(ABLATION_SEEDS_$(STEP))
# A variant failed when its run wrote no seeds.json (a seeds run writes it once every seed has completed); one that
# misses the step's seed rule exits 1 too, but having written it: a row of the table, not a failure. Written means
# another file than before (seeds.json is replaced whole: a new inode and time), not a newer time than a stamp:
# a file system's clock can give a stamp and a file written just after it the same time.
ablation: $(ENV)  ## STEP (model3 or model4) with one thing changed at a time, ABLATION_SEEDS seeds each, then the table
	@failed=; \
	for item in $(ABLATIONS_$(STEP)); do name=$${item%%:*}; flags=$${item#*:}; flags=$${flags//+/ }; \
	  script=$(STEP).py; case $$flags in *.py*) script=$${flags%%.py*}.py; flags=$${flags#*.py}; flags=$${flags# }; esac; \
	  out=$(ABLATION_DIR_$(STEP))/$$name; before=$$(stat -c '%i %.9Y' "$$out/seeds.json" 2>/dev/null); \
	  echo "=== ablation of $(STEP): $$name ($$script $${flags:-with its defaults}) ==="; \
	  $(PYTHON) $$script $$flags --seeds $(ABLATION_SEEDS) --jobs $(JOBS) $(CLUSTER_FLAG) --out $$out $(ARGS) || { \
	    after=$$(stat -c '%i %.9Y' "$$out/seeds.json" 2>/dev/null); \
	    [ -n "$$after" ] && [ "$$after" != "$$before" ]; } || failed="$$failed $$name"; done; \
	$(PYTHON) -m lab.report --ablation-only || exit; \
	if [ -n "$$failed" ]; then echo "make ablation: failed:$$failed (output above; with JOBS > 1 in each seed's" \
	  "log.txt under $(ABLATION_DIR_$(STEP))/NAME/seeds); the table was rewritten, a failed variant's row from" \
	  "its last completed run if it has one" >&2; exit 1; fi

frontier: N = 3
frontier: $(ENV)  ## steps 3 and 4 at SIZES (default 500 to 20,000 parameters), N seeds each (default 3), the 99 % club's layout (500 to 2,000) and its net: results/frontier/
	$(PYTHON) -m lab.frontier $(if $(SIZES),--sizes $(SIZES)) --seeds $(N) --jobs $(JOBS) $(CLUSTER_FLAG) $(ARGS)

demo: $(ENV)  ## a local page: draw a digit, see every step's prediction and feature maps (ARGS="--port 8080")
	$(PYTHON) demo.py $(ARGS)

report: $(ENV)  ## RESULTS.md from results/, and the Results of README and docstrings
	$(PYTHON) -m lab.report

bench: $(ENV)  ## ours against the reference pipeline (steps 3, 4, the club's net), then make model3's and model4's time: results/bench.json
	$(PYTHON) -m lab.bench $(ARGS)

clean:  ## remove the environment and caches (results and data are kept)
	rm -rf $(VENV) .pytest_cache __pycache__ tests/__pycache__

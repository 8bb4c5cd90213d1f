# Two entry points for a fresh machine (see README): `make train` and `make test`.
# Both create .venv on first use from the pins in requirements.txt.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ssq_ros-installed
BENCH_STAMP := $(VENV)/.ssq_ros-bench-installed

.PHONY: train test lint bench bench-full

$(STAMP): requirements.txt setup.py package.xml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[venv,test]'
	touch $(STAMP)

# The main job: the ROS 2 training graph in MuJoCo, headless, to the end of the default budget.
train: $(STAMP)
	$(BIN)/ssq-launch train_sim headless:=true run_dir:=runs/train_sim

# The peer benchmark (SB3, d3rlpy: the optional bench extra); BENCH_ARGS go to bench_peers.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[venv,test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m pytest -q bench/tests
	PYTHON=$(BIN)/python bench/run_all.sh $(BENCH_ARGS)

# The whole protocol: the peer table over 5 seeds, then the task suite (SSQ and its peers
# restricted to mu's support, 5 seeds x 3 budgets, the test split); resumable, hours on 2 cores.
bench-full: $(BENCH_STAMP)
	$(BIN)/python -m pytest -q bench/tests
	PYTHON=$(BIN)/python bench/run_all.sh --seeds 0 1 2 3 4 $(BENCH_ARGS)
	PYTHON=$(BIN)/python bench/run_suite.sh

lint: $(STAMP)
	$(BIN)/ruff check ssq_ros test bench launch setup.py

test: lint
	$(BIN)/python -m pytest -q

# Two commands matter (see README): `make run` (the main job on embedded defaults) and `make test`.
# Every target works on a fresh clone: the virtual environment is created on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Always run with the venv's bin first on PATH: DeepSpeed JIT-compiles its ops with whatever `ninja` comes
# first and rebuilds them (about a minute) whenever that changes.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export DVC_NO_ANALYTICS ?= 1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export DS_ACCELERATOR ?= cpu

.PHONY: install run demo test lint format clean-shm premise

# One pip command for the whole stack, torch pinned by constraints.txt (a CPU wheel on disk; anything else
# pulls a multi-GB CUDA build) and everything else by the lock file, so pip never backtracks.
$(VENV)/.installed: pyproject.toml constraints.txt requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -c requirements.lock -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# `make run SEEDS="0 1 2"`: every method trained and evaluated with three seeds, reported as mean ± sd.
run: install
	$(VENV)/bin/python -m flows.pipeline $(if $(SEEDS),--seeds $(SEEDS)) $(if $(PARALLEL),--max-parallel $(PARALLEL))

# The premise experiment (docs/premise.md): 5 methods x 5 seeds on one backbone, paired with the baseline, in a
# project of its own under experiments/ (resumable: rerun the same command). `make premise BACKBONE=embedded` also
# judges H4 against the generic backbone's kept results.
premise: install
	$(PY) bench/premise.py --backbone backbones/$(or $(BACKBONE),generic) $(if $(SEEDS),--seeds $(SEEDS)) \
		$(if $(filter embedded,$(BACKBONE)),--contrast-with docs/results/premise-generic.json)

demo: install
	$(VENV)/bin/mmp demo

# One pytest-xdist worker per core, the longest tests first (tests/conftest.py). `pytest` alone runs them in one
# process, for debugging one test.
test: install
	$(VENV)/bin/python -m pytest -q -n auto --dist loadgroup

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# The deepspeed launcher leaves all-reduce buffers in /dev/shm.
clean-shm:
	rm -f /dev/shm/deepspeed_allreduce_buffer_*

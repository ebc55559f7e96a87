PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Exact versions for the dev extras (pyproject.toml's extras carry ranges only: they are published metadata).
PIP_INSTALL := $(BIN)/python -m pip install -q -c constraints/dev.txt

FUZZ_SECONDS ?= 120

.PHONY: test lint demo venv bench fuzz mutate clean

$(STAMP): pyproject.toml constraints/dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(PIP_INSTALL) -e ".[test,zstd,zlib-ng]"
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# ruff over the whole tree and mypy over the packages, as configured in pyproject.toml. mypy reads the installed
# dependencies' annotations, so the test extras come first (the STAMP), then the lint extra.
lint: $(STAMP)
	$(PIP_INSTALL) -e ".[lint]"
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy

# make demo PORT=9200: the status page's port (default 9100; a free one when it is taken).
PORT ?= 9100

demo: $(STAMP)
	$(BIN)/python -m cluster.demo --http-port $(PORT)

bench: $(STAMP)
	$(PIP_INSTALL) -e ".[bench]"
	$(BIN)/python bench/shard_throughput.py
	$(BIN)/python bench/shard_hotpath.py
	$(BIN)/python bench/cluster_bench.py
	$(BIN)/python bench/sim_capacity.py
	$(BIN)/python bench/multihost_bench.py --shards 1024 --idle 30 --rounds 2
	$(BIN)/python bench/failover_bench.py
	$(BIN)/python bench/reshard_bench.py --runs 3

# Coverage-guided fuzzing of the shard's receive path (atheris), for FUZZ_SECONDS; a crash is saved as
# bench/results/fuzz/crash-<hash> (replay: $(BIN)/python bench/fuzz_receive.py <file>).
fuzz: $(STAMP)
	$(PIP_INSTALL) -e ".[fuzz]"
	mkdir -p bench/results/fuzz
	$(BIN)/python bench/fuzz_receive.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
		-artifact_prefix=bench/results/fuzz/

# Mutation testing of the pure core modules with the fast unit tests (minutes, one worker): not part of
# `make test`; run it before each release and after changing those modules. Writes bench/results/mutation.md.
# The modules and the test files are MODULES and TESTS in bench/mutation.py; a test file listed there holds fast
# unit tests only (no simulator, supervisor or Redis: those go in a file beside it).
mutate: $(STAMP)
	$(PIP_INSTALL) -e ".[mutate]"
	$(BIN)/python bench/mutation.py

clean:
	rm -rf $(VENV) build *.egg-info

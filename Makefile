# kamado: `make demo` runs the whole tiny recipe, `make test` runs the test suite, `make test-fast` the quick part of it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= runs/tiny
TEST_WORKERS ?= 2
CACHE := $(CURDIR)/.cache
export HF_HOME := $(CACHE)/hf
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE := offline
export WANDB_DIR := $(CACHE)/wandb
export RAY_TMPDIR := $(CACHE)/ray
export TORCHINDUCTOR_CACHE_DIR := $(CACHE)/inductor
export MPLCONFIGDIR := $(CACHE)/mpl

.PHONY: install demo test test-fast bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[all]'
	touch $(STAMP)

demo: install
	$(BIN)/kamado run recipes/tiny.yaml --out $(OUT)

test: install
	@# the report's browser test needs chromium: install Debian's when missing (skipped without root/apt)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "note: no chromium; the report browser test will be skipped"
	@# the Slurm tests start a one-machine cluster (scripts/slurm/local_cluster.sh): install Debian's Slurm and munge
	@# when missing (skipped without root/apt)
	@{ command -v slurmctld && command -v munged; } >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	   slurmctld slurmd slurm-client munge) >/dev/null 2>&1; } || \
	  echo "note: no Slurm; the Slurm tests will be skipped"
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/pytest -q -x --durations=15

# the development loop: lint, then every test not marked slow, on two pytest-xdist workers (one file per worker
# at a time, so module fixtures are built once); `make test` (the whole suite) is the check before merging
test-fast: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/pytest -q -x -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=10

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(CACHE) runs

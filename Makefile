# The two commands of the README:
#   make grade   set up, then grade (default: your assignments/; IMPL=solutions for the reference)
#   make test    set up, then test the course itself (release in sync, tooling, suites on the reference)
PY ?= python3
VENV ?= .venv
# The exact versions setup installs (pip install -c): what grading was checked with. `make lock` rewrites it
# from .venv; `make setup LOCK=` installs without it (a fresh .venv, to move a pin). Its header says why.
LOCK ?= requirements.lock
# The CPU wheel by default, at the lock's version. On a CUDA machine: make setup TORCH_SPEC=torch (or use your
# own env and `pip install -e .`); the lock then pins everything else, not torch and triton.
TORCH_SPEC ?= $(or $(shell grep -m1 '^torch==' $(LOCK) 2>/dev/null),torch)
# With the CPU torch, the Triton interpreter of the GPU machines (the lock's 3.6.0), so CI tests what the GPU runs.
TRITON_SPEC ?= $(or $(shell grep -m1 '^triton==' $(LOCK) 2>/dev/null),triton)
# DeepSpeed (the ZeRO baseline, CPU and GPU) and nbgrader (the tutorial notebooks).
EXTRAS ?= deepspeed,notebooks
IMPL ?= assignments
# make test runs the course's own tests on this many processes (pytest-xdist; 0: one process). Most
# of them grade a whole mutant or submission in a sandbox of its own, so two run side by side.
TEST_JOBS ?= 2
A ?=
K ?=
OUT ?= results
BIN := $(VENV)/bin

.PHONY: setup grade test release list bench lock stability
# setup also sees to the sandbox that runs submission code (docs/grading.md): as root with apt-get,
# bubblewrap is installed if missing; otherwise one line says which weaker isolation the worker
# will use and why. It never fails setup.
setup: $(VENV)/.installed
	-@if ! command -v bwrap >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing bubblewrap, the sandbox that runs submission code"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null 2>&1 || true; \
	fi; \
	$(BIN)/python -c 'from autograder.remote.isolation import choose; i = choose(); i.level == "bubblewrap" or print(f"note: the worker that runs submission code will use {i.level} isolation, weaker than bubblewrap: {i.why} (docs/grading.md)")' \
	  || echo "note: could not check the sandbox for submission code (is bubblewrap installed? docs/grading.md)"

# torch and triton come from TORCH_SPEC and TRITON_SPEC, so the lock less those two constrains the rest.
$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(LOCK),grep -Ev '^(torch|triton)==' $(LOCK) > $(VENV)/constraints.txt,: > $(VENV)/constraints.txt)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q -c $(VENV)/constraints.txt "$(TORCH_SPEC)"
# triton apart: a CUDA torch brings the triton it was built with (kept); the CPU wheel brings none.
	$(BIN)/python -c "import triton" 2>/dev/null || $(if $(TRITON_SPEC),$(BIN)/python -m pip install -q -c $(VENV)/constraints.txt "$(TRITON_SPEC)",true)
	$(BIN)/python -m pip install -q -c $(VENV)/constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# make grade A=kv_cache grades one assignment; K='attend' adds -k (a partial run writes results/partial/)
grade: setup
	$(BIN)/python -m autograder grade $(A) --impl $(IMPL) --out $(OUT) $(if $(K),-k "$(K)")

# In the student edition (python -m autograder student-repo), which has no solutions/ to test the
# course against, `make test` grades the student's assignments.
test: setup
ifneq ($(wildcard solutions/.),)
	$(BIN)/python -m autograder release --check
	$(BIN)/python -m pytest autograder/tests -q -p no:cacheprovider -n $(TEST_JOBS)
else
	$(BIN)/python -m autograder grade --impl $(IMPL) --out $(OUT)
endif

# make stability RUNS=20 grades the reference RUNS times, each with a fresh seed, and fails on any point it
# loses (docs/grading.md); A= and K= as for grade, JOBS=2 for two runs at a time. Results in stability-results/.
RUNS ?= 20
JOBS ?= 1
stability: setup
	$(BIN)/python -m autograder stability $(A) --runs $(RUNS) --jobs $(JOBS) $(if $(K),-k "$(K)")

release: setup
	$(BIN)/python -m autograder release

list: setup
	$(BIN)/python -m autograder list

bench: setup
	$(BIN)/python -m autograder bench $(A) --impl $(IMPL)

# Rewrite requirements.lock from .venv: what pyproject.toml pulls in (with EXTRAS), torch and triton, at the
# installed versions (autograder/lock.py). Run make test first: the lock is what grading was checked with.
lock: $(VENV)/.installed
	$(BIN)/python -m autograder.lock --extras "$(EXTRAS)" > requirements.lock.new
	mv requirements.lock.new requirements.lock

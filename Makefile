# The two commands of the README:
#   make grade   set up, then grade (default: your assignments/; IMPL=solutions for the reference)
#   make test    set up, then test the course itself (release in sync, tooling, suites on the reference)
PY ?= python3
VENV ?= .venv
# The CPU wheel by default. On a CUDA machine: make setup TORCH_SPEC=torch (or use your own env and `pip install -e .`).
TORCH_SPEC ?= torch==2.13.0
# With the CPU torch, the Triton interpreter of the GPU machines (3.6.0), so CI tests what the GPU runs.
TRITON_SPEC ?= triton==3.6.0
# DeepSpeed (the ZeRO baseline, CPU and GPU) and nbgrader (the tutorial notebooks).
EXTRAS ?= deepspeed,notebooks
IMPL ?= assignments
A ?=
K ?=
OUT ?= results
BIN := $(VENV)/bin

.PHONY: setup grade test release list bench
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

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TRITON_SPEC),"$(TRITON_SPEC)")
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

# make grade A=kv_cache grades one assignment; K='attend' adds -k (a partial run writes results/partial/)
grade: setup
	$(BIN)/python -m autograder grade $(A) --impl $(IMPL) --out $(OUT) $(if $(K),-k "$(K)")

# In the student edition (python -m autograder student-repo), which has no solutions/ to test the
# course against, `make test` grades the student's assignments.
test: setup
ifneq ($(wildcard solutions/.),)
	$(BIN)/python -m autograder release --check
	$(BIN)/python -m pytest autograder/tests -q -p no:cacheprovider
else
	$(BIN)/python -m autograder grade --impl $(IMPL) --out $(OUT)
endif

release: setup
	$(BIN)/python -m autograder release

list: setup
	$(BIN)/python -m autograder list

bench: setup
	$(BIN)/python -m autograder bench $(A) --impl $(IMPL)

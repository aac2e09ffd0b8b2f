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
OUT ?= results
BIN := $(VENV)/bin

.PHONY: setup grade test release list bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TRITON_SPEC),"$(TRITON_SPEC)")
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

grade: setup
	$(BIN)/python -m autograder grade --impl $(IMPL) --out $(OUT)

test: setup
	$(BIN)/python -m autograder release --check
	$(BIN)/python -m pytest autograder/tests -q -p no:cacheprovider

release: setup
	$(BIN)/python -m autograder release

list: setup
	$(BIN)/python -m autograder list

bench: setup
	$(BIN)/python -m autograder bench $(A) --impl $(IMPL)

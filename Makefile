# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test` (the test suite).
# Both create or reuse the virtual environment in $(VENV).
#
# torch: if the interpreter that makes the venv already has torch (e.g. a CUDA build), the venv sees it
# (--system-site-packages) and it is left alone. Otherwise $(TORCH_SPEC) is installed first, so that pip never
# resolves a plain `torch` requirement to a multi-GB CUDA wheel on a CPU machine. Override TORCH_SPEC/TORCH_INDEX
# (e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu) for other machines.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SGLANG_VENV ?= .venv-sglang

.PHONY: setup demo test test-e2e test-sglang sglang-env bench clean

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch already importable: $$($(PY) -c 'import torch; print(torch.__version__)') (left alone)"; \
	else \
		echo "installing $(TORCH_SPEC)"; \
		$(PY) -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),); \
	fi
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/prefix-rft demo

test: $(STAMP)
	$(PY) -m pytest -q tests -m "not e2e"

# End-to-end runs of whole commands (demo and study drivers, fault replays, benchmark scripts): ~10 min, CI runs it.
test-e2e: $(STAMP)
	$(PY) -m pytest -q tests -m e2e

# The engine tier: the project's SGLang client and trainer against a real sglang 0.5.23 server on CPU (its own venv,
# tools/sglang_cpu/build_env.sh: a CPU test harness, never for GPU machines).
sglang-env:
	PYTHON=$(PYTHON) bash tools/sglang_cpu/build_env.sh $(SGLANG_VENV)

test-sglang: $(STAMP) sglang-env
	PREFIX_RFT_SGLANG_PYTHON=$(abspath $(SGLANG_VENV))/bin/python $(PY) -m pytest -q tests/engine

bench: $(STAMP)
	$(PY) tools/bench_convert.py

clean:
	rm -rf outputs .pytest_cache

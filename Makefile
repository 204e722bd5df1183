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

.PHONY: setup demo test bench clean

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
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) tools/bench_convert.py

clean:
	rm -rf outputs .pytest_cache

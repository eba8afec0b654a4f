# Two commands do all set-up on a fresh machine:
#   make demo   install everything, then run the main job on embedded defaults
#   make test   install everything, then run the default test suite
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
APT_PKGS := dataset-fashion-mnist opencv-doc

.PHONY: demo test test-slow lint bench clean-venv

$(STAMP): pyproject.toml Makefile
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    dpkg -s $(APT_PKGS) >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS); } \
	        || echo "warning: could not install $(APT_PKGS); image datasets will be unavailable"; \
	else echo "note: apt-get unavailable or not root; install $(APT_PKGS) by hand for the image datasets"; fi
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all]'
	touch $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python scripts/demo.py

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

test-slow: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/samplers.py

clean-venv:
	rm -rf $(VENV)

# Two commands do all set-up: `make run` and `make test` (see README.md).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Where the CPU build of torch lies on this kind of machine; pip also looks in PyPI.
TORCH_WHEELS ?= /opt/wheels
TORCH_FIND := $(if $(wildcard $(TORCH_WHEELS)),--find-links $(TORCH_WHEELS),--extra-index-url https://download.pytorch.org/whl/cpu)
PYTEST_ARGS ?=

.PHONY: run test install lint format bench-import bench-queue clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	# torch first, the CPU wheel, so nothing below pulls a CUDA build.
	$(PIP) install --quiet torch==2.13.0 $(TORCH_FIND)
	$(PIP) install --quiet -e '.[ml,test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo
	$(PY) manage.py serve

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench-import: install
	$(PY) bench/import/run.py

bench-queue: install
	$(PY) bench/queue/run.py

.PHONY: bench-export
bench-export: install
	$(PY) bench/export/run.py

.PHONY: bench-explorer
bench-explorer: install
	$(PY) bench/explorer/run.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

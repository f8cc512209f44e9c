PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export GLIBC_TUNABLES := glibc.malloc.mmap_threshold=4294967295

.PHONY: install test demo clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip -q
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/pavenet demo

clean:
	rm -rf $(VENV) runs .pytest_cache

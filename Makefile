# The two commands a new machine needs: `make demo` and `make test`.
# Each creates .venv if missing and installs with constraints.txt (see that file for why).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-gpu bench install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snnsec demo

test: $(STAMP)
	$(PY) -m pytest -q

# the CUDA set (tests/gpu): needs a torch that sees a GPU; skipped, with the reason, elsewhere
test-gpu: $(STAMP)
	$(PY) -m pytest -q tests/gpu

bench: $(STAMP)
	$(PY) -m pytest -q -s tests/benchmarks -p no:cacheprovider --override-ini addopts= --override-ini "python_files=bench_*.py"

clean:
	rm -rf $(VENV)

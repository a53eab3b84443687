VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench clean validate

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kmemsim sweep experiments/configs/demo.toml --out results/demo/sweep
	$(VENV)/bin/kmemsim compare results/demo/sweep --out results/demo
	@echo "open results/demo/report.html (figures: results/demo/*.png)"

validate: $(STAMP)
	$(VENV)/bin/kmemsim validate --out results/validation

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) results/*/ .pytest_cache

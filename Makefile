# rnnmt: `make run` runs the pipeline on the bundled sample, `make test` runs the tests.
# Both create the virtual environment (.venv) and install what they need on first use.

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run ui serve lint format test test-fast bench-preprocess bench-word2vec bench-translator clean

install: $(STAMP)

# torch first and pinned: a local CPU build of 2.13.0 exists; an unpinned torch pulls CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,bench,tune]'
	touch $(STAMP)

# The whole pipeline on the bundled samples (stages already done for the same inputs and config are reused).
run: install
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) -m jobs.pipeline
	printf 'I like cats.\nWhere is the station?\nShe bought 3 books yesterday.\n' | $(PY) -m jobs.translate outputs/pipeline/translator/best

# The MLflow UI on the project's tracking store, at http://127.0.0.1:5000 (PORT=... to change).
ui: install
	$(PY) -m jobs.ui port=$${PORT:-5000}

# The registered champion translator as a REST endpoint at http://127.0.0.1:5001/invocations
# (PORT=..., MODEL=models:/rnnmt-translator/3 to change).
serve: install
	$(PY) -m jobs.serve port=$${PORT:-5001} model=$${MODEL:-models:/rnnmt-translator@champion}

# ruff (configured in pyproject.toml): the linter, and the formatter's check; `make format` formats
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

bench-preprocess: install
	$(PY) bench/preprocess.py

bench-word2vec: install
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) bench/word2vec.py

bench-translator: install
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) bench/translator.py

clean:
	rm -rf outputs mlartifacts mlflow.db ray_results .pytest_cache

# rnnmt: `make run` runs the pipeline on the bundled sample, `make test` runs the tests.
# Both create the virtual environment (.venv) and install what they need on first use.

VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test test-fast bench-preprocess bench-word2vec bench-translator clean

install: $(STAMP)

# torch first and pinned: a local CPU build of 2.13.0 exists; an unpinned torch pulls CUDA packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

run: install
	$(PY) -m jobs.preprocess conf/preprocess.yaml overwrite=true
	$(PY) -m jobs.preprocess conf/preprocess/sample_wikipedia.yaml overwrite=true
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) -m jobs.train_word2vec data_dir=outputs/sample-wikipedia output_dir=outputs/word2vec overwrite=true
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} $(PY) -m jobs.train_translator data_dir=outputs/sample-tatoeba output_dir=outputs/translator train.epochs=8 resume=false overwrite=true
	printf 'I like cats.\nWhere is the station?\nShe bought 3 books yesterday.\n' | $(PY) -m jobs.translate outputs/translator/best

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

# The README's commands. `make test` sets up .venv (pinned by constraints.txt) and runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

RUN_STAMP := $(VENV)/.installed
# make sample ARTIST=... GENRE=... LYRICS=... SECONDS=... TEMPERATURE=... SEED=... (see python sample.py --help)
ARTIST ?= johann_sebastian_bach
GENRE ?= chorale
LYRICS ?= Ach Gott, vom Himmel sieh darein, und lass dich des erbarmen
SECONDS ?= 8
# per level, level 0 first (one value: every level); see the README's "What make sample's defaults trade"
TEMPERATURE ?= 0.7,0.7,0.8
SEED ?= 0
SAMPLES ?= 2
OUT ?= samples/$(shell date +%Y%m%d-%H%M%S)

.PHONY: test test-fast setup sample

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

$(RUN_STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e .
	touch $(RUN_STAMP)

setup: $(STAMP)

# Music from the bundled demo model (models/demo, trained by scripts/train_demo.py on the music21 corpus).
sample: $(RUN_STAMP)
	$(PY) sample.py --checkpoint=models/demo --workdir=$(OUT) --mode=ancestral --artist="$(ARTIST)" \
	    --genre="$(GENRE)" --lyrics="$(LYRICS)" --sample_length_in_seconds=$(SECONDS) \
	    --total_sample_length_in_seconds=60 --n_samples=$(SAMPLES) --temperature=$(TEMPERATURE) --seed=$(SEED)

test: $(STAMP)
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

# The edit loop: every test not marked slow (7.4 minutes from a fresh clone on a 2-core machine). CI runs `make test`.
test-fast: $(STAMP)
	$(PY) -m pytest tests -q -m "not slow" $(PYTEST_ARGS)

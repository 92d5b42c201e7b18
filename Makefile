# The commands of this project. The README's two commands, CI and developers use these.
.PHONY: serve test lint typecheck unit docs versions lock bench openapi setup browser

export PYGEOAPI_CONFIG ?= example-config.yml
export PYGEOAPI_OPENAPI ?= example-openapi.yml
VENV := .venv/bin

setup:
	@scripts/bootstrap.sh

## Start the example server on the embedded default (http://127.0.0.1:5000).
serve: setup
	$(VENV)/pygeoapi serve

## Run every check: lint, types, tests, docs, and the execution paths at other releases.
test: setup browser lint typecheck unit docs versions

## The browser test (tests/test_ui.py) drives Debian's Chromium: installed here when it is
## missing and this runs as root (CI); otherwise that test skips, and fails under CI.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && apt-get install -y -qq chromium chromium-driver; \
		else \
			echo "browser: chromium and chromium-driver missing (apt-get install them as root)" >&2; \
		fi; \
	fi

lint:
	$(VENV)/ruff check src tests benchmarks
	$(VENV)/ruff format --check src tests benchmarks

typecheck:
	$(VENV)/mypy

unit:
	$(VENV)/pytest -n auto --dist loadfile

docs:
	$(VENV)/mkdocs build --strict --quiet --site-dir .site

## The execution-path tests at the dependencies' floors and at their newest releases.
versions:
	scripts/versions.sh floor newest

## Re-lock after editing pyproject.toml: the project's uv.lock and the version matrix's.
lock: setup
	UV_PYTHON_DOWNLOADS=never .tools/bin/uv lock --python .venv/bin/python
	for name in floor newest; do \
		UV_PYTHON_DOWNLOADS=never .tools/bin/uv lock --project ci/versions/$$name --python .venv/bin/python; \
	done

## Regenerate example-openapi.yml from example-config.yml.
openapi: setup
	$(VENV)/pygeoapi openapi generate $(PYGEOAPI_CONFIG) --output-file $(PYGEOAPI_OPENAPI)

## Benchmark against pygeoapi's TinyDB manager (not part of `make test`).
bench: setup
	$(VENV)/python -m benchmarks

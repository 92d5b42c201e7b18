# The commands of this project. The README's two commands, CI and developers use these.
.PHONY: serve test lint typecheck unit docs bench openapi setup

export PYGEOAPI_CONFIG ?= example-config.yml
export PYGEOAPI_OPENAPI ?= example-openapi.yml
VENV := .venv/bin

setup:
	@scripts/bootstrap.sh

## Start the example server on the embedded default (http://127.0.0.1:5000).
serve: setup
	$(VENV)/pygeoapi serve

## Run every check: lint, types, tests, docs.
test: setup lint typecheck unit docs

lint:
	$(VENV)/ruff check src tests benchmarks
	$(VENV)/ruff format --check src tests benchmarks

typecheck:
	$(VENV)/mypy

unit:
	$(VENV)/pytest

docs:
	$(VENV)/mkdocs build --strict --quiet --site-dir .site

## Regenerate example-openapi.yml from example-config.yml.
openapi: setup
	$(VENV)/pygeoapi openapi generate $(PYGEOAPI_CONFIG) --output-file $(PYGEOAPI_OPENAPI)

## Benchmark against pygeoapi's TinyDB manager (not part of `make test`).
bench: setup
	$(VENV)/python -m benchmarks

# The commands of this project. The README's two commands, CI and developers use these.
.PHONY: serve test lint typecheck unit docs versions bench openapi setup

export PYGEOAPI_CONFIG ?= example-config.yml
export PYGEOAPI_OPENAPI ?= example-openapi.yml
VENV := .venv/bin

setup:
	@scripts/bootstrap.sh

## Start the example server on the embedded default (http://127.0.0.1:5000).
serve: setup
	$(VENV)/pygeoapi serve

## Run every check: lint, types, tests, docs, and the execution paths at other releases.
test: setup lint typecheck unit docs versions

lint:
	$(VENV)/ruff check src tests benchmarks
	$(VENV)/ruff format --check src tests benchmarks

typecheck:
	$(VENV)/mypy

unit:
	$(VENV)/pytest

docs:
	$(VENV)/mkdocs build --strict --quiet --site-dir .site

## The execution-path tests at the dependencies' floors and at their newest releases.
versions:
	scripts/versions.sh floor newest

## Regenerate example-openapi.yml from example-config.yml.
openapi: setup
	$(VENV)/pygeoapi openapi generate $(PYGEOAPI_CONFIG) --output-file $(PYGEOAPI_OPENAPI)

## Benchmark against pygeoapi's TinyDB manager (not part of `make test`).
bench: setup
	$(VENV)/python -m benchmarks

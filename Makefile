# Two commands matter on a fresh machine: `make demo` and `make test` (see README.md).
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup demo test lint unit bench clean

setup:
	@scripts/bootstrap

demo: setup
	$(PY) -m field_app.demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

unit: setup
	@scripts/test-postgres
	$(PY) -m pytest -q

test: lint unit

bench: setup
	$(PY) -m benchmarks store --json benchmarks/results/store.json
	$(PY) -m benchmarks sync --json benchmarks/results/sync.json
	$(PY) -m benchmarks forms --json benchmarks/results/forms.json
	$(PY) -m benchmarks central --json benchmarks/results/central.json
	$(PY) -m benchmarks sms --json benchmarks/results/sms.json

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache

# The two commands of the README:
#   make serve   start va-cds with embedded defaults (SQLite, development trust preset for the CDS Hooks Sandbox)
#   make test    lint, format check, type check and the whole test suite
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: serve test lint bench soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

serve: $(STAMP)
	mkdir -p var
	VA_CDS_DATABASE_URL=$${VA_CDS_DATABASE_URL:-sqlite:///./var/va-cds.db} \
	VA_CDS_TRUST_PRESET=$${VA_CDS_TRUST_PRESET:-sandbox} \
	VA_CDS_CORS_ORIGINS=$${VA_CDS_CORS_ORIGINS:-*} \
	VA_CDS_PUBLIC_BASE_URL=$${VA_CDS_PUBLIC_BASE_URL:-http://127.0.0.1:$${VA_CDS_PORT:-8080}} \
	$(BIN)/va-cds serve --host $${VA_CDS_HOST:-127.0.0.1} --port $${VA_CDS_PORT:-8080}

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: that is a broken suite, not a pass.
test: lint
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(BIN)/python -m benchmarks

soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

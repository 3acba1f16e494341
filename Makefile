# The two commands of the README:
#   make serve   start va-cds with embedded defaults (SQLite, development trust preset for the CDS Hooks Sandbox,
#                the demo FHIR data at /demo/fhir)
#   make test    lint, format check, type check and the whole test suite
# Both create .venv and install on first use, from the hash-pinned locks (pip only: no other tool needed):
#   requirements.lock      runtime dependencies            (make serve)
#   requirements-dev.lock  runtime + development ones      (make test, make lint)
# After changing dependencies in pyproject.toml run `make lock` (keeps existing pins, adds what is new);
# `make lock UPGRADE=1` moves every pin to the newest release the ranges allow.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK     := requirements.lock
DEV_LOCK := requirements-dev.lock

# One stamp per installed lock, named by its content: a changed lock (or pyproject.toml) reinstalls.
checksum = $(shell cat $(1) 2>/dev/null | cksum | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(call checksum,$(LOCK) pyproject.toml)
DEV_STAMP := $(VENV)/.installed-dev-$(call checksum,$(DEV_LOCK) pyproject.toml)

# The lock carries setuptools (the build backend), so va-cds itself is installed without build isolation:
# nothing unpinned is downloaded. setuptools prints an information-only note on every editable install
# ("Editable installation … be careful with folders"): filtered by its exact text, nothing else is hidden.
define install_from
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(1)
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet --no-deps \
		--no-build-isolation -e .
endef

.PHONY: serve test lint lock bench soak burden clean

$(RUN_STAMP): $(LOCK) pyproject.toml
	$(call install_from,$(LOCK))
	rm -f $(VENV)/.installed-run-*
	touch $@

$(DEV_STAMP): $(DEV_LOCK) pyproject.toml
	$(call install_from,$(DEV_LOCK))
	rm -f $(VENV)/.installed-dev-*
	touch $@

# `exec`: the server replaces the shell, so Ctrl-C (SIGINT) or SIGTERM reaches it directly; it shuts down
# gracefully and exits 0, and make reports no error.
serve: $(RUN_STAMP)
	mkdir -p var
	VA_CDS_DATABASE_URL=$${VA_CDS_DATABASE_URL:-sqlite:///./var/va-cds.db} \
	VA_CDS_TRUST_PRESET=$${VA_CDS_TRUST_PRESET:-sandbox} \
	VA_CDS_CORS_ORIGINS=$${VA_CDS_CORS_ORIGINS:-*} \
	VA_CDS_PUBLIC_BASE_URL=$${VA_CDS_PUBLIC_BASE_URL:-http://127.0.0.1:$${VA_CDS_PORT:-8080}} \
	VA_CDS_DEMO=$${VA_CDS_DEMO:-1} \
	exec $(BIN)/va-cds serve --host $${VA_CDS_HOST:-127.0.0.1} --port $${VA_CDS_PORT:-8080}

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: that is a broken suite, not a pass.
test: lint
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# pip-tools resolves the ranges in pyproject.toml and records every file's hash. It reads the package index
# alone (PIP_CONFIG_FILE=/dev/null, no find-links): a machine's local wheel cache must not end up in the hashes.
PIP_COMPILE = env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --all-build-deps --no-emit-index-url --no-emit-find-links \
	--no-emit-trusted-host $(if $(UPGRADE),--upgrade)

# The development lock is constrained by the runtime one: both install the same runtime versions.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'pip-tools>=7.4'
	$(PIP_COMPILE) --output-file $(LOCK) pyproject.toml
	$(PIP_COMPILE) --extra dev --constraint $(LOCK) --output-file $(DEV_LOCK) pyproject.toml

bench: $(DEV_STAMP)
	$(BIN)/python -m benchmarks

soak: $(DEV_STAMP)
	$(BIN)/python -m benchmarks.soak

# Alert burden on the Synthea fixture records (all hooks, in-process): writes benchmarks/results/burden.md
burden: $(DEV_STAMP)
	$(BIN)/python -m benchmarks.burden

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

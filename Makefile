# Everyday commands. `make demo` needs nothing but Python; `make test` starts its own
# throwaway PostgreSQL.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ORCH := $(BIN)/orchestrator
ENV ?= dev
APPROVE_FLAG := $(if $(APPROVE),--approve,)
REV_FLAG := $(if $(REV),--to $(REV),)

.PHONY: install migrate plan status promote audit revision current history downgrade demo \
	fleet-demo test lint bench bench-venv bench-record mutants clean test-fast

# Pipelines call `orchestrator` and branch on its exit codes (3 refused, 4 lock timeout); these
# targets are for people, and make reports any failure as its own 2 after the orchestrator's
# message. (A make plugin that passed the code through needed a C compiler: not worth it.)

$(BIN)/orchestrator: pyproject.toml
	# Debian's python3 lacks venv until python3-venv is installed: do that when we can (root)
	$(PY) -m venv $(VENV) || { rm -rf $(VENV) && apt-get update -q \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv && $(PY) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	# compat mode: a plain path entry; the default import hook costs every command ~30 ms
	$(BIN)/pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

install: $(BIN)/orchestrator

migrate: install
	$(ORCH) migrate $(ENV) $(REV_FLAG) $(APPROVE_FLAG)

plan: install
	$(ORCH) plan $(ENV) $(REV_FLAG)

status: install
	$(ORCH) status

promote: install
	$(ORCH) promote $(ENV) $(APPROVE_FLAG)

audit: install
	$(ORCH) audit $(if $(filter command line environment,$(origin ENV)),--env $(ENV),)

revision: install
	$(if $(strip $(m)),,$(error make revision needs a message: make revision m="add orders" [AUTOGEN=1]))
	$(BIN)/alembic revision $(if $(AUTOGEN),--autogenerate,) -m "$(m)"

current: install
	$(ORCH) current $(ENV)

history: install
	$(ORCH) history

downgrade: install
	$(ORCH) downgrade $(ENV) --to $(or $(REV),-1) --reason "$(or $(REASON),make downgrade)" $(APPROVE_FLAG)

demo: install
	./scripts/demo.sh

fleet-demo: install
	./scripts/fleet_demo.sh

# lint: the Python (ruff, ruff format, mypy), the layers, and the record of equivalent mutants
# (no mutmut run: about a second). The migrations are linted by `orchestrator check`.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check orchestrator tests bench
	$(BIN)/mypy orchestrator
	$(BIN)/lint-imports  # the layers of pyproject.toml's [tool.importlinter]
	$(BIN)/python scripts/mutants_check.py  # mutants-equivalent.md names mutants made at HEAD

# The whole suite on both cores (pytest-xdist), one PostgreSQL cluster shared by the workers.
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist worksteal

# The quick loop: the unit tests and the SQLite paths of every command, on both cores; no
# PostgreSQL, no browser, none of the `slow` tests (tests/conftest.py says what covers each).
# The CLI is warm-started (tests/warmstart.py: a fork of a process that imported it already)
# and SQLite's files live in memory (/dev/shm) where there is one. `make test` runs it all cold.
FAST_TMP := $(if $(wildcard /dev/shm),--basetemp=/dev/shm/test-fast-$(shell echo '$(CURDIR)' | cksum | cut -d' ' -f1),)
test-fast: install
	PROJECTKIT_WARM=1 $(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not pg and not browser and not slow" $(FAST_TMP)

# The benchmark times the orchestrator as a user installs it: a plain `pip install .` into a
# venv of its own (byte-code compiled by pip, no dev tools: mutmut's `rich`, for one, would
# make every run import it through structlog), rebuilt each time from the working tree.
BENCH_VENV := .venv-bench
bench-venv:
	rm -rf $(BENCH_VENV) build
	$(PY) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet .
	rm -rf build

bench: install bench-venv  # writes bench/latest.md (git-ignored)
	BENCH_BIN=$(BENCH_VENV)/bin $(BIN)/python bench/run.py

bench-record: install bench-venv  # the report kept in the repository, stamped with the commit it measured
	BENCH_BIN=$(BENCH_VENV)/bin BENCH_RESULTS=bench/results.md $(BIN)/python bench/run.py

# Mutation testing of the modules that carry the promises (not part of `make test`). One
# pattern per line: a module (`orchestrator.db.locks.*`) or some of its functions
# (`orchestrator.evidence.ledger.audit_chain.x_chain_hash*`; mutmut names f's mutants x_f__mutmut_N).
MUTANTS := \
	'orchestrator.core.planning.xǁ*' \
	'orchestrator.core.planning.x_gate*' \
	'orchestrator.core.planning.x__why_not*' \
	'orchestrator.core.planning.x__summarise*' \
	'orchestrator.core.planning.x_drift*' \
	'orchestrator.core.planning.x_ledger_heads*' \
	'orchestrator.core.planning.x_refusal_message*' \
	'orchestrator.evidence.ledger.audit_chain.x_canonical*' \
	'orchestrator.evidence.ledger.audit_chain.x_chain_hash*' \
	'orchestrator.evidence.ledger.audit_chain.x_chain_rows*' \
	'orchestrator.evidence.ledger.audit_chain.x_verify_chain*' \
	'orchestrator.evidence.ledger.audit_chain.x_check_chain*' \
	'orchestrator.db.locks.*' \
	'orchestrator.migrations.revisions.checksums.x_checksum_*' \
	'orchestrator.migrations.revisions.checksums.x_combined_checksum*'

mutants: install
	$(BIN)/mutmut run $(MUTANTS) > mutants-run.log 2>&1 || true  # progress: tail -f mutants-run.log
	$(BIN)/python scripts/mutants_report.py $(MUTANTS)

clean:
	rm -rf .orchestrator .pytest_cache .mypy_cache .ruff_cache

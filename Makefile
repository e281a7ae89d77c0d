# Everyday commands. `make demo` needs nothing but Python; `make test` starts its own
# throwaway PostgreSQL.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ORCH := $(BIN)/orchestrator
ENV ?= dev
APPROVE_FLAG := $(if $(APPROVE),--approve,)
REV_FLAG := $(if $(REV),--to $(REV),)

.PHONY: install migrate plan status promote audit revision current history downgrade demo fleet-demo test lint bench bench-record mutants clean

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

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy orchestrator
	$(BIN)/python -m pytest -q

bench: install  # writes bench/latest.md (git-ignored)
	$(BIN)/python bench/run.py

bench-record: install  # the report kept in the repository, stamped with the commit it measured
	BENCH_RESULTS=bench/results.md $(BIN)/python bench/run.py

# Mutation testing of the modules that carry the promises (not part of `make test`). One
# pattern per line: a module (`orchestrator.locks.*`) or some of its functions
# (`orchestrator.ledger.x_chain_hash*`; mutmut names a function f's mutants x_f__mutmut_N).
MUTANTS := \
	'orchestrator.planning.*' \
	'orchestrator.ledger.x_canonical*' \
	'orchestrator.ledger.x_chain_hash*' \
	'orchestrator.ledger.x_chain_rows*' \
	'orchestrator.ledger.x_verify_chain*' \
	'orchestrator.locks.*' \
	'orchestrator.revisions.x_checksum_*' \
	'orchestrator.revisions.x_combined_checksum*'

mutants: install
	$(BIN)/mutmut run $(MUTANTS) >/dev/null || true
	$(BIN)/python scripts/mutants_report.py $(MUTANTS)

clean:
	rm -rf .orchestrator .pytest_cache .mypy_cache .ruff_cache

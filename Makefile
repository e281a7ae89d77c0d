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
	fleet-demo test lint bench bench-venv bench-record mutants clean migrate-run plan-run promote-run \
	downgrade-run

# make's own exit status is only ever 0, 1 or 2. `make plan`, `make migrate`, `make promote`
# and `make downgrade` exit with the orchestrator's code (3 refused, 4 lock timeout) through
# a 20-line make plugin, $(exit N), compiled on first use (scripts/make_exit.c). Without a C
# compiler they fall back to make's 2, after the orchestrator's own message.
EXIT_SO := .orchestrator/make_exit.so
RC := .orchestrator/make.rc
-load $(EXIT_SO)
$(EXIT_SO): scripts/make_exit.c
	@mkdir -p $(@D) && { $(CC) -shared -fPIC -O2 -o $@ $< 2>/dev/null || : > $@; }
# the last recipe line of a pass-through target: exit with the code its `-run` step saved
# (not under `make -n`, which ran nothing and must not read a stale code)
DRY_RUN := $(findstring n,$(firstword -$(MAKEFLAGS)))
exit_with_rc = $(if $(DRY_RUN),@:,$(if $(filter %make_exit.so,$(.LOADED)),@: $(if \
	$(filter-out 0,$(file < $(RC))),$(exit $(file < $(RC)))),@exit $$(cat $(RC))))

$(BIN)/orchestrator: pyproject.toml
	# Debian's python3 lacks venv until python3-venv is installed: do that when we can (root)
	$(PY) -m venv $(VENV) || { rm -rf $(VENV) && apt-get update -q \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv && $(PY) -m venv $(VENV); }
	$(BIN)/pip install --quiet --upgrade pip
	# compat mode: a plain path entry; the default import hook costs every command ~30 ms
	$(BIN)/pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

install: $(BIN)/orchestrator

migrate-run: install
	$(ORCH) migrate $(ENV) $(REV_FLAG) $(APPROVE_FLAG); echo $$? > $(RC)
migrate: migrate-run
	$(exit_with_rc)

plan-run: install
	$(ORCH) plan $(ENV) $(REV_FLAG); echo $$? > $(RC)
plan: plan-run
	$(exit_with_rc)

status: install
	$(ORCH) status

promote-run: install
	$(ORCH) promote $(ENV) $(APPROVE_FLAG); echo $$? > $(RC)
promote: promote-run
	$(exit_with_rc)

audit: install
	$(ORCH) audit $(if $(filter command line environment,$(origin ENV)),--env $(ENV),)

revision: install
	$(if $(strip $(m)),,$(error make revision needs a message: make revision m="add orders" [AUTOGEN=1]))
	$(BIN)/alembic revision $(if $(AUTOGEN),--autogenerate,) -m "$(m)"

current: install
	$(ORCH) current $(ENV)

history: install
	$(ORCH) history

downgrade-run: install
	$(ORCH) downgrade $(ENV) --to $(or $(REV),-1) --reason "$(or $(REASON),make downgrade)" $(APPROVE_FLAG); echo $$? > $(RC)
downgrade: downgrade-run
	$(exit_with_rc)

demo: install
	./scripts/demo.sh

fleet-demo: install
	./scripts/fleet_demo.sh

# lint: the Python (ruff, ruff format, mypy). The migrations are linted by `orchestrator check`.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check orchestrator tests bench
	$(BIN)/mypy orchestrator

test: lint
	$(BIN)/python -m pytest -q

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
# pattern per line: a module (`orchestrator.locks.*`) or some of its functions
# (`orchestrator.ledger.x_chain_hash*`; mutmut names a function f's mutants x_f__mutmut_N).
MUTANTS := \
	'orchestrator.planning.xǁ*' \
	'orchestrator.planning.x_gate*' \
	'orchestrator.planning.x__why_not*' \
	'orchestrator.planning.x__summarise*' \
	'orchestrator.planning.x_drift*' \
	'orchestrator.planning.x_ledger_heads*' \
	'orchestrator.planning.x_refusal_message*' \
	'orchestrator.ledger.x_canonical*' \
	'orchestrator.ledger.x_chain_hash*' \
	'orchestrator.ledger.x_chain_rows*' \
	'orchestrator.ledger.x_verify_chain*' \
	'orchestrator.ledger.x_check_chain*' \
	'orchestrator.locks.*' \
	'orchestrator.revisions.x_checksum_*' \
	'orchestrator.revisions.x_combined_checksum*'

mutants: install
	$(BIN)/mutmut run $(MUTANTS) > mutants-run.log 2>&1 || true  # progress: tail -f mutants-run.log
	$(BIN)/python scripts/mutants_report.py $(MUTANTS)

clean:
	rm -rf .orchestrator .pytest_cache .mypy_cache .ruff_cache

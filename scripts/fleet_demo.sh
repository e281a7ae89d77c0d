#!/usr/bin/env bash
# A fleet on embedded databases (SQLite files under .orchestrator/fleet/), no server needed:
# staging is four tenant databases, prod four tenants from a file plus one named database.
# Migrate dev, fan staging out in parallel, break one tenant, carry on past it, fix it,
# re-run (only what is left runs), promote prod behind a canary, roll the fleet up.
set -uo pipefail
cd "$(dirname "$0")/.."
O="${ORCH:-.venv/bin/orchestrator}"
PY="${PYTHON:-.venv/bin/python}"
FLEET=.orchestrator/fleet
rm -rf "$FLEET" && mkdir -p "$FLEET"
export ORCHESTRATOR_ENVIRONMENTS_DIR=examples/fleet/environments
export ORCHESTRATOR_ACTOR="${ORCHESTRATOR_ACTOR:-demo}"
export ORCHESTRATOR_AUDIT_FILE="$FLEET/audit.jsonl"
unset PROD_EU_DATABASE_URL   # the named prod database: its embedded default
LOG="$FLEET/events.log"      # the structured events of every step (stderr), kept for reading
BROKEN=globex

. scripts/demo_lib.sh
sql() {  # sql DB STATEMENT: what someone does by hand to one tenant
  "$PY" -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()' "$1" "$2"
}

step "The environments: staging and prod are fleets" "$O envs"
expect 0 "$O" envs

step "Migrate dev to head" "$O migrate dev"
expect 0 "$O" migrate dev

step "Fan staging out over its tenants, two worker processes" "$O migrate staging --to 8f3b1c2d4e5a --parallel 2"
expect 0 "$O" migrate staging --to 8f3b1c2d4e5a --parallel 2

step "Someone creates an 'orders' table by hand in $BROKEN" "sql $FLEET/staging/$BROKEN.db 'CREATE TABLE orders (id INTEGER PRIMARY KEY)'"
sql "$FLEET/staging/$BROKEN.db" "CREATE TABLE orders (id INTEGER PRIMARY KEY)"

step "Migrate staging to head, carrying on past a failing tenant" "$O migrate staging --parallel 2 --on-error continue"
expect 1 "$O" migrate staging --parallel 2 --on-error continue --log-format console
tail -1 "$LOG"

step "The fleet rolled up: which revision, which tenant failed" "$O status staging"
expect 0 "$O" status staging

step "Prod is refused while one staging tenant lags" "$O migrate prod --approve"
expect 3 "$O" migrate prod --approve --log-format console
tail -1 "$LOG"

step "Fix $BROKEN and re-run: only what is left runs" "$O migrate staging --parallel 2"
sql "$FLEET/staging/$BROKEN.db" "DROP TABLE orders"
expect 0 "$O" migrate staging --parallel 2

step "Promote prod (approved): one canary first, then the rest" "$O promote prod --approve --canary 1 --parallel 2"
expect 0 "$O" promote prod --approve --canary 1 --parallel 2 --ticket CHG-2001

step "Status: every fleet rolled up" "$O status"
expect 0 "$O" status

step "Status per database" "$O status prod --targets"
expect 0 "$O" status prod --targets

step "The audit trail of every prod database is intact" "$O audit verify --env prod"
expect 0 "$O" audit verify --env prod

echo
echo "Fleet demo done. Databases, events ($LOG) and the JSON-lines audit file are in $FLEET/."

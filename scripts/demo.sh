#!/usr/bin/env bash
# The story on embedded databases (SQLite files under .orchestrator/demo/), no server needed;
# your own dev database (.orchestrator/dev.db) is left alone:
# migrate dev, try prod (refused by the gate), promote staging, promote prod, status, audit.
set -uo pipefail
cd "$(dirname "$0")/.."
O="${ORCH:-.venv/bin/orchestrator}"
DEMO=.orchestrator/demo
rm -rf "$DEMO" && mkdir -p "$DEMO"
export DEV_DATABASE_URL="sqlite:///$DEMO/dev.db"   # its own dev database, never yours
export STAGING_DATABASE_URL="sqlite:///$DEMO/staging.db"
export PROD_DATABASE_URL="sqlite:///$DEMO/prod.db"
export ORCHESTRATOR_ACTOR="${ORCHESTRATOR_ACTOR:-demo}"
export ORCHESTRATOR_AUDIT_FILE="$DEMO/audit.jsonl"
LOG="$DEMO/events.log"   # the structured events of every step (stderr), kept for reading

. scripts/demo_lib.sh

step "The environments, in promotion order" "$O envs"
expect 0 "$O" envs

step "Migrate dev to head" "$O migrate dev"
expect 0 "$O" migrate dev

step "Try prod straight away: the gate refuses what staging has not run" "$O migrate prod --approve"
expect 3 "$O" migrate prod --approve --log-format console
tail -1 "$LOG"

step "Promote staging to what dev runs" "$O promote staging"
expect 0 "$O" promote staging

step "Plan prod: every step allowed, lint findings shown" "$O plan prod"
expect 0 "$O" plan prod

step "Promote prod (approved)" "$O promote prod --approve --ticket CHG-1042"
expect 0 "$O" promote prod --approve --ticket CHG-1042

step "Status of every environment" "$O status"
expect 0 "$O" status

step "The audit trail of prod" "$O audit --env prod"
expect 0 "$O" audit --env prod

step "Nobody edited it" "$O audit verify"
expect 0 "$O" audit verify

REPORT="$DEMO/audit-report.html"
step "A report for reviewers: one HTML file, no network needed" "$O audit report --out $REPORT"
expect 0 "$O" audit report --out "$REPORT"
# -- signed evidence, on copies of staging and prod (the shipped files do not sign: a
#    committed public key whose private key nobody holds would stop every clone) ----------
SIGNED="$DEMO/signed"
mkdir -p "$SIGNED/environments" && cp environments/*.yaml "$SIGNED/environments/"
export ORCHESTRATOR_ENVIRONMENTS_DIR="$SIGNED/environments"
export STAGING_DATABASE_URL="sqlite:///$SIGNED/staging.db" PROD_DATABASE_URL="sqlite:///$SIGNED/prod.db"
for env in staging prod; do
  step "Generate $env's signing key" "$O keys generate $env --out-dir $SIGNED/keys --private-key-out $SIGNED/secrets/$env.key"
  expect 0 "$O" keys generate "$env" --out-dir "$SIGNED/keys" --private-key-out "$SIGNED/secrets/$env.key"
  printf 'signing:\n  public_key: %s\n  key_env: %s_SIGNING_KEY\n' \
    "$SIGNED/keys/$env.pub" "$(echo "$env" | tr a-z A-Z)" >> "$SIGNED/environments/$env.yaml"
done
export STAGING_SIGNING_KEY="$SIGNED/secrets/staging.key" PROD_SIGNING_KEY="$SIGNED/secrets/prod.key"

step "Promote staging: every ledger row and the run's audit checkpoint are signed" "$O promote staging"
expect 0 "$O" promote staging

step "As the deploy role, forge staging's ledger (UPDATE a checksum)" "UPDATE orchestrator_ledger SET checksum = ..."
.venv/bin/python - "$SIGNED/staging.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE orchestrator_ledger SET checksum = ? WHERE id = (SELECT max(id) FROM orchestrator_ledger)", ("f" * 64,))
db.commit()
PY
echo "(done)"

step "prod refuses: the forged row is not signed by staging's key" "$O promote prod --approve"
expect 3 "$O" promote prod --approve --log-format console
tail -1 "$LOG"

step "audit verify names the forged row" "$O audit verify --env staging"
expect 1 "$O" audit verify --env staging

echo
echo "Demo done. Databases, events ($LOG) and the JSON-lines audit file are in $DEMO/."
echo "The audit report: $(cd "$(dirname "$REPORT")" && pwd)/$(basename "$REPORT") (open it in a browser)."

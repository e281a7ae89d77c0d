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

echo
echo "Demo done. Databases, events ($LOG) and the JSON-lines audit file are in $DEMO/."
echo "The audit report: $(cd "$(dirname "$REPORT")" && pwd)/$(basename "$REPORT") (open it in a browser)."

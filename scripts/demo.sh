#!/usr/bin/env bash
# The story on embedded databases (SQLite files under .orchestrator/), no server needed:
# migrate dev, try prod (refused by the gate), promote staging, promote prod, status, audit.
set -uo pipefail
cd "$(dirname "$0")/.."
O="${ORCH:-.venv/bin/orchestrator}"
DEMO=.orchestrator/demo
rm -rf "$DEMO" && mkdir -p "$DEMO"
unset DEV_DATABASE_URL   # dev: the embedded default, .orchestrator/dev.db
export STAGING_DATABASE_URL="sqlite:///$DEMO/staging.db"
export PROD_DATABASE_URL="sqlite:///$DEMO/prod.db"
export ORCHESTRATOR_ACTOR="${ORCHESTRATOR_ACTOR:-demo}"
export ORCHESTRATOR_AUDIT_FILE="$DEMO/audit.jsonl"
LOG="$DEMO/events.log"   # the structured events of every step (stderr), kept for reading

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then B=$'\033[1m' R=$'\033[0m'; else B="" R=""; fi
step() { printf '\n%s== %s%s\n$ %s\n' "$B" "$1" "$R" "$2"; }
expect() {  # expect CODE command...: run it, show its result, fail the demo on a surprise
  local want=$1; shift
  "$@" 2>>"$LOG"; local got=$?
  [ "$got" = "$want" ] || { echo "demo: expected exit $want, got $got from: $*" >&2; tail -3 "$LOG" >&2; exit 1; }
  echo "(exit $got)"
}

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

echo
echo "Demo done. Databases, events ($LOG) and the JSON-lines audit file are in $DEMO/."

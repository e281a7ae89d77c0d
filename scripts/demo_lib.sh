# Shared by the demos (sourced): headings, and running a step that must exit as expected.
# Needs $LOG, the file that keeps every step's structured events (stderr).
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then B=$'\033[1m' R=$'\033[0m'; else B="" R=""; fi
step() { printf '\n%s== %s%s\n$ %s\n' "$B" "$1" "$R" "$2"; }
expect() {  # expect CODE command...: run it, show its result, fail the demo on a surprise
  local want=$1; shift
  "$@" 2>>"$LOG"; local got=$?
  [ "$got" = "$want" ] || { echo "demo: expected exit $want, got $got from: $*" >&2; tail -3 "$LOG" >&2; exit 1; }
  echo "(exit $got)"
}

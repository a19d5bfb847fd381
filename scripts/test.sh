#!/usr/bin/env bash
# The whole test suite, stage by stage, each timed. CI runs this through `make test`.
# Set STAGES to run a subset, e.g. STAGES="lint app".
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

stages=${STAGES:-"lint app roles lab"}
declare -a report=()
passed=0 failed=0

run_stage() {
  local name=$1; shift
  local start=$SECONDS
  echo "=== stage $name: $*"
  if "$@"; then
    report+=("$(printf '%-6s ok     %5ss' "$name" $((SECONDS - start)))"); passed=$((passed + 1))
  else
    report+=("$(printf '%-6s FAILED %5ss' "$name" $((SECONDS - start)))"); failed=$((failed + 1))
  fi
}

for stage in $stages; do
  case $stage in
    lint) run_stage lint bash -c 'yamllint . && ansible-lint --profile production && scripts/promtool-test.sh && actionlint' ;;
    app) run_stage app python -m pytest tests/app tests/test_support_services.py tests/awx tests/ci tests/structure ;;
    roles) run_stage roles scripts/molecule-roles.sh ;;
    lab) run_stage lab scripts/lab.sh test ;;
    *) echo "unknown stage $stage" >&2; failed=$((failed + 1)) ;;
  esac
done

echo "=== stage timings (total ${SECONDS}s)"
printf '%s\n' "${report[@]}"
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Run the molecule `default` scenario of every role (or of the roles named as arguments),
# each timed. Needs the Docker engine and the lab base image, which it provides.
# Scenarios use their own networks and container names, so MOLECULE_JOBS of them
# (default 3) run side by side: most of their time is spent waiting on dpkg and docker exec.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

scripts/ensure-dockerd.sh || exit 1
scripts/lab-base-image.sh || exit 1

roles=("$@")
if [ ${#roles[@]} -eq 0 ]; then
  for dir in roles/*/molecule/default; do
    roles+=("$(basename "$(dirname "$(dirname "$dir")")")")
  done
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run_one() {
  local role=$1 log=$2/$1.log start=$SECONDS
  if [ ! -f "roles/$role/molecule/default/verify.yml" ]; then
    # A scenario without verify would pass without testing anything.
    echo "--- role $role: FAILED, molecule/default/verify.yml is missing"
    return 1
  fi
  if (cd "roles/$role" && molecule test) >"$log" 2>&1; then
    echo "--- role $role: passed in $((SECONDS - start))s"
  else
    echo "--- role $role: FAILED in $((SECONDS - start))s; its log:"
    cat "$log"
    return 1
  fi
}
export -f run_one

printf '%s\n' "${roles[@]}" | xargs -P "${MOLECULE_JOBS:-3}" -I{} bash -c 'run_one "$@"' _ {} "$logs"

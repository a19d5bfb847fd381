#!/usr/bin/env bash
# Run the molecule `default` scenario of every role (or of the roles named as arguments),
# each timed. Needs the Docker engine and the lab base image, which it provides.
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

status=0
for role in "${roles[@]}"; do
  start=$SECONDS
  if [ ! -f "roles/$role/molecule/default/verify.yml" ]; then
    # A scenario without verify would pass without testing anything.
    echo "--- role $role: FAILED, molecule/default/verify.yml is missing"; status=1; continue
  fi
  if (cd "roles/$role" && molecule test); then
    echo "--- role $role: passed in $((SECONDS - start))s"
  else
    echo "--- role $role: FAILED in $((SECONDS - start))s"
    status=1
  fi
done
exit $status

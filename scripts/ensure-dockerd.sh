#!/usr/bin/env bash
# Start the Docker engine when it is not running. The machines this project targets for its
# lab have no systemd, so dockerd is started directly and polled until it answers.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "dockerd is not installed: run scripts/bootstrap.sh first" >&2
  exit 1
fi
log=/var/log/payments-lab-dockerd.log
echo "Starting dockerd (log: $log)"
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "dockerd did not answer within 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1

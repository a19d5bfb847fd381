#!/usr/bin/env bash
# Install what `make test`, `make lab` and `make dev` need on a Debian 12 machine:
# Debian packages (only those missing) and the pinned Python tools in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package that provides it
declare -A packages=(
  [dockerd]=docker.io
  [debootstrap]=debootstrap
  [/usr/lib/postgresql/15/bin/postgres]=postgresql-15
  [redis-server]=redis-server
  [chromium]=chromium
  # certutil: the lab browser tests trust the load balancer's certificate in an NSS database
  [certutil]=libnss3-tools
  [wrk]=wrk
  # promtool: scripts/promtool-test.sh checks and unit-tests the monitoring role's alert rules
  [promtool]=prometheus
  [curl]=curl
  [openssl]=openssl
  [git]=git
)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ] || missing+=("${packages[$cmd]}")
done
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || { echo "run as root (or with sudo) to install packages" >&2; exit 1; }
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Only promtool is wanted from prometheus: its server (0.0.0.0:9090, where the lab publishes
  # its own) must not run here, under whichever init system the machine has.
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    { systemctl disable --now prometheus || { service prometheus stop; update-rc.d prometheus disable; }; } >/dev/null 2>&1 || true
  fi
fi

# The Python tools, reinstalled only when a requirements file changed.
stamp=.venv/.requirements.sha256
sum=$(cat requirements-dev.txt app/requirements.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  echo "Installing Python tools into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  echo "$sum" >"$stamp"
fi

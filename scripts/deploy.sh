#!/usr/bin/env bash
# Roll a release out to an environment with playbooks/deploy.yml: what the deploy workflow
# (.github/workflows/deploy.yml) runs for staging and production, and what a person runs.
#
#   scripts/deploy.sh ENVIRONMENT VERSION        e.g. scripts/deploy.sh staging 3f2c1e9
#
# ENVIRONMENT is a directory of inventories/ (staging, production, lab); VERSION the image
# tag (the deploy workflow: the commit SHA). Secrets come from the environment only, are
# written to files of mode 0600 in a private temporary directory removed on exit, and are
# never printed:
#   VAULT_PASSWORD       the environment's vault password (CI: its secret store); else
#   VAULT_PASSWORD_FILE  a file holding it; else it is asked (--vault-id ENVIRONMENT@prompt).
#                        The lab needs none (ansible.cfg names its demo password).
#   SSH_PRIVATE_KEY      optional: the key of the inventory's ansible_user (else the agent
#                        or ANSIBLE_PRIVATE_KEY_FILE).
#   SSH_KNOWN_HOSTS      optional: known_hosts lines of the environment's hosts; host keys are
#                        always checked (a runner has no known_hosts of its own).
# The pinned tools (.venv, requirements-dev.txt) are installed first when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

environment=${1:-}
version=${2:-}
if [ -z "$environment" ] || [ -z "$version" ] || [ $# -ne 2 ]; then
  echo "usage: scripts/deploy.sh ENVIRONMENT VERSION (e.g. scripts/deploy.sh staging 1.4.2)" >&2
  exit 2
fi
if [ ! -f "inventories/$environment/hosts.yml" ]; then
  echo "deploy: no inventory inventories/$environment (environments: $(ls inventories | grep -v README | xargs))" >&2
  exit 2
fi

if [ ! -x .venv/bin/ansible-playbook ]; then
  echo "Installing the pinned tools into .venv (requirements-dev.txt)"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
fi
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$PWD/ansible.cfg"

secrets=$(umask 077 && mktemp -d)
trap 'rm -rf "$secrets"' EXIT

args=(-i "inventories/$environment" playbooks/deploy.yml -e "app_version=$version")
if [ -n "${VAULT_PASSWORD:-}" ]; then
  (umask 077 && printf '%s\n' "$VAULT_PASSWORD" >"$secrets/vault-password")
  args+=(--vault-id "$environment@$secrets/vault-password")
elif [ -n "${VAULT_PASSWORD_FILE:-}" ]; then
  args+=(--vault-id "$environment@$VAULT_PASSWORD_FILE")
elif [ "$environment" != lab ]; then
  args+=(--vault-id "$environment@prompt")
fi
unset VAULT_PASSWORD

if [ -n "${SSH_PRIVATE_KEY:-}" ]; then
  (umask 077 && printf '%s\n' "$SSH_PRIVATE_KEY" >"$secrets/ssh-key")
  export ANSIBLE_PRIVATE_KEY_FILE="$secrets/ssh-key"
fi
unset SSH_PRIVATE_KEY
if [ -n "${SSH_KNOWN_HOSTS:-}" ]; then
  (umask 077 && printf '%s\n' "$SSH_KNOWN_HOSTS" >"$secrets/known_hosts")
  export ANSIBLE_SSH_COMMON_ARGS="-o UserKnownHostsFile=$secrets/known_hosts -o StrictHostKeyChecking=yes"
fi

echo "Deploying $version to $environment (playbooks/deploy.yml)"
ansible-playbook "${args[@]}"

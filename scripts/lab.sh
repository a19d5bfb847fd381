#!/usr/bin/env bash
# The local lab: the whole stack (docs/architecture.md) in containers on this machine,
# converged by playbooks/site.yml through the molecule scenario molecule/lab.
#
#   scripts/lab.sh up               create (or reuse) the lab, converge it, build and deploy the
#                                   app image from app/ (on a lab that runs the app already:
#                                   rolled out by playbooks/deploy.yml), seed the demo catalog,
#                                   print the URL
#   scripts/lab.sh down             remove the lab's containers, network and volumes
#   scripts/lab.sh release VERSION  build the app image and push it to the lab registry as VERSION
#                                   (roll it out: ansible-playbook playbooks/deploy.yml -e app_version=VERSION)
#   scripts/lab.sh converge [ARGS]  converge the running lab again, each app host keeping the
#                                   release it runs (ARGS go to ansible-playbook)
#   scripts/lab.sh verify           run the end-to-end tests against the running lab
#   scripts/lab.sh verify-converge  a plain `ansible-playbook playbooks/site.yml` from a clean
#                                   environment changes nothing, and another app_version is
#                                   refused (tests/lab/test_converge.py)
#   scripts/lab.sh seed             write the demo catalog again (idempotent)
#   scripts/lab.sh idempotence      converge again (changed=0 everywhere) and --check (no changes)
#   scripts/lab.sh verify-monitoring  every target up in Prometheus on mon1; the app stopped on
#                                   one app host raises AppHostDown at the lab's receiver (webhook,
#                                   Slack-compatible, e-mail), which resolves (tests/lab/test_monitoring.py)
#   scripts/lab.sh verify-deploy    rolling deploys, a failed release, a rollback and the deploy
#                                   lock under load (tests/lab/test_deploy.py; several minutes)
#   scripts/lab.sh verify-backup    point-in-time restore onto a scratch cluster and the restore
#                                   drill, healthy and with a corrupted repository
#                                   (tests/lab/test_backup.py)
#   scripts/lab.sh verify-failover  kill the primary under load, fail over, rejoin, switch back
#                                   (tests/lab/test_failover.py; several minutes)
#   scripts/lab.sh staging          the staging inventory's shape (one server in every group) on
#                                   one more container, converged twice and tested, then removed
#                                   (molecule/staging, tests/lab/test_staging.py)
#   scripts/lab.sh dr               remove db1 and db2 with their data, rebuild them with
#                                   playbooks/dr.yml from the backup repository, print the RTO
#   scripts/lab.sh bench-deploy     time a rolling deploy under load against the same load without
#                                   one, record it in docs/benchmarks.md (section "Deploy")
#   scripts/lab.sh test             what `make test` runs: up from scratch, --check with no changes
#                                   or failures, verify-converge (its plain site.yml is the
#                                   no-change second converge), the end-to-end tests, down
#                                   (LAB_KEEP=1 keeps the lab)
#   scripts/lab.sh bench            time a fresh converge and a no-change one, record them in
#                                   docs/benchmarks.md (section "Lab")
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
# Wide enough that molecule does not wrap ansible output (recaps and task timings are parsed).
export COLUMNS=240

SCENARIO=lab
LAB_DIR=.lab
BASE_IMAGE=${LAB_BASE_IMAGE:-payments-lab/debian:bookworm}
IMAGE_NAME=payments-app
# The lab registry (roles/lab_services on labsvc) as this machine's Docker engine reaches it:
# published on loopback, which Docker trusts over plain HTTP without any daemon setting.
PUSH_REGISTRY=127.0.0.1:5000
# The CA bundle the image build's pip trusts (PyPI may sit behind a TLS-intercepting proxy).
BUILD_CA=${LAB_BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}
LB_URL=https://127.0.0.1:8443
PROMETHEUS_URL=http://127.0.0.1:9090
ALERTMANAGER_URL=http://127.0.0.1:9093

log() { printf '\n=== %s\n' "$*"; }
die() { printf 'lab: %s\n' "$*" >&2; exit 1; }

# Inventory hosts of the lab, from inventories/lab/hosts.yml (the one place they are named).
lab_hosts() {
  ansible-inventory -i inventories/lab/hosts.yml --list 2>/dev/null |
    python3 -c 'import json,sys; print("\n".join(sorted(json.load(sys.stdin)["_meta"]["hostvars"])))'
}

mol() { molecule "$1" -s "$SCENARIO" "${@:2}"; }

# A converge whose output is kept (for recap checks and timings) and shown.
converge() {
  local out=$1; shift
  mol converge -- "$@" 2>&1 | sed -u 's/\x1b\[[0-9;]*m//g' | tee "$out"
  return "${PIPESTATUS[0]}"
}

# Fails unless every PLAY RECAP line in the file says changed=0 unreachable=0 failed=0
# rescued=0 (a rescued task is a failure a block papered over). Hosts with ignored=N > 0 are
# listed as a warning, and fail the check too unless the third argument is "allow-ignored".
# The roles ignore errors only in check mode, where a fresh host lacks what a task needs
# (ignore_errors: "{{ ansible_check_mode }}" in roles/pgbackrest/tasks/timers.yml and tls.yml,
# roles/s3_standin/tasks/bucket.yml: units not written yet, moto not installed yet); a
# converged host has all of it, so every caller here (a no-change converge, --check on the
# converged lab) requires ignored=0. Only a --check of a fresh host would pass allow-ignored.
recap_clean() {
  local file=$1 what=$2 ignored_ok=${3:-} lines bad ignored
  lines=$(grep -E '^[^a-zA-Z]*[a-z0-9_.-]+ +: ok=[0-9]+ +changed=' "$file" || true)
  [ -n "$lines" ] || die "$what: no PLAY RECAP found in $file"
  lines=$(sed 's/^[^a-zA-Z]*//' <<<"$lines")
  echo "--- $what recap:"; printf '%s\n' "$lines"
  # A line without every counter is one this parser does not understand: a failure too.
  bad=$(awk '
    !/changed=[0-9]+ +unreachable=[0-9]+ +failed=[0-9]+ +skipped=[0-9]+ +rescued=[0-9]+ +ignored=[0-9]+/ { print $1; next }
    { for (i = 3; i <= NF; i++) { split($i, kv, "=")
        if (kv[1] ~ /^(changed|unreachable|failed|rescued)$/ && kv[2] + 0 > 0) { print $1; next } } }
  ' <<<"$lines" | sort -u | paste -sd ' ' -)
  ignored=$(awk '
    { for (i = 3; i <= NF; i++) { split($i, kv, "=")
        if (kv[1] == "ignored" && kv[2] + 0 > 0) print $1 " (" $i ")" } }
  ' <<<"$lines" | sort -u | paste -sd ' ' -)
  [ -z "$ignored" ] || echo "--- WARNING: $what: errors were ignored on: $ignored" >&2
  [ -z "$bad" ] || die "$what: some hosts changed, failed, were unreachable or rescued a failure: $bad"
  [ -z "$ignored" ] || [ "$ignored_ok" = allow-ignored ] ||
    die "$what: errors were ignored on a converged host (see the warning above)"
}

lab_running() {
  local host
  for host in $(lab_hosts); do
    [ "$(docker inspect -f '{{.State.Running}}' "$host" 2>/dev/null)" = true ] || return 1
  done
}

# Version of the app image: a digest of app/'s content, so the same code gives the same tag
# (and a second `up` deploys nothing new).
app_content_version() {
  local digest
  digest=$( (cd app && find . -type f ! -name .build-ca.pem ! -path '*/__pycache__/*' ! -name '*.pyc' \
    -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-12)
  echo "lab-$digest"
}

# The app hosts of the lab, from inventories/lab/hosts.yml.
lab_app_hosts() {
  ansible-inventory -i inventories/lab/hosts.yml --list 2>/dev/null |
    python3 -c 'import json,sys; print("\n".join(sorted(json.load(sys.stdin)["app"]["hosts"])))'
}

# The releases the lab's app hosts run, one distinct release a line: the tag of each app
# container's image, as playbooks/tasks/app-active-ports.yml reads it. Nothing for an app host
# that runs no app (no Docker in it yet, or no container).
running_app_versions() {
  local host image name
  for host in $(lab_app_hosts); do
    # The engine in a container just (re)started may take a few seconds to answer.
    image=$(docker exec "$host" sh -c 'command -v docker >/dev/null || exit 1
      for _ in $(seq 30); do docker info >/dev/null 2>&1 && break; sleep 1; done
      docker inspect -f "{{.Config.Image}}" payments-app' 2>/dev/null) || continue
    name=${image%%@*}
    name=${name##*/}
    if [[ $name == *:* ]]; then echo "${name#*:}"; fi
  done | sort -u
}

# Roll a release out on the running lab: the rolling deploy, as in production.
deploy_release() {
  ansible-playbook -i inventories/lab playbooks/deploy.yml -e "app_version=$1" | tee "$LAB_DIR/deploy.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || die "deploy.yml failed (log: $LAB_DIR/deploy.log)"
}

# Build the app image from app/ on the lab base image and push it to the lab registry.
# The version is NOT baked into the image (APP_VERSION comes from the deploy's environment),
# so the same tree gives the same image under every tag: releases A and B of one tree differ
# only in the version they report.
build_and_push() {
  local version=$1 image="$PUSH_REGISTRY/$IMAGE_NAME:$1"
  log "Build $image"
  if [ -r "$BUILD_CA" ]; then
    cp "$BUILD_CA" app/.build-ca.pem   # build stage only; gitignored, never in the runtime stage
  fi
  local status=0
  docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$image" app/ || status=$?
  rm -f app/.build-ca.pem
  [ "$status" -eq 0 ] || die "docker build failed"
  log "Push $image"
  docker push "$image" >/dev/null
}

seed_catalog() {
  local version=$1 app_host registry
  app_host=$(ansible-inventory -i inventories/lab/hosts.yml --list |
    python3 -c 'import json,sys; print(sorted(json.load(sys.stdin)["app"]["hosts"])[0])')
  registry=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' labsvc):5000
  # --stripe: the products and prices exist in the Stripe stand-in too, so hosted Checkout
  # shows the real line items; seeding finds what it created before (idempotent).
  log "Seed the demo catalog (from $app_host)"
  docker exec "$app_host" docker run --rm --network host --env-file /etc/payments/app.env \
    --volume /etc/internal-tls:/etc/internal-tls:ro \
    "$registry/$IMAGE_NAME:$version" python -m payments seed --stripe
}

# Runs one step of `up` and records its wall-clock seconds in .lab/timings.
timed() {
  local name=$1 t=$SECONDS; shift
  "$@"
  echo "$name=$((SECONDS - t))" >>"$LAB_DIR/timings"
}

cmd_up() {
  local start=$SECONDS
  mkdir -p "$LAB_DIR"
  : >"$LAB_DIR/timings"
  scripts/ensure-dockerd.sh
  scripts/lab-base-image.sh
  if ! lab_running; then
    # Containers were removed or stopped outside molecule: forget molecule's state, so create
    # makes (or restarts) every one. create.yml reuses whatever still exists.
    mol reset >/dev/null 2>&1 || true
  fi
  log "Create the lab containers"
  timed create mol create
  log "Converge the lab services first (the registry the app hosts pull from)"
  timed lab_services converge "$LAB_DIR/converge-lab-services.log" --limit lab_services
  local version running
  version=$(app_content_version)
  timed image build_and_push "$version"
  echo "$version" >"$LAB_DIR/app-version"
  # site.yml gives a release only to an app host that runs none: on a host that runs the app it
  # keeps that release, and refuses another one (roles/app). So the first `up` converges with
  # this build; an `up` of a lab that runs the app converges with the release running (an app
  # host created again gets it too) and then rolls this build out with deploy.yml, the way a
  # release reaches production: a host at a time, drained, no request lost. Not with
  # app_version_override_running=true: that restarts every app container at once.
  mapfile -t running < <(running_app_versions)
  if [ "${#running[@]}" -eq 0 ]; then
    export LAB_APP_VERSION=$version
  elif [ "${#running[@]}" -eq 1 ]; then
    export LAB_APP_VERSION=${running[0]}
  else
    # Mixed releases (a deploy stopped half-way): each app host keeps its own.
    unset LAB_APP_VERSION
  fi
  log "Converge the whole stack: playbooks/site.yml (app ${LAB_APP_VERSION:-as each host runs it})"
  timed site converge "$LAB_DIR/converge.log"
  if [ "${#running[@]}" -gt 0 ] && [ "${running[*]}" != "$version" ]; then
    log "Roll app $version out over ${running[*]}: playbooks/deploy.yml"
    timed deploy deploy_release "$version"
  fi
  export LAB_APP_VERSION=$version
  timed seed seed_catalog "$version"
  echo "up=$((SECONDS - start))" >>"$LAB_DIR/timings"
  log "The lab is up in $((SECONDS - start)) s: $LB_URL (self-signed certificate; app $version)"
  echo "Prometheus: $PROMETHEUS_URL (targets: $PROMETHEUS_URL/targets, alerts: $PROMETHEUS_URL/alerts)"
  echo "Alertmanager: $ALERTMANAGER_URL; what it sent: docker exec mon1 cat /var/log/lab-alerts/received.jsonl"
}

cmd_down() {
  scripts/ensure-dockerd.sh
  local host
  staging_down
  mol destroy >/dev/null 2>&1 || true
  # Whatever molecule did not know about: only the lab's own names, never other scenarios'.
  for host in $(lab_hosts); do
    docker rm -f "$host" >/dev/null 2>&1 || true
    docker volume rm "payments-lab-$host-docker" >/dev/null 2>&1 || true
  done
  local leftover
  leftover=$(docker ps -aq --filter label=payments-lab=1 --filter network=payments-lab)
  [ -z "$leftover" ] || docker rm -f $leftover >/dev/null
  docker network rm payments-lab >/dev/null 2>&1 || true
  mol reset >/dev/null 2>&1 || true
  rm -rf "$LAB_DIR"
  echo "The lab is down."
}

cmd_release() {
  local version=${1:-}
  [ -n "$version" ] || die "usage: scripts/lab.sh release VERSION (e.g. make lab-release VERSION=1.4.2)"
  lab_running || die "the lab is not running: scripts/lab.sh up"
  mkdir -p "$LAB_DIR"
  build_and_push "$version"
  echo "Pushed $PUSH_REGISTRY/$IMAGE_NAME:$version. Roll it out with:"
  echo "  ansible-playbook playbooks/deploy.yml -e app_version=$version"
}

current_version() {
  [ -n "${LAB_APP_VERSION:-}" ] && { echo "$LAB_APP_VERSION"; return; }
  [ -r "$LAB_DIR/app-version" ] || die "no app version: run scripts/lab.sh up first"
  cat "$LAB_DIR/app-version"
}

# Configuration only: without app_version, each app host keeps the release it runs (a release
# changes through playbooks/deploy.yml; -e app_version=... must name the running one).
cmd_converge() {
  unset LAB_APP_VERSION
  converge "$LAB_DIR/converge-again.log" "$@"
}

cmd_verify() {
  LAB_APP_VERSION=$(current_version)
  export LAB_APP_VERSION
  LAB_REQUIRED=1 python -m pytest \
    -m "lab and not lab_deploy and not lab_failover and not lab_backup and not lab_staging and not lab_converge and not lab_monitoring" \
    tests/lab -q -p no:cacheprovider
}

# site.yml as a person at a terminal runs it (no LAB_APP_VERSION, no extra vars, a clean
# environment) changes nothing; another app_version is refused and changes nothing either.
cmd_verify_converge() {
  lab_running || die "the lab is not running: scripts/lab.sh up"
  LAB_REQUIRED=1 LAB_CONVERGE=1 python -m pytest -m lab_converge tests/lab/test_converge.py -q -p no:cacheprovider
}

cmd_verify_monitoring() {
  lab_running || die "the lab is not running: scripts/lab.sh up"
  LAB_REQUIRED=1 LAB_MONITORING=1 python -m pytest -m lab_monitoring tests/lab/test_monitoring.py -q -p no:cacheprovider -s
}

cmd_verify_deploy() {
  lab_running || die "the lab is not running: scripts/lab.sh up"
  LAB_REQUIRED=1 LAB_DEPLOY=1 python -m pytest -m lab_deploy tests/lab/test_deploy.py -q -p no:cacheprovider
}

cmd_verify_backup() {
  lab_running || die "the lab is not running: scripts/lab.sh up"
  LAB_REQUIRED=1 LAB_BACKUP=1 python -m pytest -m lab_backup tests/lab/test_backup.py -q -p no:cacheprovider
}

cmd_verify_failover() {
  lab_running || die "the lab is not running: scripts/lab.sh up"
  LAB_REQUIRED=1 LAB_FAILOVER=1 python -m pytest -m lab_failover tests/lab/test_failover.py -q -p no:cacheprovider -s
}

# The staging inventory's shape (one server in every group) on one container, stage1, next to
# the running lab: molecule/staging. Create it, converge site.yml on it, converge again (no
# change), test it (tests/lab/test_staging.py), remove it. Leaves the lab as it was.
cmd_staging() {
  lab_running || die "the lab is not running: scripts/lab.sh up"
  LAB_APP_VERSION=$(current_version)
  export LAB_APP_VERSION
  local t0=$SECONDS t status=0
  # A repository path of its own in the lab's bucket (molecule/staging/.../40-rehearsal.yml).
  LAB_STAGING_RUN=$(date +%s)
  export LAB_STAGING_RUN
  # stage1 goes, whatever the outcome: the lab stays as it was.
  trap staging_down EXIT
  log "Staging rehearsal: create stage1"
  staging_mol reset >/dev/null 2>&1 || true
  staging_mol create
  log "Staging rehearsal: converge playbooks/site.yml on stage1"
  t=$SECONDS
  SCENARIO=staging converge "$LAB_DIR/staging-converge.log" --limit stage1 \
    || die "staging rehearsal: converge failed (log: $LAB_DIR/staging-converge.log)"
  echo "staging=$((SECONDS - t))" >>"$LAB_DIR/timings"
  log "Staging rehearsal: second converge, must change nothing"
  t=$SECONDS
  SCENARIO=staging converge "$LAB_DIR/staging-second.log" --limit stage1 \
    || die "staging rehearsal: second converge failed"
  recap_clean "$LAB_DIR/staging-second.log" "staging second converge ($((SECONDS - t)) s)"
  log "Staging rehearsal: tests"
  LAB_REQUIRED=1 LAB_STAGING=1 python -m pytest -m lab_staging tests/lab/test_staging.py -q -p no:cacheprovider \
    || status=$?
  staging_down
  trap - EXIT
  [ "$status" -eq 0 ] || die "staging rehearsal: tests failed"
  log "Staging rehearsal passed in $((SECONDS - t0)) s"
}

staging_mol() { SCENARIO=staging mol "$@"; }

staging_down() {
  staging_mol destroy >/dev/null 2>&1 || true
  staging_mol reset >/dev/null 2>&1 || true
}

# Disaster recovery drill: lose both database hosts (containers and data), create them empty,
# run playbooks/dr.yml, and print the recovery time (RTO) and what the repository gave back.
cmd_dr() {
  lab_running || die "the lab is not running: scripts/lab.sh up"
  LAB_APP_VERSION=$(current_version)
  export LAB_APP_VERSION
  local q="SELECT count(*) || ' orders, newest ' || coalesce(max(created_at)::text, '-') FROM orders"
  log "Before: $(docker exec db1 runuser -u postgres -- psql -d payments -XAtq -c "$q")"
  local t0=$SECONDS
  log "Disaster: remove db1 and db2 with their data"
  docker rm -f db1 db2 >/dev/null
  mol reset >/dev/null 2>&1 || true
  mol create >/dev/null
  log "Recover: playbooks/dr.yml"
  ansible-playbook -i inventories/lab playbooks/dr.yml -e "app_version=$LAB_APP_VERSION" | tee "$LAB_DIR/dr.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || die "dr.yml failed (log: $LAB_DIR/dr.log)"
  log "Recovered in $((SECONDS - t0)) s (host loss to healthy site): $(docker exec db1 runuser -u postgres -- \
    psql -d payments -XAtq -c "$q")"
}

cmd_bench_deploy() {
  lab_running || die "the lab is not running: scripts/lab.sh up"
  python scripts/bench_deploy.py --output docs/benchmarks.md
}

# A second converge must change nothing, and check mode must report no change and no failure.
cmd_second_converge() {
  local t status=0
  LAB_APP_VERSION=$(current_version)
  export LAB_APP_VERSION
  log "Second converge: must change nothing"
  t=$SECONDS
  converge "$LAB_DIR/converge-second.log" || status=$?
  [ "$status" -eq 0 ] || die "second converge failed"
  echo "second=$((SECONDS - t))" >>"$LAB_DIR/timings"
  recap_clean "$LAB_DIR/converge-second.log" "second converge ($((SECONDS - t)) s)"
}

cmd_check_mode() {
  local t
  LAB_APP_VERSION=$(current_version)
  export LAB_APP_VERSION
  log "Check mode on the converged lab: no changes, no failures"
  t=$SECONDS
  converge "$LAB_DIR/converge-check.log" --check || die "check mode failed"
  echo "check=$((SECONDS - t))" >>"$LAB_DIR/timings"
  recap_clean "$LAB_DIR/converge-check.log" "check mode ($((SECONDS - t)) s)"
}

cmd_idempotence() {
  cmd_second_converge
  cmd_check_mode
}

cmd_test() {
  local t0=$SECONDS
  cmd_down
  cmd_up
  # The no-change converge is the first clean-environment test (tests/lab/test_converge.py:
  # a plain site.yml, changed=0 on every host), so `test` does not run a second one as well.
  cmd_check_mode
  log "A plain site.yml from a clean environment keeps every release and changes nothing"
  cmd_verify_converge
  log "End-to-end tests"
  cmd_verify
  log "Monitoring: every target scraped, faults raise their alerts at the receiver, which resolve"
  cmd_verify_monitoring
  log "Rolling deploys, a failed release, a rollback and the deploy lock, under load"
  cmd_verify_deploy
  log "Backups: point-in-time restore and the restore drill"
  cmd_verify_backup
  log "Failover of the primary under load, rejoin, switchover back"
  cmd_verify_failover
  log "The staging inventory's shape on one container"
  cmd_staging
  if [ "${LAB_KEEP:-0}" != 1 ]; then cmd_down; fi
  log "Lab test passed in $((SECONDS - t0)) s"
}

cmd_bench() {
  local t second up_total
  cmd_down
  t=$SECONDS
  cmd_up
  up_total=$((SECONDS - t))
  export LAB_APP_VERSION
  LAB_APP_VERSION=$(current_version)
  t=$SECONDS
  converge "$LAB_DIR/converge-second.log"
  second=$((SECONDS - t))
  recap_clean "$LAB_DIR/converge-second.log" "no-change converge"
  python scripts/lab_bench_record.py --timings "$LAB_DIR/timings" \
    --up-seconds "$up_total" --second-seconds "$second" \
    --fresh-log "$LAB_DIR/converge.log" --lab-services-log "$LAB_DIR/converge-lab-services.log" \
    --second-log "$LAB_DIR/converge-second.log" --output docs/benchmarks.md
  echo "Recorded in docs/benchmarks.md (section Lab): up ${up_total} s, no-change converge ${second} s."
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  release) shift; cmd_release "${1:-}" ;;
  converge) shift; cmd_converge "$@" ;;
  verify) cmd_verify ;;
  verify-converge) cmd_verify_converge ;;
  seed) seed_catalog "$(current_version)" ;;
  idempotence) cmd_idempotence ;;
  verify-backup) cmd_verify_backup ;;
  verify-failover) cmd_verify_failover ;;
  verify-deploy) cmd_verify_deploy ;;
  verify-monitoring) cmd_verify_monitoring ;;
  staging) cmd_staging ;;
  bench-deploy) cmd_bench_deploy ;;
  dr) cmd_dr ;;
  test) cmd_test ;;
  bench) cmd_bench ;;
  *) sed -n '2,39p' "$0" >&2; exit 2 ;;
esac

# Entry points for people and CI. `make lab` and `make test` set up everything they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: bootstrap dev test test-app lint molecule lab lab-down lab-release \
        bench-app bench-lab bench-deploy bench-backup

bootstrap:
	@scripts/bootstrap.sh

## dev: run the app on http://127.0.0.1:8000 with local PostgreSQL, Redis, localstripe, an SMTP sink and the mail worker
dev: bootstrap
	$(PY) scripts/dev.py

## test: every test stage, each one timed (what CI runs)
test: bootstrap
	@scripts/test.sh

test-app: bootstrap
	$(PY) -m pytest tests/app tests/test_support_services.py tests/awx tests/ci

lint: bootstrap
	yamllint .
	ansible-lint --profile production
	actionlint

molecule: bootstrap
	@scripts/molecule-roles.sh

## lab: the whole stack in local containers, then the URL
lab: bootstrap
	@scripts/lab.sh up

lab-down: bootstrap
	@scripts/lab.sh down

lab-release: bootstrap
	@scripts/lab.sh release "$(VERSION)"

bench-app: bootstrap
	$(PY) scripts/bench_app.py

bench-lab: bootstrap
	@scripts/lab.sh bench

## bench-deploy: a rolling deploy of the running lab under load, against the same load without one
bench-deploy: bootstrap
	@scripts/lab.sh bench-deploy

## bench-backup: pgBackRest backup/restore throughput against tar, full restore time, RPO and failover
# on the molecule scenario roles/pgbackrest/molecule/bench (BENCH_BACKUP_ARGS="--scale 5 --keep")
bench-backup: bootstrap
	$(PY) scripts/bench_backup.py $(BENCH_BACKUP_ARGS)

## smoke: smoke-test a running site through its load balancer (scripts/smoke.py), e.g.
# make smoke URL=https://payments.example.invalid; the lab: URL=https://127.0.0.1:8443 SMOKE_ARGS=--insecure
.PHONY: smoke
smoke:
	@test -n "$(URL)" || { echo "usage: make smoke URL=https://... [SMOKE_ARGS='--insecure --expect-version V']" >&2; exit 2; }
	python3 scripts/smoke.py "$(URL)" $(SMOKE_ARGS)

#!/usr/bin/env bash
# The monitoring role's alert rules: render the rule templates with the role defaults
# (roles/monitoring/tests/render-rules.yml), check them with `promtool check rules`, check
# that every alert has a unit test expecting it to fire and one expecting it quiet, and run
# the unit tests (roles/monitoring/tests/rules/*.test.yml) with `promtool test rules`.
# promtool comes from Debian's prometheus package (scripts/bootstrap.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

role=roles/monitoring
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/rules" "$work/tests"

if ! ansible-playbook -i localhost, "$role/tests/render-rules.yml" \
  -e promtool_render_dir="$work/rules" >"$work/render.log" 2>&1; then
  cat "$work/render.log" >&2
  echo "promtool-test: rendering the rule templates failed" >&2
  exit 1
fi

promtool check rules "$work"/rules/*.yml

# The test files name their rule files as ../rules/<name>.yml.
cp "$role"/tests/rules/*.test.yml "$work/tests/"

python3 - "$work" <<'EOF'
import glob, os, sys
import yaml

work = sys.argv[1]
alerts = {}
for path in sorted(glob.glob(os.path.join(work, "rules", "*.yml"))):
    for group in yaml.safe_load(open(path))["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                alerts[rule["alert"]] = os.path.basename(path)
fires, quiet = set(), set()
test_files = sorted(glob.glob(os.path.join(work, "tests", "*.test.yml")))
for path in test_files:
    for test in yaml.safe_load(open(path))["tests"]:
        for case in test.get("alert_rule_test", []):
            (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
missing = [f"{name} ({alerts[name]}): "
           + ", ".join(kind for kind, seen in (("no test expects it to fire", fires), ("no test expects it quiet", quiet))
                       if name not in seen)
           for name in sorted(alerts) if name not in fires or name not in quiet]
unknown = sorted((fires | quiet) - set(alerts))
if not alerts or missing or unknown:
    for line in missing:
        print(f"promtool-test: {line}", file=sys.stderr)
    for name in unknown:
        print(f"promtool-test: the tests name {name}, which no rule file defines", file=sys.stderr)
    if not alerts:
        print("promtool-test: no alert rules rendered", file=sys.stderr)
    sys.exit(1)
print(f"promtool-test: {len(alerts)} alerts in {len({*alerts.values()})} rule files, each expected "
      f"to fire and to stay quiet by {len(test_files)} test files")
EOF

(cd "$work/tests" && promtool test rules ./*.test.yml)
echo "promtool-test: all rule unit tests passed"

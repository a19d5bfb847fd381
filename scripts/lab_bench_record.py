#!/usr/bin/env python3
"""Write the lab's converge timings into docs/benchmarks.md, section "## Lab".

Called by `scripts/lab.sh bench` with the wall-clock times it measured and the converge logs,
whose profile_tasks summaries ("TASKS RECAP") name the slowest tasks. Only the "## Lab"
section of the file is replaced; other sections are kept as they are.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
from pathlib import Path

from bench_docs import replace_section  # scripts/bench_docs.py (scripts/ is on sys.path)

TARGET_FRESH_SECONDS = 600
TARGET_SECOND_SECONDS = 90
TASK_LINE = re.compile(r"^[\s│|]*(?P<name>.+?) -{3,}\s+(?P<seconds>[0-9]+\.[0-9]+)s\s*$")
RECAP_LINE = re.compile(r"^[\s│|]*(?P<host>[\w.-]+)\s+: ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)")


def slowest(log: Path, count: int = 10) -> list[tuple[str, float]]:
    tasks: list[tuple[str, float]] = []
    in_recap = False
    for line in log.read_text(errors="replace").splitlines():
        if "TASKS RECAP" in line:
            in_recap = True
            continue
        match = TASK_LINE.match(line)
        if in_recap and match:
            tasks.append((match["name"].strip(), float(match["seconds"])))
    return sorted(tasks, key=lambda item: -item[1])[:count]


def recap(log: Path) -> list[str]:
    """The last PLAY RECAP of the log: host, ok and changed counts."""
    lines = log.read_text(errors="replace").splitlines()
    start = max((i for i, line in enumerate(lines) if "PLAY RECAP" in line), default=-1)
    found = []
    for line in lines[start + 1:]:
        match = RECAP_LINE.match(line)
        if match:
            found.append(f"{match['host']} ok={match['ok']} changed={match['changed']}")
    return found


def timings(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name: value for name, value in pairs}


def verdict(seconds: int, target: int) -> str:
    return f"{'within' if seconds <= target else 'OVER'} the {target} s target"


def section(args) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpus = os.cpu_count()
    steps = timings(args.timings)
    out = [
        "## Lab",
        "",
        f"Measured with `scripts/lab.sh` ({args.source}) on {now} ({platform.system()}, "
        f"{cpus} CPUs shared with other work: load average {os.getloadavg()[0]:.1f} when recorded). "
        "Wall-clock times of `molecule converge` of the lab scenario (playbooks/site.yml) on seven "
        "containers.",
        "",
        "| run | seconds | target |",
        "| --- | ---: | --- |",
        f"| `scripts/lab.sh up` from nothing (create, lab services, image build + push, whole stack, seed) "
        f"| {args.up_seconds} | {verdict(args.up_seconds, TARGET_FRESH_SECONDS)} |",
        f"| second converge of site.yml, no changes | {args.second_seconds} "
        f"| {verdict(args.second_seconds, TARGET_SECOND_SECONDS)} |",
        "",
        "Step timings from .lab/timings (seconds): " + ", ".join(f"{k} {v}" for k, v in steps.items())
        + ". `site` is the first converge of playbooks/site.yml on the whole lab (lab services were"
        " converged just before it, so it includes their no-change pass)"
        + ("; `second` and `check` are the no-change converge and the `--check` run after it."
           if "second" in steps else "."),
        "",
        "Slowest tasks of the fresh converge of the whole stack (profile_tasks):",
        "",
    ]
    for name, seconds in slowest(args.fresh_log):
        out.append(f"- {seconds:.1f} s: {name}")
    out += ["", "Slowest tasks of the no-change converge:", ""]
    for name, seconds in slowest(args.second_log):
        out.append(f"- {seconds:.1f} s: {name}")
    out += ["", "Recap of the no-change converge: " + ", ".join(recap(args.second_log)), ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--up-seconds", type=int, required=True)
    parser.add_argument("--second-seconds", type=int, required=True)
    parser.add_argument("--fresh-log", type=Path, required=True)
    parser.add_argument("--lab-services-log", type=Path)
    parser.add_argument("--timings", type=Path, help="name=seconds lines written by scripts/lab.sh up")
    parser.add_argument("--second-log", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--source", default="bench", help="how the numbers were taken")
    args = parser.parse_args()

    replace_section(args.output, "Lab", section(args))


if __name__ == "__main__":
    main()

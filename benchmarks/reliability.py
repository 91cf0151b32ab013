"""Reliability figures for docs/reliability.md: run the fuzz, security and crash-safety tests
with many more cases than the normal suite, tally every case, and summarise.

    python benchmarks/reliability.py [--examples 300] [--kills 12] [--out docs/results/reliability.json]

Every CLI case the tests run is appended to a tally (tests/support/fuzzing.py: ``record``) with its
category, command and exit code, and whether a traceback was seen; kills record what the
output path held afterwards. This script only counts: the assertions live in the tests, and
a failing test makes this script fail too.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUZZ_TESTS = ["tests/formats/test_fuzz_specs.py", "tests/loading/test_fuzz_checkpoints.py",
              "tests/loading/test_fuzz_bundles.py", "tests/loading/test_security.py"]
CRASH_TESTS = ["tests/test_crash_safety.py"]


def run_pytest(files: list[str], env: dict[str, str], workers: int) -> tuple[int, float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers), *files],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    tail = "\n".join([line for line in lines if line.startswith(("FAILED", "ERROR"))] + lines[-1:])
    return proc.returncode, time.perf_counter() - start, tail


def summarise(lines: list[dict]) -> dict:
    by_category: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    tracebacks = 0
    undocumented = 0
    for case in lines:
        if case["category"] in ("crash", "concurrent"):
            continue
        by_category[case["category"]][str(case["exit_code"])] += 1
        tracebacks += bool(case["traceback"])
        undocumented += case["exit_code"] not in (0, 2, 3, 4, 5, 6)
    crash = [c for c in lines if c["category"] == "crash"]
    concurrent = [c for c in lines if c["category"] == "concurrent"]
    tamper = [c for c in lines if c["category"] == "bundle-tamper"]
    return {
        "cases": {cat: {"total": sum(counts.values()), "exit_codes": dict(sorted(counts.items()))}
                  for cat, counts in sorted(by_category.items())},
        "total_cases": sum(sum(c.values()) for c in by_category.values()),
        "tracebacks": tracebacks,
        "undocumented_exit_codes": undocumented,
        "problem_samples": [{k: c.get(k) for k in ("category", "command", "exit_code", "message")} for c in lines
                            if c["category"] not in ("crash", "concurrent")
                            and (c["traceback"] or c["exit_code"] not in (0, 2, 3, 4, 5, 6))][:10],
        "kills": {
            "runs": len(crash),
            "killed_mid_run": sum(c["killed"] for c in crash),
            "by_command": dict(collections.Counter(c["command"] for c in crash)),
            "after_kill": dict(collections.Counter(c["state"] for c in crash)),
            "half_written": sum(c["state"] == "broken" for c in crash),
        },
        "concurrent_pairs": {"rounds": len(concurrent),
                             "results": dict(collections.Counter(c["state"] for c in concurrent))},
        "tampering": {"flips": len(tamper), "caught_exit_4": sum(c["exit_code"] == 4 for c in tamper)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300, help="hypothesis examples per fuzz test")
    parser.add_argument("--kills", type=int, default=12, help="SIGKILLs per crash-safety test")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "reliability.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tally = Path(tmp) / "tally.jsonl"
        env = {**os.environ, "PRUNECTL_FUZZ_TALLY": str(tally), "PRUNECTL_FUZZ_EXAMPLES": str(args.examples),
               "PRUNECTL_CRASH_KILLS": str(args.kills)}
        runs = {}
        for label, files, workers in (("fuzz", FUZZ_TESTS, args.workers), ("crash", CRASH_TESTS, 1)):
            code, seconds, tail = run_pytest(files, env, workers)
            runs[label] = {"exit_code": code, "seconds": round(seconds, 1), "pytest": tail}
            print(f"{label}: pytest exit {code} in {seconds:.0f}s: {tail.splitlines()[-1] if tail else ''}")
            if code:
                print(tail)
        lines = [json.loads(line) for line in tally.read_text().splitlines()] if tally.exists() else []

    summary = {"examples_per_fuzz_test": args.examples, "kills_per_crash_test": args.kills, "runs": runs,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               **summarise(lines)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("total_cases", "tracebacks", "undocumented_exit_codes",
                                               "problem_samples", "kills", "tampering")}, indent=2))
    print(f"wrote {args.out}")
    return 0 if all(r["exit_code"] == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

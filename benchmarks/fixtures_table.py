"""Every fixture through prune + ONNX: params/MACs before and after, soft-vs-hard and ONNX errors.

    .venv/bin/python benchmarks/fixtures_table.py      # writes docs/results/fixtures.md and docs/results/fixtures.json
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import prunectl  # noqa: E402
from fixtures.make_checkpoints import FIXTURES, make_all  # noqa: E402


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = make_all(Path(tmp) / "ckpts")
        for name in sorted(FIXTURES):
            start = time.perf_counter()
            result = prunectl.prune(checkpoints[name], prunectl.PruneOptions(
                spec=ROOT / "fixtures" / "specs" / f"{name}.json", output=Path(tmp) / name, onnx=True))
            seconds = time.perf_counter() - start
            manifest = result.manifest.to_json()
            rows.append({"fixture": name, "rate": manifest["rate"],
                         "params_before": result.report["params"]["before"],
                         "params_after": result.report["params"]["after"],
                         "macs_before": result.report["macs"]["before"], "macs_after": result.report["macs"]["after"],
                         "soft_vs_hard_max_abs": manifest["verify"]["soft_vs_hard_max_abs"],
                         "onnx_max_abs": manifest["onnx"]["max_abs"], "seconds": round(seconds, 2)})
    (ROOT / "docs" / "results" / "fixtures.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Fixtures through the whole pipeline", "",
             "`.venv/bin/python benchmarks/fixtures_table.py` (spec rate, l1, ONNX opset 17, 2-core CPU).", "",
             "| fixture | rate | params before | params after | MACs before | MACs after | soft vs hard max abs | "
             "ONNX max abs | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fixture']} | {r['rate']} | {r['params_before']:,} | {r['params_after']:,} | "
                     f"{r['macs_before']:,} | {r['macs_after']:,} | {r['soft_vs_hard_max_abs']:.2e} | "
                     f"{r['onnx_max_abs']:.2e} | {r['seconds']} |")
    (ROOT / "docs" / "results" / "fixtures.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""sha256 of every file of the bundles the CLI writes for the fixtures, under many option sets.

    python scripts/bundle_digests.py OUT.json

Run it on two commits and compare the JSON files: a refactoring that changes no behaviour gives
the same digests (bundles are byte-deterministic). It goes through the command line only
(``prunectl.cli``), so it runs unchanged on any commit whose commands and options are the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "fixtures" / "specs"

# (case name, checkpoint name, arguments after the checkpoint); {spec} is the fixture's spec
VARIANTS = [
    ("spec-onnx", ["--spec", "{spec}", "--onnx"]),
    ("group_l1-0.3", ["--spec", "{spec}", "--criterion", "group_l1", "--rate", "0.3"]),
    ("fpgm-round8", ["--spec", "{spec}", "--criterion", "fpgm", "--round-to", "8"]),
    ("lamp-global", ["--spec", "{spec}", "--criterion", "lamp", "--global", "--rate", "0.4"]),
    ("random-seed3", ["--spec", "{spec}", "--criterion", "random", "--seed", "3"]),
    ("union", ["--spec", "{spec}", "--group-reduce", "union", "--rate", "0.25"]),
    ("unstructured", ["--spec", "{spec}", "--mode", "unstructured", "--rate", "0.5"]),
    ("target-macs", ["--spec", "{spec}", "--target-macs", "0.6"]),
    ("steps-agp", ["--spec", "{spec}", "--steps", "3", "--schedule", "agp"]),
]
FIXTURES = ["alexnet", "conv1d", "dwsep", "mlp", "normnet", "resnet18", "small_mlp", "vgg11_bn"]
TRACED = {  # traced on the fly: no spec
    "resnet18": ["--model", "fixtures.models:ResNet18", "--input-shape", "1,3,32,32", "--rate", "0.3"],
    "dwsep": ["--model", "fixtures.models:DepthwiseSeparableCNN", "--input-shape", "1,3,32,32"],
    "normnet": ["--model", "fixtures.models:NormNet", "--input-shape", "1,3,32,32"],
}


def digests(directory: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


def _digits_cases(runner, cli, tmp: Path) -> dict[str, object]:
    """auto (both searches), finetune and data-driven criteria on the digits plugin's trained models."""
    import subprocess

    try:
        import prunectl_digits  # noqa: F401
    except ImportError:
        return {}
    digits = tmp / "digits"
    subprocess.run([sys.executable, "-m", "prunectl_digits.train", str(digits), "--epochs", "12"], check=True,
                   cwd=ROOT, capture_output=True)
    mlp, cnn = ["mlp.pt", "--spec", str(digits / "mlp.json")], ["cnn.pt", "--spec", str(digits / "cnn.json")]
    cases = {
        "digits/auto-cac": ["auto", *mlp, "--task", "digits", "--max-drop", "1", "--epochs", "2", "--max-steps", "3"],
        "digits/auto-netadapt": ["auto", *cnn, "--task", "digits", "--target-macs", "0.7", "--epochs", "1"],
        "digits/prune-taylor": ["prune", *mlp, "--criterion", "taylor", "--data", "digits"],
        "digits/prune-thinet": ["prune", *cnn, "--criterion", "thinet", "--data", "digits", "--rate", "0.3"],
        "digits/prune-apoz": ["prune", *cnn, "--criterion", "apoz", "--data", "digits", "--rate", "0.3"],
    }
    results: dict[str, object] = {}
    for case, (command, checkpoint, *args) in cases.items():
        out = tmp / case.replace("/", "-")
        result = runner.invoke(cli, [command, str(digits / checkpoint), *args, "-o", str(out), "-q"])
        results[case] = digests(out) if result.exit_code == 0 else {"exit_code": result.exit_code,
                                                                   "output": result.output.strip()[-300:]}
        print(f"{case}: {'ok' if result.exit_code == 0 else results[case]}", file=sys.stderr)
    tuned = tmp / "digits-finetuned"
    result = runner.invoke(cli, ["finetune", str(tmp / "digits-prune-taylor"), "--task", "digits", "--epochs", "2",
                                 "-o", str(tuned), "-q"])
    results["digits/finetune"] = digests(tuned) if result.exit_code == 0 else {"exit_code": result.exit_code}
    return results


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    from fixtures.make_checkpoints import make_all
    from prunectl.cli import cli

    runner = CliRunner()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = make_all(Path(tmp) / "ckpts")
        cases = [(f"{name}/{variant}", checkpoints[name], [a.replace("{spec}", str(SPECS / f"{name}.json"))
                                                            for a in args])
                 for name in FIXTURES for variant, args in VARIANTS]
        cases += [(f"{name}/traced", checkpoints[name], args) for name, args in TRACED.items()]
        cases.append(("alexnet_full/spec", checkpoints["alexnet_full"], ["--spec", str(SPECS / "alexnet.json")]))
        cases.append(("alexnet/cac-model-info", checkpoints["alexnet"],
                      ["--spec", str(SPECS / "cac_alexnet_model_info.json"), "--model", "fixtures.models:AlexNet",
                       "--input-shape", "1,3,32,32"]))
        for index, (case, checkpoint, args) in enumerate(cases):
            out = Path(tmp) / f"bundle-{index}"
            result = runner.invoke(cli, ["prune", str(checkpoint), *args, "-o", str(out), "-q"])
            if result.exit_code != 0:
                results[case] = {"exit_code": result.exit_code, "output": result.output.strip()[-300:]}
            else:
                results[case] = digests(out)
                again = Path(tmp) / f"bundle-{index}-again"  # iterative pruning of the bundle itself
                second = runner.invoke(cli, ["prune", str(out), "--rate", "0.2", "-o", str(again), "-q"]) \
                    if case.endswith("spec-onnx") else None
                if second is not None:
                    results[f"{case}+reprune"] = digests(again) if second.exit_code == 0 else {
                        "exit_code": second.exit_code, "output": second.output.strip()[-300:]}
            print(f"{case}: {'ok' if 'exit_code' not in results[case] else results[case]}", file=sys.stderr)
        results.update(_digits_cases(runner, cli, Path(tmp)))
    Path(argv[0]).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

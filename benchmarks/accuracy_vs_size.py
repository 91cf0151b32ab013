"""Accuracy vs size on the digits task: every registered criterion against Torch-Pruning.

    .venv/bin/python benchmarks/accuracy_vs_size.py            # docs/results/bench/accuracy_vs_size.{json,png}
    .venv/bin/python benchmarks/accuracy_vs_size.py --quick    # CNN only, fewer levels (< 2 min)

For each digits model (prunectl_digits, trained deterministically once), each criterion that
``prunectl criteria`` lists, and each MACs level (fraction of the original MACs kept), prunectl
prunes the trained model with ``PruneOptions(target_macs=level)`` (data-driven criteria get
``data="digits"``), then the pruned model is fine-tuned with prunectl's ``fine_tune`` for the
same number of epochs and the same seeds (mean of 3 in the full run). Torch-Pruning's
``MagnitudePruner`` (L1, one uniform ratio bisected to the same MACs; ``auto_digits.tp_uniform``)
gets the identical fine-tune.
Validation and test accuracy are reported, before and after fine-tuning. ``bn_scale`` scores
BatchNorm gammas, so it is skipped (with a note) on models without BatchNorm.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ siblings
from _common import print_table, write_results  # noqa: E402
from auto_digits import tp_uniform  # noqa: E402  (the same Torch-Pruning baseline as auto_digits)

LEVELS = (0.7, 0.5, 0.3)
FINE_TUNE_EPOCHS = 5
FINE_TUNE_SEEDS = (0, 1, 2)
NO_BN_LAYERS = {"cnn": ("fc1",)}  # prunable layers that no BatchNorm follows
LAST_LAYER = {"mlp": lambda m: [m.fc3], "cnn": lambda m: [m.fc2]}  # classifier outputs stay 10


def _widths(model) -> dict[str, int]:
    """Output width of each conv/linear layer: shows how each tool spread the cut over layers."""
    return {name: getattr(m, "out_channels", getattr(m, "out_features", 0)) for name, m in model.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def _accuracy(model, task) -> dict[str, float]:
    from prunectl.tasks import evaluate

    return {"validation": round(float(task.metric(model)), 2),
            "test": round(float(evaluate(model, task.test_batches())), 2)}


def _fine_tuned(model, task, epochs: int, seeds) -> dict:
    """Fine-tune a copy per seed; the mean is what the table and plot show (the test split is
    360 images, so one seed's noise is about a point)."""
    import copy
    import statistics

    from prunectl.training.finetune import FineTuneOptions, fine_tune

    before = _accuracy(model.eval(), task)
    per_seed = []
    for seed in seeds:
        candidate = copy.deepcopy(model)
        fine_tune(candidate, task, FineTuneOptions(epochs=epochs, seed=seed))
        per_seed.append(_accuracy(candidate.eval(), task))
    mean = {k: round(statistics.fmean(a[k] for a in per_seed), 2) for k in ("validation", "test")}
    spread = round(statistics.pstdev(a["test"] for a in per_seed), 2)
    return {**mean, "test_std": spread, "per_seed": per_seed,
            "validation_before_ft": before["validation"], "test_before_ft": before["test"]}


def run_model(model_name: str, criteria: list[dict], levels, epochs: int, seeds, tmp: Path) -> dict:
    import prunectl
    from prunectl.measure.size import count_macs, count_params
    from prunectl_digits.models import spec_for
    from prunectl_digits.task import DigitsTask
    from prunectl_digits.train import train_model

    task, example = DigitsTask(), torch.zeros(1, 1, 8, 8)
    model = train_model(model_name)
    ckpt, spec = tmp / f"{model_name}.pt", tmp / f"{model_name}.json"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": f"digits:{model_name}", "args": {}}}, ckpt)
    spec.write_text(json.dumps(spec_for(model_name)))
    base_macs = count_macs(model, example)
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    result = {"original": {"macs": base_macs, "params": count_params(model), "widths": _widths(model),
                           **_accuracy(model, task)},
              "fine_tune_epochs": epochs, "fine_tune_seeds": list(seeds), "runs": [], "skipped": {}, "notes": {}}
    for level in levels:
        for criterion in criteria:
            name = criterion["name"]
            exclude: tuple[str, ...] = ()
            if name == "bn_scale":
                if not has_bn:
                    result["skipped"][name] = "no BatchNorm in this model: bn_scale scores BatchNorm gammas"
                    continue
                # bn_scale cannot score a layer without a following BatchNorm (the CNN's fc1):
                # leave those at full width and rank only the BN-followed ones.
                exclude = NO_BN_LAYERS.get(model_name, ())
                result["notes"][name] = f"layers without BatchNorm excluded (kept whole): {', '.join(exclude)}"
            started = time.perf_counter()
            try:
                pruned = prunectl.prune(ckpt, prunectl.PruneOptions(
                    spec=spec, criterion=name, target_macs=level, seed=0, exclude=exclude,
                    data="digits" if criterion["needs_data"] else None)).model
            except prunectl.errors.PrunectlError as error:  # record, keep going: one criterion must not sink the rest
                result["runs"].append({"tool": "prunectl", "criterion": name, "level": level, "error": str(error)})
                continue
            prune_s = time.perf_counter() - started
            macs = count_macs(pruned, example)
            row = {"tool": "prunectl", "criterion": name, "level": level, "macs": macs,
                   "macs_kept": round(macs / base_macs, 4), "params": count_params(pruned), "widths": _widths(pruned),
                   "prune_s": round(prune_s, 3), **_fine_tuned(pruned, task, epochs, seeds)}
            result["runs"].append(row)
            print(json.dumps({"model": model_name, **row}), flush=True)
        peer, peer_macs, ratio = tp_uniform(model.eval(), example, int(level * base_macs), LAST_LAYER[model_name])
        row = {"tool": "torch_pruning", "criterion": "tp_magnitude_uniform", "level": level, "ratio": round(ratio, 4),
               "macs": peer_macs, "macs_kept": round(peer_macs / base_macs, 4), "params": count_params(peer),
               "widths": _widths(peer), **_fine_tuned(peer, task, epochs, seeds)}
        result["runs"].append(row)
        print(json.dumps({"model": model_name, **row}), flush=True)
    return result


def plot(models: dict[str, dict]) -> bytes:
    from prunectl.views.charts import _png, _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.8), squeeze=False)
    for axis, (model_name, result) in zip(axes[0], models.items()):
        runs = [r for r in result["runs"] if "error" not in r]
        names = sorted({r["criterion"] for r in runs if r["tool"] == "prunectl"})
        colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for index, name in enumerate(names + ["tp_magnitude_uniform"]):
            points = sorted(((r["macs_kept"], r["test"]) for r in runs if r["criterion"] == name), reverse=True)
            xs, ys = [1.0] + [p[0] for p in points], [result["original"]["test"]] + [p[1] for p in points]
            tp = name == "tp_magnitude_uniform"
            axis.plot(xs, ys, linestyle="--" if tp else "-", marker="s" if tp else "o", markersize=4,
                      linewidth=2 if tp else 1.2, color="k" if tp else colours(index),
                      label="Torch-Pruning 1.6 (L1, uniform)" if tp else f"prunectl {name}")
        axis.set_title(f"digits {model_name}: test accuracy, {result['fine_tune_epochs']} fine-tune epochs "
                       f"(mean of {len(result['fine_tune_seeds'])} seeds)", fontsize=10)
        axis.set_xlabel("MACs kept (fraction of original)")
        axis.set_ylabel("test accuracy (%)")
        axis.invert_xaxis()
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower left")
        for index, (name, why) in enumerate(result["skipped"].items()):
            axis.annotate(f"{name} skipped: {why.split(':')[0]}", (0.99, 0.02 + 0.05 * index),
                          xycoords="axes fraction", ha="right", fontsize=7, color="0.4")
    figure.tight_layout()
    return _png(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CNN only, levels 0.5 and 0.3, 2 fine-tune epochs, 1 seed")
    parser.add_argument("--models", default=None, help="comma-separated: cnn,mlp (default: both; quick: cnn)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # bit-identical runs (see prunectl_digits.train)
    criteria = _criteria()
    levels = (0.5, 0.3) if args.quick else LEVELS
    epochs = 2 if args.quick else FINE_TUNE_EPOCHS
    seeds = (0,) if args.quick else FINE_TUNE_SEEDS
    model_names = (args.models or ("cnn" if args.quick else "cnn,mlp")).split(",")
    started = time.perf_counter()
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in model_names:
            models[model_name] = run_model(model_name, criteria, levels, epochs, seeds, Path(tmp))
    wall = round(time.perf_counter() - started, 1)
    rows = []
    for model_name, result in models.items():
        rows.append([f"{model_name} original", "-", 1.0, result["original"]["validation"], result["original"]["test"],
                     "-", "-", ""])
        for r in result["runs"]:
            if "error" in r:
                rows.append([f"{model_name} {r['criterion']}", r["level"], None, None, None, None, None,
                             r["error"][:60]])
                continue
            label = "TP uniform L1" if r["tool"] == "torch_pruning" else r["criterion"]
            rows.append([f"{model_name} {label}", r["level"], r["macs_kept"], r["validation"], r["test"],
                         r["test_std"], r["test_before_ft"], result["notes"].get(r["criterion"], "")])
        for name, why in result["skipped"].items():
            rows.append([f"{model_name} {name}", "-", None, None, None, None, None, f"skipped: {why}"])
    print_table(f"digits accuracy vs MACs kept ({epochs} fine-tune epochs, mean over seeds {list(seeds)}; {wall}s)",
                ["model / criterion", "target", "MACs kept", "val %", "test %", "test std", "test % before FT", "note"],
                rows)
    payload = {"levels": list(levels), "fine_tune_epochs": epochs, "fine_tune_seeds": list(seeds), "torch_threads": 1,
               "wall_seconds": wall, "criteria": criteria, "models": models}
    path = write_results("accuracy_vs_size", payload, plot(models), args.quick)
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


def _criteria() -> list[dict]:
    """Every registered criterion, as ``prunectl criteria --json`` lists them (plugins included)."""
    import subprocess

    exe = Path(sys.executable).with_name("prunectl")
    listed = json.loads(subprocess.run([str(exe), "criteria", "--json"], check=True, capture_output=True,
                                       text=True).stdout)
    return [{"name": c["name"], "needs_data": bool(c["needs_data"])} for c in listed]


if __name__ == "__main__":
    raise SystemExit(main())

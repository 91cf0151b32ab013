"""prunectl auto on the digits task vs Torch-Pruning's magnitude pruner at the same MACs.

    .venv/bin/python benchmarks/auto_digits.py            # writes docs/results/bench/auto_digits.{json,png}
    .venv/bin/python benchmarks/auto_digits.py --seeds 0 --cases cnn-cac --out /tmp/b   # one quick case

For each case: train the digits model (prunectl_digits.train, deterministic), run
``prunectl.auto`` (wall time measured on this machine), then prune the same trained model with
Torch-Pruning's ``MagnitudePruner`` (L1 magnitude, one uniform ratio for every layer, found
by bisection so that its MACs match prunectl's result) and fine-tune it with the same
fine-tuning code and the same number of epochs prunectl's accepted path used. Validation
accuracy (what the search sees) and test accuracy (never seen) are both reported.

Each case runs with seeds 0, 1, 2 (``--seeds`` to change): the search's seed and the same seed
for Torch-Pruning's fine-tune; the original model is the same (trained with seed 0). One image
is 0.28 points of the 360-image test split, so the means over the seeds are what to compare.
The settings in ``CASES`` were chosen on the validation split only (first 180 images seen by
the search, the other 179 held out), never on the test split.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = {
    # name: (model, auto options). Digits epochs are ~17 iterations each, so "40 epochs" is
    # far less training per step than CAC's MNIST example (10 epochs of 235 iterations).
    "mlp-cac": ("mlp", {"max_drop": 0.5, "epochs": 40, "loss_margin": 2.0, "final_epochs": 40}),
    "mlp-netadapt-params-0.153": ("mlp", {"max_drop": 0.5, "target_params": 0.153, "epochs": 5,
                                          "step_fraction": 0.04, "final_epochs": 100}),
    "cnn-cac": ("cnn", {"max_drop": 1.0, "epochs": 5, "final_epochs": 60}),
    "cnn-netadapt-macs-0.5": ("cnn", {"max_drop": 1.0, "target_macs": 0.5, "epochs": 2, "final_epochs": 60}),
}


def tp_uniform(model, example, goal_macs: int, ignored):
    import torch_pruning as tp

    from prunectl.measure.size import count_macs

    low, high, best = 0.0, 0.95, None
    for _ in range(30):
        ratio = (low + high) / 2
        candidate = __import__("copy").deepcopy(model)
        pruner = tp.pruner.MagnitudePruner(candidate, example, importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=ratio, ignored_layers=ignored(candidate))
        pruner.step()
        macs = count_macs(candidate, example)
        if best is None or abs(macs - goal_macs) < abs(best[1] - goal_macs):
            best = (candidate, macs, ratio)
        if macs > goal_macs:
            low = ratio
        else:
            high = ratio
    return best


def run_case(name: str, model_name: str, options: dict, seed: int, model, tmp: Path) -> dict:
    """One search with ``seed`` and the Torch-Pruning baseline at its MACs, same epochs, same seed."""
    import prunectl
    from prunectl.auto.search import auto
    from prunectl.measure.size import count_params
    from prunectl.options import AutoOptions
    from prunectl.tasks import evaluate
    from prunectl.training.finetune import FineTuneOptions, fine_tune
    from prunectl_digits.task import DigitsTask

    task = DigitsTask()
    output = tmp / f"{name}-seed{seed}"
    started = time.perf_counter()
    result = auto(tmp / f"{model_name}.pt", AutoOptions(task="digits", spec=tmp / f"{model_name}.json", output=output,
                                                         seed=seed, **options))
    wall = time.perf_counter() - started
    pruned = prunectl.load(output)
    history = result.history
    epochs = sum(h.get("epochs", 0) for h in history[1:])
    row = {"seed": seed, "wall_seconds": round(wall, 2), "stopped_because": result.stopped_because,
           "params": [history[0]["params"], history[-1]["params"]], "macs": [history[0]["macs"], history[-1]["macs"]],
           "params_smaller_pct": round(100 * (1 - history[-1]["params"] / history[0]["params"]), 2),
           "macs_fewer_pct": round(100 * (1 - history[-1]["macs"] / history[0]["macs"]), 2),
           "widths": history[-1]["widths"],
           "validation": [round(history[0]["accuracy"], 4), round(float(task.metric(pruned)), 4)],
           "test": [round(evaluate(model, task.test_batches()), 4), round(evaluate(pruned, task.test_batches()), 4)],
           "fine_tune_epochs_on_path": epochs}
    last = {"mlp": lambda m: [m.fc3], "cnn": lambda m: [m.fc2]}[model_name]
    peer, peer_macs, ratio = tp_uniform(model.eval(), torch.zeros(1, 1, 8, 8), history[-1]["macs"], last)
    fine_tune(peer, task, FineTuneOptions(epochs=epochs, seed=seed))
    row["torch_pruning"] = {"ratio": round(ratio, 4), "params": count_params(peer), "macs": peer_macs,
                            "validation": round(float(task.metric(peer)), 4),
                            "test": round(evaluate(peer, task.test_batches()), 4), "fine_tune_epochs": epochs}
    return row


def summarise(name: str, model_name: str, options: dict, runs: list[dict]) -> dict:
    """Means over the seeds, and on how many seeds prunectl's test accuracy beats Torch-Pruning's."""
    def mean(values) -> float:
        values = list(values)
        return round(sum(values) / len(values), 2)

    first = runs[0]
    return {"case": name, "model": model_name, "options": options, "seeds": [r["seed"] for r in runs],
            "original": {"params": first["params"][0], "macs": first["macs"][0],
                         "validation": first["validation"][0], "test": first["test"][0]},
            "mean": {"params": mean(r["params"][1] for r in runs), "macs": mean(r["macs"][1] for r in runs),
                     "params_smaller_pct": mean(r["params_smaller_pct"] for r in runs),
                     "macs_fewer_pct": mean(r["macs_fewer_pct"] for r in runs),
                     "validation": mean(r["validation"][1] for r in runs), "test": mean(r["test"][1] for r in runs),
                     "test_drop": mean(r["test"][0] - r["test"][1] for r in runs),
                     "wall_seconds": mean(r["wall_seconds"] for r in runs),
                     "torch_pruning_macs": mean(r["torch_pruning"]["macs"] for r in runs),
                     "torch_pruning_validation": mean(r["torch_pruning"]["validation"] for r in runs),
                     "torch_pruning_test": mean(r["torch_pruning"]["test"] for r in runs)},
            "test_higher_than_torch_pruning": sum(r["test"][1] > r["torch_pruning"]["test"] for r in runs),
            "test_equal_to_torch_pruning": sum(r["test"][1] == r["torch_pruning"]["test"] for r in runs),
            "runs": runs}


def main(argv: list[str] | None = None) -> int:
    from prunectl_digits.models import spec_for
    from prunectl_digits.train import train_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated search seeds (default 0,1,2)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench"), help="where the JSON and PNG go")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.cases.split(","):
            model_name, options = CASES[name]
            model = train_model(model_name)
            torch.save({"state_dict": model.state_dict(), "model": {"factory": f"digits:{model_name}", "args": {}}},
                       tmp / f"{model_name}.pt")
            (tmp / f"{model_name}.json").write_text(json.dumps(spec_for(model_name)))
            runs = []
            for seed in seeds:
                runs.append(run_case(name, model_name, options, seed, model, tmp))
                print(json.dumps({"case": name, **runs[-1]}), flush=True)
            rows.append(summarise(name, model_name, options, runs))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "runs"}), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "auto_digits.json").write_text(json.dumps({"machine": "2 CPU cores, 1 torch thread",
                                                      "torch": torch.__version__,
                                                      "seeds": seeds, "cases": rows}, indent=2) + "\n")
    from prunectl.views.charts import grouped_bars

    png = grouped_bars([r["case"] for r in rows],
                       {"prunectl auto (test, mean)": [r["mean"]["test"] for r in rows],
                        "Torch-Pruning uniform, same MACs (test, mean)": [r["mean"]["torch_pruning_test"]
                                                                          for r in rows],
                        "original (test)": [r["original"]["test"] for r in rows]},
                       "test accuracy (%)", f"digits: prunectl auto vs Torch-Pruning magnitude, same MACs and epochs "
                       f"(mean of {len(seeds)} seeds)")
    (out / "auto_digits.png").write_bytes(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

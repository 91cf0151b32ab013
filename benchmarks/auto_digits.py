"""prunectl auto on the digits task vs Torch-Pruning's magnitude pruner at the same MACs.

    .venv/bin/python benchmarks/auto_digits.py            # writes docs/bench/auto_digits.{json,png}

For each case: train the digits model (prunectl_digits.train, deterministic), run
``prunectl.auto`` (wall time measured on this machine), then prune the same trained model with
Torch-Pruning's ``MagnitudePruner`` (L1 magnitude, one uniform ratio for every layer, found
by bisection so that its MACs match prunectl's result) and fine-tune it with the same
fine-tuning code and the same number of epochs prunectl's accepted path used. Validation
accuracy (what the search sees) and test accuracy (never seen) are both reported.
"""
from __future__ import annotations

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
    "cnn-cac": ("cnn", {"max_drop": 1.0, "epochs": 5, "final_epochs": 20}),
    "cnn-netadapt-macs-0.5": ("cnn", {"max_drop": 1.0, "target_macs": 0.5, "epochs": 2, "final_epochs": 20}),
}


def tp_uniform(model, example, goal_macs: int, ignored):
    import torch_pruning as tp

    from prunectl.report import count_macs

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


def main() -> int:
    from prunectl.auto.search import AutoOptions, auto
    from prunectl.finetune import FineTuneOptions, fine_tune
    from prunectl.report import count_params
    from prunectl.tasks import evaluate
    from prunectl_digits.models import spec_for
    from prunectl_digits.task import DigitsTask
    from prunectl_digits.train import train_model

    torch.set_num_threads(1)
    task = DigitsTask()
    example = torch.zeros(1, 1, 8, 8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (model_name, options) in CASES.items():
            model = train_model(model_name)
            ckpt = tmp / f"{model_name}.pt"
            torch.save({"state_dict": model.state_dict(), "model": {"factory": f"digits:{model_name}", "args": {}}}, ckpt)
            (tmp / f"{model_name}.json").write_text(json.dumps(spec_for(model_name)))
            started = time.perf_counter()
            result = auto(ckpt, AutoOptions(task="digits", spec=tmp / f"{model_name}.json", output=tmp / name, **options))
            wall = time.perf_counter() - started
            import prunectl

            pruned = prunectl.load(tmp / name)
            history = result.history
            epochs = sum(h.get("epochs", 0) for h in history[1:])
            row = {"case": name, "model": model_name, "options": options, "wall_seconds": round(wall, 2),
                   "stopped_because": result.stopped_because,
                   "params": [history[0]["params"], history[-1]["params"]],
                   "macs": [history[0]["macs"], history[-1]["macs"]],
                   "params_smaller_pct": round(100 * (1 - history[-1]["params"] / history[0]["params"]), 2),
                   "macs_fewer_pct": round(100 * (1 - history[-1]["macs"] / history[0]["macs"]), 2),
                   "widths": history[-1]["widths"],
                   "validation": [history[0]["accuracy"], round(float(task.metric(pruned)), 4)],
                   "test": [round(evaluate(model, task.test_batches()), 4), round(evaluate(pruned, task.test_batches()), 4)],
                   "fine_tune_epochs_on_path": epochs}
            last = {"mlp": lambda m: [m.fc3], "cnn": lambda m: [m.fc2]}[model_name]
            peer, peer_macs, ratio = tp_uniform(model.eval(), example, history[-1]["macs"], last)
            fine_tune(peer, task, FineTuneOptions(epochs=epochs, seed=0))
            row["torch_pruning"] = {"ratio": round(ratio, 4), "params": count_params(peer), "macs": peer_macs,
                                    "validation": round(float(task.metric(peer)), 4),
                                    "test": round(evaluate(peer, task.test_batches()), 4), "fine_tune_epochs": epochs}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = ROOT / "docs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "auto_digits.json").write_text(json.dumps({"machine": "2 CPU cores, 1 torch thread", "torch": torch.__version__,
                                                      "cases": rows}, indent=2) + "\n")
    from prunectl.plots import grouped_bars

    png = grouped_bars([r["case"] for r in rows],
                       {"prunectl auto (test)": [r["test"][1] for r in rows],
                        "Torch-Pruning uniform, same MACs (test)": [r["torch_pruning"]["test"] for r in rows],
                        "original (test)": [r["test"][0] for r in rows]},
                       "test accuracy (%)", "digits: prunectl auto vs Torch-Pruning magnitude, same MACs and epochs")
    (out / "auto_digits.png").write_bytes(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

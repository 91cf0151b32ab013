"""Pruning during training (AGP, lottery ticket) vs pruning after training and fine-tuning, digits.

    .venv/bin/python benchmarks/training_digits.py           # docs/results/bench/training_digits.{json,png}
    .venv/bin/python benchmarks/training_digits.py --quick   # 1 seed, two sparsities (< 1 min)

Every method trains for the same ``EPOCHS`` epochs from the same initial weights and shuffles
(seeds 0, 1, 2; the mean is reported) with the same Adam loop (_digits_training.py); only the
Pruner's schedule differs:

- ``after``: dense training, one global-L1 cut at the end of epoch ``PRUNE_AT`` (``one_shot``),
  then fine-tuning to the last epoch: pruning after training, then fine-tuning.
- ``agp``: the sparsity follows Zhu & Gupta's cubic from epoch 1 to ``PRUNE_AT``.
- ``lottery``: iterative magnitude pruning, ``ROUNDS`` rounds of ``EPOCHS / (ROUNDS + 1)``
  epochs, the survivors rewound to their initial weights after each cut (Frankle & Carbin
  2019), the final ticket trained for the last period; ``lottery-rewind-1``: rewound to the
  weights after epoch 1 instead (Frankle et al. 2020).

The lottery-ticket claim is tested as the paper tests it: the last round's mask on the
*initial* weights, trained for the full ``EPOCHS`` (``ticket``), against the same mask on a
fresh random initialisation (``random-reinit``, the paper's control) and the dense model.
Unstructured runs use the MLP (64-64-32-10, as LeNet-300-100 for 8x8 digits), sparsity = the
fraction of all its linear weights cut (global ranking, as the paper's Conv/MLP runs use per
layer rates; global is the ``ModelPruning`` default here). Structured runs (``--structured``
section) use the CNN, ``mode="structured"``: the rate is the fraction of every layer's
channels (``round_to: 1``: the traced spec's deployment rounding to multiples of 8 would
make 0.5 and 0.7 the same widths), and size is the hard-pruned model's parameter count.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ siblings
from _common import print_table, write_results  # noqa: E402
from _digits_training import example, make, mean_std, test_accuracy, train, weight_zeros  # noqa: E402

EPOCHS = 40
PRUNE_AT = 29  # `after` and AGP's last cut: 10 epochs of fine-tuning follow
ROUNDS = 3
SPARSITIES = (0.5, 0.8, 0.9, 0.95)
CHANNEL_RATES = (0.3, 0.5, 0.7)
CNN_EPOCHS = 24
CNN_PRUNE_AT = 17
SEEDS = (0, 1, 2)


def unstructured_runs(sparsity: float, seed: int) -> dict[str, float]:
    from prunectl.hooks import Pruner, agp, lottery, one_shot

    period = EPOCHS // (ROUNDS + 1)
    per_round = 1 - (1 - sparsity) ** (1 / ROUNDS)
    schedules = {
        "after": (one_shot(sparsity, at=PRUNE_AT), {}),
        "agp": (agp(sparsity, start=1, end=PRUNE_AT), {}),
        "lottery": (lottery(per_round, rounds=ROUNDS, every=period, start=period - 1), {}),
        "lottery-rewind-1": (lottery(per_round, rounds=ROUNDS, every=period, start=period - 1), {"rewind": 1}),
    }
    out: dict[str, float] = {}
    for name, (schedule, options) in schedules.items():
        model, _ = train(make("mlp", seed), EPOCHS, seed,
                         lambda m, s=schedule, o=options: Pruner(m, s, global_ranking=True, **o))
        out[name] = test_accuracy(model)
        if name == "lottery":
            masks = {n: (m.weight != 0) for n, m in model.named_modules() if isinstance(m, nn.Linear)}
            out["lottery_zeros"] = round(weight_zeros(model), 4)
            out["ticket"] = test_accuracy(_masked_training(make("mlp", seed), masks, seed))
            out["random-reinit"] = test_accuracy(_masked_training(make("mlp", 1000 + seed), masks, seed))
    return out


def _masked_training(model: nn.Module, masks: dict[str, torch.Tensor], seed: int) -> nn.Module:
    """``model`` with ``masks`` fixed on its weights, trained for the full ``EPOCHS``."""
    for name, module in model.named_modules():
        if name in masks:
            torch_prune.custom_from_mask(module, "weight", masks[name])
    trained, _ = train(model, EPOCHS, seed)
    return trained


def structured_runs(rate: float, seed: int) -> dict[str, dict[str, float]]:
    from prunectl.hooks import Pruner, agp, lottery, one_shot
    from prunectl.measure.size import count_params

    period = CNN_EPOCHS // (ROUNDS + 1)
    per_round = 1 - (1 - rate) ** (1 / ROUNDS)
    schedules = {"after": one_shot(rate, at=CNN_PRUNE_AT), "agp": agp(rate, start=1, end=CNN_PRUNE_AT),
                 "lottery": lottery(per_round, rounds=ROUNDS, every=period, start=period - 1)}
    out = {}
    for name, schedule in schedules.items():
        model, _ = train(make("cnn", seed), CNN_EPOCHS, seed,
                         lambda m, s=schedule: Pruner(m, s, mode="structured", example_inputs=example(),
                                                      prune_options={"round_to": 1}))
        out[name] = {"test": test_accuracy(model), "params": count_params(model)}
    return out


def main(argv: list[str] | None = None) -> int:
    from rich.progress import track

    from prunectl.measure.size import count_params

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 0, sparsities 0.8 and 0.95, channel rate 0.5")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread: the same numbers from run to run
    seeds = (0,) if args.quick else SEEDS
    sparsities = (0.8, 0.95) if args.quick else SPARSITIES
    rates = (0.5,) if args.quick else CHANNEL_RATES
    started = time.perf_counter()
    dense = {"mlp": [], "cnn": []}
    for seed in track(seeds, description="dense baselines"):
        for name, epochs in (("mlp", EPOCHS), ("cnn", CNN_EPOCHS)):
            dense[name].append(test_accuracy(train(make(name, seed), epochs, seed)[0]))
    unstructured = []
    for sparsity in track(sparsities, description="unstructured (MLP)"):
        runs = [unstructured_runs(sparsity, seed) for seed in seeds]
        unstructured.append({"sparsity": sparsity, "weights_left_pct": round(100 * (1 - sparsity), 1),
                             "lottery_zeros": runs[0]["lottery_zeros"],
                             **{key: mean_std([run[key] for run in runs]) for key in runs[0]
                                if key != "lottery_zeros"}})
    structured = []
    for rate in track(rates, description="structured (CNN)"):
        runs = [structured_runs(rate, seed) for seed in seeds]
        structured.append({"channel_rate": rate, **{name: {"test": mean_std([run[name]["test"] for run in runs]),
                                                           "params": runs[0][name]["params"]}
                                                    for name in runs[0]}})
    wall = round(time.perf_counter() - started, 1)
    original = {name: mean_std(values) for name, values in dense.items()}
    cnn_params = count_params(make("cnn", 0))
    columns = ["weights left", "after + fine-tune", "AGP", "lottery (IMP)", "IMP rewind to epoch 1",
               f"ticket, {EPOCHS} epochs", "same mask, random init"]
    keys = ("after", "agp", "lottery", "lottery-rewind-1", "ticket", "random-reinit")
    print_table(f"digits MLP, test accuracy % (mean of seeds {list(seeds)}, {EPOCHS} epochs each; dense "
                f"{original['mlp']['mean']})", columns,
                [[f"{row['weights_left_pct']}%", *[row[key]["mean"] for key in keys]] for row in unstructured])
    print_table(f"digits CNN, structured, test accuracy % (dense {original['cnn']['mean']}, {cnn_params} params)",
                ["channels cut", "after + fine-tune", "AGP", "lottery (IMP)", "params"],
                [[row["channel_rate"], *[row[name]["test"]["mean"] for name in ("after", "agp", "lottery")],
                  row["after"]["params"]] for row in structured], note=f"{wall}s")
    payload = {"epochs": EPOCHS, "prune_at": PRUNE_AT, "rounds": ROUNDS, "cnn_epochs": CNN_EPOCHS,
               "cnn_prune_at": CNN_PRUNE_AT, "seeds": list(seeds), "torch_threads": 1, "wall_seconds": wall,
               "dense": original, "cnn_params": cnn_params, "unstructured_mlp": unstructured,
               "structured_cnn": structured}
    path = write_results("training_digits", payload, _plot(unstructured, original["mlp"]["mean"]), args.quick)
    print(path)
    return 0


def _plot(rows: list[dict], dense: float) -> bytes:
    from prunectl.views.charts import line_chart

    xs = [row["weights_left_pct"] for row in rows]
    series = {label: [row[key]["mean"] for row in rows] for key, label in (
        ("after", "after training + fine-tune"), ("agp", "AGP during training"), ("lottery", "lottery ticket (IMP)"),
        ("ticket", f"ticket trained {EPOCHS} epochs from init"))}
    return line_chart(xs, series, "weights left (%)", "test accuracy (%)",
                      f"digits MLP, {EPOCHS} epochs per method (dense: {dense}%)")


if __name__ == "__main__":
    raise SystemExit(main())

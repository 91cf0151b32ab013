"""Network slimming on the digits CNN: a sparsity (lambda) sweep, then bn_scale at 50 % and 70 % of the
channels, against l1 without sparsity training, with the same fine-tune.

    .venv/bin/python benchmarks/slimming_digits.py           # docs/results/bench/slimming_digits.{json,png}
    .venv/bin/python benchmarks/slimming_digits.py --quick   # seed 0, lambdas 0 and 1e-2

Each run trains the CNN for ``EPOCHS`` epochs (the Adam loop of _digits_training.py) through a
structured ``Pruner``: ``slimming=lambda`` adds ``lambda * sign(gamma)`` to every BatchNorm
scale's gradient (Liu et al. 2017), and a one-shot event after the last epoch cuts ``rate`` of
the channels of conv1 and conv2 by ``bn_scale`` (|gamma|) or by ``l1`` (filter norms). fc1
reaches no BatchNorm, so it is excluded for both criteria (``prune_options={"exclude":
["fc1"]}``): every row has the same widths and parameter count (``round_to: 1``: exact
rates, not the traced spec's multiples of 8). The hard-pruned model
(``pruner.result.model``) is then fine-tuned by prunectl's ``fine_tune`` (SGD, cosine) for
``FINE_TUNE_EPOCHS`` with the run's seed. Reported: test accuracy of the sparsity-trained dense
model, right after the cut, and after fine-tuning (means of 3 seeds), and the share of scales
the penalty drove below 0.01 (the polarisation slimming relies on).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ siblings
from _common import print_table, write_results  # noqa: E402
from _digits_training import LR, example, make, mean_std, test_accuracy, train_epoch  # noqa: E402

EPOCHS = 24
FINE_TUNE_EPOCHS = 5
LAMBDAS = (0.0, 1e-4, 1e-3, 3e-3, 1e-2)
RATES = (0.5, 0.7)
SEEDS = (0, 1, 2)
SMALL_SCALE = 0.01


def run(criterion: str, strength: float, rate: float, seed: int) -> dict[str, float]:
    from prunectl.hooks import Pruner, one_shot
    from prunectl.training.finetune import FineTuneOptions, fine_tune
    from prunectl_digits.task import DigitsTask

    model = make("cnn", seed)
    pruner = Pruner(model, one_shot(rate, at=EPOCHS - 1), mode="structured", criterion=criterion,
                    slimming=strength, example_inputs=example(), prune_options={"exclude": ["fc1"], "round_to": 1})
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    for epoch in range(EPOCHS):
        train_epoch(model, optimizer, epoch, seed)
    scales = torch.cat([model.bn1.weight.detach().abs(), model.bn2.weight.detach().abs()])
    dense = test_accuracy(model)
    pruner.step(EPOCHS - 1)
    small = pruner.finish()
    cut = test_accuracy(small)
    fine_tune(small, DigitsTask(), FineTuneOptions(epochs=FINE_TUNE_EPOCHS, seed=seed))
    return {"dense": dense, "cut": cut, "fine_tuned": test_accuracy(small),
            "small_scales": round(float((scales < SMALL_SCALE).float().mean()), 3),
            "params": sum(p.numel() for p in small.parameters())}


def main(argv: list[str] | None = None) -> int:
    import warnings

    from rich.progress import track

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 0, lambdas 0 and 1e-2")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="criterion .* leaves .* unpruned")  # fc1 is excluded on purpose
    seeds = (0,) if args.quick else SEEDS
    lambdas = (0.0, 1e-2) if args.quick else LAMBDAS
    started = time.perf_counter()
    cases = [("l1", 0.0)] + [("bn_scale", strength) for strength in lambdas]
    rows = []
    for criterion, strength in track(cases, description="slimming sweep"):
        for rate in RATES:
            runs = [run(criterion, strength, rate, seed) for seed in seeds]
            rows.append({"criterion": criterion, "lambda": strength, "rate": rate, "params": runs[0]["params"],
                         "small_scales": runs[0]["small_scales"],
                         **{key: mean_std([r[key] for r in runs]) for key in ("dense", "cut", "fine_tuned")}})
    wall = round(time.perf_counter() - started, 1)
    print_table(f"digits CNN: sparsity training then a cut of conv1/conv2 channels, {FINE_TUNE_EPOCHS} fine-tune "
                f"epochs (test %, mean of seeds {list(seeds)})",
                ["criterion", "lambda", "channels cut", "params", f"scales < {SMALL_SCALE}", "dense", "after cut",
                 "fine-tuned"],
                [[r["criterion"], r["lambda"], r["rate"], r["params"], r["small_scales"], r["dense"]["mean"],
                  r["cut"]["mean"], r["fine_tuned"]["mean"]] for r in rows], note=f"{wall}s")
    payload = {"epochs": EPOCHS, "fine_tune_epochs": FINE_TUNE_EPOCHS, "seeds": list(seeds), "torch_threads": 1,
               "wall_seconds": wall, "excluded": ["fc1"], "rows": rows}
    print(write_results("slimming_digits", payload, _plot(rows), args.quick))
    return 0


def _plot(rows: list[dict]) -> bytes:
    from prunectl.views.charts import grouped_bars

    labels = [f"{r['criterion']} λ={r['lambda']:g}" for r in rows if r["rate"] == RATES[0]]
    series = {f"{int(rate * 100)}% cut, {stage}": [r[key]["mean"] for r in rows if r["rate"] == rate]
              for rate in RATES for stage, key in (("after cut", "cut"), ("fine-tuned", "fine_tuned"))}
    return grouped_bars(labels, series, "test accuracy (%)",
                        "digits CNN: network slimming (bn_scale after L1 on BN scales) vs l1, same fine-tune")


if __name__ == "__main__":
    raise SystemExit(main())

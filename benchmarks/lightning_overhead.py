"""prunectl's Lightning ``PrunerCallback`` against Lightning's own ``ModelPruning``: the same masks,
and what each costs per epoch.

    .venv/bin/python benchmarks/lightning_overhead.py           # docs/results/bench/lightning_overhead.{json,png}
    .venv/bin/python benchmarks/lightning_overhead.py --quick   # 1 repeat

One LightningModule (the digits MLP, 64-64-32-10, SGD, the training split in a fixed order)
is fitted for ``EPOCHS`` epochs on the CPU by a real ``lightning.Trainer``:

- ``plain``: no pruning callback (the baseline epoch time);
- ``ModelPruning``: global L1 over every linear weight and bias, ``AMOUNT`` of the live entries
  at the end of each epoch in ``EVENTS`` (torch's ``PruningContainer`` compounds it);
- ``PrunerCallback``: the same, as prunectl events (``Event(epoch, of_remaining=AMOUNT)``,
  ``global_ranking=True, prune_bias=True``);
- ``PrunerCallback structured``: channels instead (``mode="structured"``, l1, the cumulative
  channel rate of the same compounding at the same epochs); each event is one
  ``prunectl.prune`` run on the masked model, and the end of training hard-prunes.

The script asserts that one-event ``ModelPruning`` and ``PrunerCallback`` fits end with identical
weights (the same masks, so the same training after them; tests/hooks/test_lightning.py checks
the one-shot and lottery-ticket cases), and reports how many mask entries agree after the
``EVENTS`` fit: from the second event on torch ranks ``getattr(module, "weight")``, the masked
weight cached at the last forward, one optimizer step stale, where prunectl ranks
``weight_orig * weight_mask`` as it is after the epoch (docs/decisions.md). A ``Clock``
callback placed before and after the pruning one splits every epoch into training (the masks'
forward pre-hooks cost there) and the pruning callback's own call (an event's cut, or nothing);
fits are interleaved over ``REPEATS`` repeats. Epochs are short (17 batches) and the machine is
shared (its load average is recorded), so training times are given as medians and minima.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ siblings
from _common import print_table, write_results  # noqa: E402

EPOCHS = 10
EVENTS = (1, 3, 5, 7)
AMOUNT = 0.3
REPEATS = 16


class DigitsClassifier(lightning.LightningModule):
    """The digits MLP in a LightningModule; the same initial weights every time it is built."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                                 nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _index):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class Clock(lightning.Callback):
    """Placed first and again last in the callback list: between its two ``on_train_epoch_end``
    calls only the pruning callback runs, so the epoch splits into training (with the masks'
    forward pre-hooks) and the pruning call itself."""

    def __init__(self):
        self.marks: list[float] = []
        self.train: list[float] = []
        self.pruning: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.marks = [time.perf_counter()]

    def on_train_epoch_end(self, trainer, pl_module):
        self.marks.append(time.perf_counter())
        if len(self.marks) == 3:
            self.train.append(self.marks[1] - self.marks[0])
            self.pruning.append(self.marks[2] - self.marks[1])


def _callback(kind: str, events: tuple[int, ...]) -> Any:
    from lightning.pytorch.callbacks import ModelPruning

    from prunectl.hooks import Event
    from prunectl.hooks.lightning import PrunerCallback
    from prunectl_digits.task import splits

    if kind == "ModelPruning":
        return ModelPruning("l1_unstructured", amount=lambda epoch: AMOUNT if epoch in events else 0,
                            use_global_unstructured=True, use_lottery_ticket_hypothesis=False)
    if kind == "PrunerCallback":
        return PrunerCallback([Event(epoch, of_remaining=AMOUNT) for epoch in events], global_ranking=True,
                              prune_bias=True)
    rates = [1 - (1 - AMOUNT) ** (k + 1) for k in range(len(events))]
    return PrunerCallback([Event(epoch, target=rate) for epoch, rate in zip(events, rates)], mode="structured",
                          example_inputs=splits()["train"][0][:2], prune_options={"round_to": 1})


def fit(kind: str, events: tuple[int, ...] = EVENTS) -> tuple[nn.Module, Clock, Any]:
    from lightning_overhead import DigitsClassifier  # the pipeline refuses a class of __main__ as a factory

    from prunectl_digits.task import splits

    inputs, targets = splits()["train"]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets), batch_size=64)
    model, clock = DigitsClassifier(), Clock()
    pruning = [] if kind == "plain" else [_callback(kind, events)]
    trainer = lightning.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, deterministic=True,
                                callbacks=[clock, *pruning, clock])
    trainer.fit(model, loader)
    return model, clock, pruning[0] if pruning else None


def main(argv: list[str] | None = None) -> int:
    import os

    from rich.progress import track

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    repeats = 1 if args.quick else REPEATS
    kinds = ("plain", "ModelPruning", "PrunerCallback", "PrunerCallback structured")
    clocks: dict[str, list[Clock]] = {kind: [] for kind in kinds}
    load_before = os.getloadavg()
    started = time.perf_counter()
    ours, theirs = fit("PrunerCallback", EVENTS[:1])[0].state_dict(), fit("ModelPruning", EVENTS[:1])[0].state_dict()
    identical = set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert identical, "one event: PrunerCallback and ModelPruning ended with different weights"
    structured = None
    for repeat in track(range(repeats), description="fits"):
        models = {}
        # interleaved, and in a rotating order: a load spike or a warm cache favours no kind
        for kind in kinds[repeat % len(kinds):] + kinds[:repeat % len(kinds)]:
            models[kind], clock, callback = fit(kind)
            clocks[kind].append(clock)
            if kind == "PrunerCallback structured":
                structured = callback.pruner.result
    agreement = _mask_agreement(models["PrunerCallback"], models["ModelPruning"])
    zeros = _zeros(models["PrunerCallback"])
    rows = []
    for kind in kinds:
        # training epochs after the first event (masks on), and the callback's call at each event
        train = [s for clock in clocks[kind] for epoch, s in enumerate(clock.train) if epoch > EVENTS[0]]
        pruning = [s for clock in clocks[kind] for epoch, s in enumerate(clock.pruning) if epoch in EVENTS]
        others = [s for clock in clocks[kind] for epoch, s in enumerate(clock.pruning) if epoch not in EVENTS]
        rows.append({"kind": kind, "train_epoch_ms": _ms(statistics.median(train)),
                     "train_epoch_min_ms": _ms(min(train)),
                     "event_call_ms": _ms(statistics.median(pruning)), "other_call_ms": _ms(statistics.median(others)),
                     "train_seconds": [clock.train for clock in clocks[kind]],
                     "call_seconds": [clock.pruning for clock in clocks[kind]]})
    plain = rows[0]
    for row in rows:
        row["train_epoch_overhead_ms"] = round(row["train_epoch_ms"] - plain["train_epoch_ms"], 2)
        row["train_epoch_min_overhead_ms"] = round(row["train_epoch_min_ms"] - plain["train_epoch_min_ms"], 2)
    wall = round(time.perf_counter() - started, 1)
    print_table(f"digits MLP, {EPOCHS} epochs of 17 batches, pruning after epochs {list(EVENTS)} ({repeats} fits, ms)",
                ["callback", "call at an event (median)", "call otherwise", "training epoch, masked (median)",
                 "overhead", "training epoch (min)", "overhead"],
                [[r["kind"], r["event_call_ms"], r["other_call_ms"], r["train_epoch_ms"], r["train_epoch_overhead_ms"],
                  r["train_epoch_min_ms"], r["train_epoch_min_overhead_ms"]] for r in rows],
                note=f"one event: weights identical to ModelPruning's: {identical}; {len(EVENTS)} events: "
                     f"{agreement:.2%} of the mask entries agree; {zeros:.1%} of the weights cut; structured "
                     f"result {sum(p.numel() for p in structured.model.parameters())} params; {wall}s")
    payload = {"epochs": EPOCHS, "events": list(EVENTS), "amount": AMOUNT, "repeats": repeats, "torch_threads": 1,
               "one_event_identical_to_model_pruning": identical, "mask_agreement": round(agreement, 5),
               "weights_cut": round(zeros, 4),
               "structured_params": sum(p.numel() for p in structured.model.parameters()),
               "load_average_before": [round(x, 2) for x in load_before], "wall_seconds": wall, "rows": rows}
    print(write_results("lightning_overhead", payload, _plot(rows), args.quick))
    return 0


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 2)


def _mask_agreement(ours: nn.Module, theirs: nn.Module) -> float:
    """Share of weight and bias entries cut by both or by neither."""
    a, b = ours.state_dict(), theirs.state_dict()
    return sum(int(((a[k] == 0) == (b[k] == 0)).sum()) for k in a) / sum(a[k].numel() for k in a)


def _zeros(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _plot(rows: list[dict]) -> bytes:
    from prunectl.views.charts import grouped_bars

    return grouped_bars([r["kind"] for r in rows],
                        {"the callback's call at an event (median ms)": [r["event_call_ms"] for r in rows],
                         "a training epoch with the masks (median ms)": [r["train_epoch_ms"] for r in rows],
                         "a training epoch with the masks (min ms)": [r["train_epoch_min_ms"] for r in rows]},
                        "ms", f"Lightning, digits MLP: cost of each pruning callback (events after epochs "
                              f"{list(EVENTS)})")


if __name__ == "__main__":
    raise SystemExit(main())

"""When a training-time Pruner cuts, and how much: one-shot, linear, AGP, layer by layer, lottery ticket.

A schedule is a list of events, each at one epoch (the ``epoch`` the training loop passes to
``Pruner.step`` after that epoch's training). An event either raises the sparsity to a
``target`` (a fraction of all the entries a tensor has, or of all the tensors' entries with
global ranking) or cuts ``of_remaining`` of the entries still alive, as torch's
``PruningContainer`` and Lightning's ``ModelPruning`` count an amount. Lottery-ticket events
also rewind the surviving weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import SpecError

SCHEDULES = ("one_shot", "linear", "agp", "layer_by_layer", "lottery")


@dataclass(frozen=True)
class Event:
    epoch: int
    target: float | None = None  # sparsity reached after the event (of every entry)
    of_remaining: float | None = None  # or: fraction of the live entries cut now
    layers: tuple[str, ...] | None = None  # only these (layer by layer); None: every pruned layer
    rewind: bool = False  # lottery ticket: surviving weights go back to the rewind point


def _check_fraction(value: float, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise SpecError(f"{what}: expected a fraction in [0, 1), got {value!r}")


def _check_epoch(value: int, what: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{what}: expected an integer >= {minimum}, got {value!r}")


def _epochs(start: int, end: int, every: int) -> list[int]:
    _check_epoch(start, "start")
    _check_epoch(every, "every", 1)
    _check_epoch(end, "end")
    if end < start:
        raise SpecError(f"end: epoch {end} is before start {start}")
    return list(range(start, end + 1, every))


def one_shot(amount: float, at: int = 0) -> list[Event]:
    _check_fraction(amount, "amount")
    _check_epoch(at, "at")
    return [Event(at, target=amount)]


def linear(amount: float, start: int, end: int, every: int = 1) -> list[Event]:
    """The sparsity grows by equal steps, reaching ``amount`` at the last event."""
    _check_fraction(amount, "amount")
    epochs = _epochs(start, end, every)
    return [Event(epoch, target=amount * (k + 1) / len(epochs)) for k, epoch in enumerate(epochs)]


def agp(amount: float, start: int, end: int, every: int = 1, initial: float = 0.0) -> list[Event]:
    """Automated gradual pruning (Zhu & Gupta 2017): s_k = s_f + (s_i - s_f)(1 - k/n)^3 for the
    events k = 0..n from ``start`` to ``end``: fast cuts while the network is redundant, slow at
    the end."""
    _check_fraction(amount, "amount")
    _check_fraction(initial, "initial")
    if initial > amount:
        raise SpecError(f"initial: {initial} is above the final amount {amount}")
    epochs = _epochs(start, end, every)
    n = len(epochs) - 1
    if n == 0:
        return [Event(epochs[0], target=amount)]
    return [Event(epoch, target=amount + (initial - amount) * (1 - k / n) ** 3) for k, epoch in enumerate(epochs)]


def layer_by_layer(amount: float, layers: list[str], start: int = 0, every: int = 1) -> list[Event]:
    """MaskImpt's ``pre_layer``: one layer (or block: a tuple of names in one entry) per event, in
    order, the user's training in between."""
    _check_fraction(amount, "amount")
    _check_epoch(start, "start")
    _check_epoch(every, "every", 1)
    if not layers:
        raise SpecError("layer_by_layer: no layers to prune")
    events = []
    for k, entry in enumerate(layers):
        names = (entry,) if isinstance(entry, str) else tuple(entry)
        events.append(Event(start + k * every, target=amount, layers=names))
    return events


def lottery(per_round: float, rounds: int, every: int = 1, start: int = 0) -> list[Event]:
    """Iterative magnitude pruning with rewinding (Frankle & Carbin 2019): after each training
    period of ``every`` epochs, cut ``per_round`` of the surviving weights and rewind the rest;
    ``rounds`` rounds leave ``(1 - per_round) ** rounds`` of them."""
    _check_fraction(per_round, "per_round")
    _check_epoch(rounds, "rounds", 1)
    _check_epoch(start, "start")
    _check_epoch(every, "every", 1)
    return [Event(start + k * every, of_remaining=per_round, rewind=True) for k in range(rounds)]


def lottery_rounds(final: float, per_round: float) -> int:
    """How many rounds of ``per_round`` reach at least ``final`` sparsity."""
    _check_fraction(final, "amount")
    _check_fraction(per_round, "per_round")
    if final == 0:
        return 1
    if per_round == 0:
        raise SpecError("per_round: 0 never reaches a sparsity above 0")
    return max(1, math.ceil(math.log(1 - final) / math.log(1 - per_round) - 1e-12))


def final_sparsity(events: list[Event]) -> float:
    """The sparsity the schedule ends at (for the summary; per layer with layer-by-layer events)."""
    sparsity = 0.0
    for event in events:
        if event.target is not None:
            sparsity = max(sparsity, event.target)
        else:
            sparsity = 1 - (1 - sparsity) * (1 - float(event.of_remaining))
    return sparsity

"""``PrunerCallback``: the Pruner in a Lightning ``Trainer`` (extra ``lightning``).

    trainer = lightning.Trainer(max_epochs=10, callbacks=[PrunerCallback(agp(0.8, start=1, end=8))])

Where Lightning's ``ModelPruning`` calls torch's pruning functions itself, this callback drives
a ``Pruner``: the same events as in a hand-written loop (``on_train_epoch_end`` is the loop's
``pruner.step(epoch)``; ``on_train_end`` its ``finish()``), prunectl's criteria and schedules, and
the Pruner's state saved in Lightning checkpoints so a resumed fit neither repeats nor skips an
event. For the methods both have (L1, local or global, lottery ticket) the masks equal
``ModelPruning``'s (tests/hooks/test_lightning.py).

``PrunerCallback(schedule, mode="structured", example_inputs=x)`` cuts channels, which
``ModelPruning`` cannot: the LightningModule trains on with channel masks, and when training
ends ``callback.pruner.result`` holds the hard-pruned model (``result.save(dir)``: the bundle).

Devices: nothing here moves the module or assumes CUDA. The Pruner's masks are made where the
parameters are, and each structured event runs the pipeline on the module's device at that event
(where the Trainer put it), or on ``PrunerCallback(..., device="cuda:1")``'s.
"""
from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import Callback
except ImportError as exc:  # the extra is optional; say which one
    raise ImportError("prunectl.hooks.lightning needs Lightning: pip install 'prunectl[lightning]'") from exc

from .pruner import Pruner
from .schedules import Event

STATE_KEY = "prunectl_pruner"


class PrunerCallback(Callback):
    """Builds a ``Pruner`` on the LightningModule at ``setup`` with ``pruner_options`` (see
    ``Pruner``, ``mode="structured"`` included), steps it after every training epoch, and finishes it
    when training ends (``make_permanent=False`` keeps the masks, e.g. to fit again)."""

    def __init__(self, schedule: list[Event], *, make_permanent: bool = True, **pruner_options: Any):
        self.schedule, self.make_permanent, self.pruner_options = schedule, make_permanent, pruner_options
        self.pruner: Pruner | None = None
        self._pending_state: dict[str, Any] | None = None

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.pruner is None:
            self.pruner = Pruner(pl_module, self.schedule, **self.pruner_options)
            if self._pending_state is not None:
                self.pruner.load_state_dict(self._pending_state)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.pruner is not None and self.pruner.step(pl_module.current_epoch):
            pl_module.log("prunectl/sparsity", self.pruner.sparsity()["total"], on_epoch=True)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.pruner is not None and self.make_permanent:
            self.pruner.finish()

    def state_dict(self) -> dict[str, Any]:
        return {STATE_KEY: self.pruner.state_dict()} if self.pruner is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get(STATE_KEY)
        if state is None:
            return
        if self.pruner is not None:
            self.pruner.load_state_dict(state)
        else:
            self._pending_state = state

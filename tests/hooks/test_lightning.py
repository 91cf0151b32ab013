"""The Pruner as a Lightning callback, in a real Trainer on CPU, against Lightning's own
``ModelPruning`` on the same model and data: the same masks and the same weights for the methods
both have (L1, local or global, lottery ticket), and a resumed fit that neither repeats nor skips
an event."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

lightning = pytest.importorskip("lightning")
from lightning.pytorch.callbacks import ModelPruning  # noqa: E402

from prunectl.hooks import agp, lottery, one_shot  # noqa: E402
from prunectl.hooks.lightning import PrunerCallback  # noqa: E402

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


class Classifier(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _index):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=generator)
    y = (x[:, :4] * 3).argmax(dim=1)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=False)


def _fit(callback, epochs: int = 3, **trainer_options) -> Classifier:
    model = Classifier()
    trainer = lightning.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                                deterministic=True, **trainer_options)
    trainer.fit(model, _loader())
    return model


def _weights(model: Classifier) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("global_ranking", [False, True])
def test_one_shot_l1_equals_model_pruning(global_ranking: bool) -> None:
    ours = _fit(PrunerCallback(one_shot(0.5, at=0), prune_bias=True, global_ranking=global_ranking))
    theirs = _fit(ModelPruning("l1_unstructured", amount=lambda epoch: 0.5 if epoch == 0 else 0,
                               use_global_unstructured=global_ranking, use_lottery_ticket_hypothesis=False))
    mine, lightning_weights = _weights(ours), _weights(theirs)
    assert set(mine) == set(lightning_weights) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}
    for name in mine:
        assert torch.equal(mine[name], lightning_weights[name]), name  # same masks, so the same training after


def test_one_round_of_lottery_ticket_equals_model_pruning() -> None:
    ours = _fit(PrunerCallback(lottery(0.4, rounds=1, start=1), prune_bias=True, global_ranking=True))
    theirs = _fit(ModelPruning("l1_unstructured", amount=lambda epoch: 0.4 if epoch == 1 else 0,
                               use_global_unstructured=True, use_lottery_ticket_hypothesis=True))
    mine, lightning_weights = _weights(ours), _weights(theirs)
    for name in mine:
        assert torch.equal(mine[name], lightning_weights[name]), name


def test_resuming_from_a_checkpoint_neither_repeats_nor_skips_an_event(tmp_path) -> None:
    schedule = lottery(0.3, rounds=3, every=1)
    straight = PrunerCallback(schedule, make_permanent=False)
    _fit(straight, epochs=3)
    first = PrunerCallback(schedule, make_permanent=False)
    model = Classifier()
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                                enable_model_summary=False, callbacks=[first], default_root_dir=tmp_path)
    trainer.fit(model, _loader())
    checkpoint = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(checkpoint)
    resumed = PrunerCallback(schedule, make_permanent=False)
    trainer = lightning.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                                enable_model_summary=False, callbacks=[resumed], default_root_dir=tmp_path)
    trainer.fit(Classifier(), _loader(), ckpt_path=checkpoint)
    assert sorted(resumed.pruner.done) == [0, 1, 2]
    assert resumed.pruner.sparsity()["total"] == pytest.approx(straight.pruner.sparsity()["total"])
    assert resumed.pruner.sparsity()["total"] == pytest.approx(1 - 0.7 ** 3, abs=0.01)


def test_structured_mode_hard_prunes_at_the_end_of_fit(tmp_path) -> None:
    import prunectl

    callback = PrunerCallback(agp(0.5, start=0, end=2), mode="structured", example_inputs=torch.randn(2, 16))
    model = _fit(callback, epochs=3)
    result = callback.pruner.result
    assert result is not None and result.model.net[0].out_features == 16 and model.net[0].out_features == 32
    x = next(iter(_loader()))[0]
    with torch.no_grad():
        torch.testing.assert_close(result.model.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-4)  # soft == hard
    result.save(tmp_path / "bundle")
    with torch.no_grad():
        torch.testing.assert_close(prunectl.load(tmp_path / "bundle")(x), result.model(x), rtol=0, atol=0)

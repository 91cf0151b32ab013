"""group_l1 keeps the channels and attention heads Torch-Pruning's
``MagnitudeImportance(p=1, group_reduction="sum")`` keeps, on the same weights at the same rate."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

tp = pytest.importorskip("torch_pruning")

from helpers import SPECS  # noqa: E402

import prunectl  # noqa: E402
from fixtures.make_checkpoints import make_model  # noqa: E402


def _kept_by_torch_pruning(model: torch.nn.Module, example: torch.Tensor, wanted, **pruner_options) -> dict:
    """name -> kept output indices of every module ``wanted(name, module)`` picks, as TP's plan cuts them."""
    importance = tp.importance.MagnitudeImportance(p=1, group_reduction="sum")
    pruner = tp.pruner.MetaPruner(model, example, importance, **pruner_options)
    names = {module: name for name, module in model.named_modules()}
    kept = {}
    for group in pruner.step(interactive=True):
        for dep, removed in group:
            module = dep.target.module
            name = names.get(module)
            if name is not None and wanted(name, module) and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                width = module.weight.shape[0]
                kept[name] = [i for i in range(width) if i not in set(removed)]
        group.prune()
    return kept


def test_the_kept_channels_of_residual_groups_are_torch_prunings(checkpoints) -> None:
    model = make_model("resnet18")
    theirs = _kept_by_torch_pruning(model, torch.randn(1, 3, 32, 32), lambda n, m: isinstance(m, torch.nn.Conv2d),
                                    pruning_ratio=0.5, ignored_layers=[model.fc])
    ours = prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(
        spec=SPECS / "resnet18.json", rate=0.5, criterion="group_l1", round_to=1)).manifest.kept
    assert len(theirs) == 20
    assert {name: ours[name] for name in theirs} == theirs


def test_the_kept_attention_heads_are_torch_prunings(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from prunectl.models.factory import build

    args = {"vocab_size": 500, "hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 8,
            "intermediate_size": 128, "max_position_embeddings": 64}
    torch.manual_seed(0)
    model = build("hf:BertModel", args).eval()
    checkpoint = tmp_path / "bert.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": "hf:BertModel", "args": args}}, checkpoint)
    attention = [layer.attention.self for layer in model.encoder.layer]
    heads = {linear: 8 for a in attention for linear in (a.query, a.key, a.value)}  # 8 heads of 12
    theirs = _kept_by_torch_pruning(model, torch.randint(0, 500, (1, 16)), lambda n, m: n.endswith("query"),
                                    pruning_ratio=0.5, num_heads=heads, prune_num_heads=True, prune_head_dims=False,
                                    head_pruning_ratio=0.5, ignored_layers=[model.pooler])
    ours = prunectl.prune(checkpoint, prunectl.PruneOptions(rate=0.5, criterion="group_l1", input_shape=(1, 16),
                                                            round_to=1)).manifest.kept
    head_dim = 96 // 8
    assert len(theirs) == 4
    for name, kept in theirs.items():
        assert sorted({i // head_dim for i in ours[name]}) == sorted({i // head_dim for i in kept}), name

"""activation (Minitron) and wanda_sp (structured Wanda) on a tiny random-init decoder: each equals its
formula computed by hand, ranks a planted-important MLP neuron, KV group and hidden channel first,
gives the same scores twice, and prunes to a model that computes what the masked one does."""
from __future__ import annotations

import pytest
import torch

import prunectl
from prunectl.coupling.groups import build_groups
from prunectl.criteria import get_criterion
from prunectl.loading.data import from_tensors
from prunectl.selection.scoring import reduce_scores, score_groups
from prunectl.tracing import trace_model
from tests.support.text_models import ARGS, FACTORY, tiny_llama

pytest.importorskip("transformers")

CRITERIA = ("activation", "wanda_sp")
NEURON, KV_GROUP, CHANNEL = 7, 1, 5


def _ids() -> torch.Tensor:
    return torch.randint(0, ARGS["vocab_size"], (6, 20), generator=torch.Generator().manual_seed(1))


def _planted() -> torch.nn.Module:
    """Layer 0's MLP neuron 7, layer 1's second KV group and hidden channel 5 made to matter most."""
    model = tiny_llama()
    with torch.no_grad():
        mlp = model.model.layers[0].mlp
        for weight in (mlp.gate_proj.weight[NEURON], mlp.up_proj.weight[NEURON], mlp.down_proj.weight[:, NEURON]):
            weight.mul_(6)
        attention = model.model.layers[1].self_attn
        head_dim, group = attention.head_dim, ARGS["num_attention_heads"] // ARGS["num_key_value_heads"]
        attention.v_proj.weight[KV_GROUP * head_dim:(KV_GROUP + 1) * head_dim].mul_(6)
        attention.o_proj.weight[:, KV_GROUP * group * head_dim:(KV_GROUP + 1) * group * head_dim].mul_(3)
        for norm in [model.model.norm] + [n for layer in model.model.layers
                                          for n in (layer.input_layernorm, layer.post_attention_layernorm)]:
            norm.weight[CHANNEL] *= 6
    return model


def _group_scores(model: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    groups = build_groups(trace_model(model, (1, 16), dtype="int64").spec, model)
    scores = score_groups(groups, model, get_criterion(name), from_tensors(_ids(), None, "ids", batch_size=4))
    return {group.name: reduce_scores(s, "mean") for group, s in zip(groups, scores) if s is not None}


@pytest.mark.parametrize("name", CRITERIA)
def test_a_planted_neuron_kv_group_and_hidden_channel_rank_first(name: str) -> None:
    scores = _group_scores(_planted(), name)
    assert int(scores["model.layers.0.mlp.gate_proj"].argmax()) == NEURON
    assert int(scores["model.layers.1.self_attn.q_proj"].argmax()) == KV_GROUP
    assert int(scores["model.embed_tokens"].argmax()) == CHANNEL
    again = _group_scores(_planted(), name)
    assert all(torch.equal(scores[key], again[key]) for key in scores)


def test_each_score_is_its_formula_computed_by_hand() -> None:
    model = tiny_llama()
    seen: dict[str, list[torch.Tensor]] = {"down": [], "o": []}
    layer = model.model.layers[0]
    handles = [layer.mlp.down_proj.register_forward_pre_hook(lambda _m, a: seen["down"].append(a[0].detach())),
               layer.self_attn.o_proj.register_forward_pre_hook(lambda _m, a: seen["o"].append(a[0].detach()))]
    with torch.no_grad():
        for batch in _ids().split(4):
            model(batch)
    for handle in handles:
        handle.remove()
    down = torch.cat([x.reshape(-1, x.shape[-1]) for x in seen["down"]]).double()  # act(gate) * up, per token
    heads = torch.cat([x.reshape(-1, x.shape[-1]) for x in seen["o"]]).double()  # the heads' outputs
    groups = build_groups(trace_model(model, (1, 16), dtype="int64").spec, model)
    by_name = {group.name: group for group in groups}
    data = from_tensors(_ids(), None, "ids", batch_size=4)
    activation = dict(zip(by_name, score_groups(groups, model, get_criterion("activation"), data)))
    wanda = dict(zip(by_name, score_groups(groups, model, get_criterion("wanda_sp"), data)))
    mlp = "model.layers.0.mlp.gate_proj"
    torch.testing.assert_close(activation[mlp][0], down.abs().mean(0))  # Minitron: mean |activation| per neuron
    weight = layer.mlp.down_proj.weight.detach().double()
    torch.testing.assert_close(wanda[mlp][0], (weight.abs() * down.norm(dim=0)).sum(0))  # |W| x ||X||_2
    # a KV group: the L2 norm of its query heads' outputs (2 x head_dim values) per token, mean over tokens
    span = heads.shape[1] // 2
    per_group = heads.view(-1, 2, span).norm(dim=2).mean(0)
    q_scores = activation["model.layers.0.self_attn.q_proj"][0]  # q_proj's rows share its group's score
    torch.testing.assert_close(q_scores, per_group)


@pytest.mark.parametrize("name", CRITERIA)
def test_pruning_with_it_keeps_soft_equal_to_hard(name: str, tmp_path) -> None:
    model = _planted()
    checkpoint = tmp_path / "llm.pt"
    torch.save({"state_dict": model.state_dict(), "model": {"factory": FACTORY, "args": ARGS}}, checkpoint)
    torch.save(_ids(), tmp_path / "ids.pt")
    result = prunectl.prune(checkpoint, prunectl.PruneOptions(criterion=name, rate=0.5, data=str(tmp_path / "ids.pt")))
    verify = result.manifest.extra["verify"]
    assert verify["soft_vs_hard_max_abs"] <= verify["tolerance"] * max(1.0, verify["reference_max_abs"])
    kept = result.manifest.kept
    assert NEURON in kept["model.layers.0.mlp.gate_proj"] and CHANNEL in kept["model.embed_tokens"]

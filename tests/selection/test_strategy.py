"""Ways to choose what to cut: global ranking, --exclude, --only, steps and schedules (targets: test_budget.py)."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import prunectl
from fixtures.make_checkpoints import FIXTURES, make_model
from prunectl.cli import cli
from prunectl.coupling.groups import build_groups
from prunectl.criteria import get_criterion
from prunectl.errors import SpecError
from prunectl.formats.spec import read_spec
from prunectl.selection.global_ranking import global_select
from prunectl.selection.per_layer import SelectOptions
from prunectl.selection.scoring import score_groups
from prunectl.selection.strategy import schedule_fraction

RESNET = FIXTURES["resnet18"][2]


def widths(result) -> dict[str, int]:
    return {layer["name"]: layer["after"] for layer in result.report["layers"]}


def test_global_ranking_cuts_the_requested_share_and_floors_every_group() -> None:
    model = make_model("vgg11_bn")
    with torch.no_grad():
        model.conv2.weight.mul_(1e-4)  # a layer of tiny weights: without normalisation it would vanish
    groups = build_groups(read_spec(FIXTURES["vgg11_bn"][2]), model)
    scores = score_groups(groups, model, get_criterion("l1"))
    total = sum(g.size for g in groups if g.prunable)
    kept = global_select(groups, scores, int(0.7 * total), SelectOptions(min_channels=4))
    removed = sum(g.size - len(k) for g, k in zip(groups, kept) if k is not None)
    assert removed == int(0.7 * total)
    for group, k in zip(groups, kept):
        if k is not None:
            assert len(k) >= 4, group.layers
    by_layer = {g.layers[0]: len(k) for g, k in zip(groups, kept) if k is not None}
    assert by_layer["conv2"] > 4  # normalised: the tiny layer keeps more than its floor


def test_global_cli_option_gives_unequal_rates(checkpoints) -> None:
    per_layer = prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(spec=FIXTURES["vgg11_bn"][2], rate=0.5))
    ranked = prunectl.prune(checkpoints["vgg11_bn"], prunectl.PruneOptions(spec=FIXTURES["vgg11_bn"][2], rate=0.5,
                                                                          global_ranking=True))
    assert ranked.report["selection"]["mode"] == "global"
    ratios = {round(layer["after"] / layer["before"], 3) for layer in ranked.report["layers"] if layer["name"] != "fc2"}
    assert len(ratios) > 2
    before = sum(layer["before"] for layer in per_layer.report["layers"] if layer["name"] != "fc2")
    assert sum(widths(ranked).values()) == pytest.approx(sum(widths(per_layer).values()), abs=0.02 * before)


def test_exclude_pins_matching_groups_and_rejects_patterns_matching_nothing(checkpoints) -> None:
    result = prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(spec=RESNET, rate=0.5,
                                                                          exclude=("layer4.*",)))
    after = widths(result)
    assert all(after[name] == layer["before"] for layer in result.report["layers"]
               for name in [layer["name"]] if name.startswith("layer4."))
    assert after["layer1.0.conv1"] < 16
    with pytest.raises(SpecError, match="no listed layer"):
        prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(spec=RESNET, exclude=("nothing*",)))


def test_only_cuts_the_groups_holding_a_matching_layer_and_their_coupled_layers(checkpoints, tmp_path) -> None:
    result = prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(spec=RESNET, rate=0.5,
                                                                          only=("layer2.*.conv1",)))
    cut = {name for name, layer in ((layer["name"], layer) for layer in result.report["layers"])
           if layer["after"] < layer["before"]}
    assert cut == {"layer2.0.conv1", "layer2.0.bn1", "layer2.1.conv1", "layer2.1.bn1"}  # each conv with its bn
    assert result.report["selection"]["only"] == ["layer2.*.conv1"]
    # a residual stream is one group: naming one of its convolutions cuts them all
    stream = prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(spec=RESNET, rate=0.5,
                                                                          only=("layer3.0.conv2",)))
    cut = {layer["name"] for layer in stream.report["layers"] if layer["after"] < layer["before"]}
    assert {"layer3.0.conv2", "layer3.1.conv2", "layer3.0.shortcut.0"} <= cut
    assert not any(name.startswith(("layer1.", "layer2.", "layer4.")) for name in cut)
    with pytest.raises(SpecError, match="--only 'layer9.\\*': matches no listed layer"):
        prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(spec=RESNET, only=("layer9.*",)))
    runner = CliRunner()
    failed = runner.invoke(cli, ["prune", str(checkpoints["resnet18"]), "--spec", str(RESNET), "--rate", "0.5",
                                 "--only", "nothing", "-o", str(tmp_path / "out")])
    assert failed.exit_code == 3 and "--only 'nothing'" in failed.output and not (tmp_path / "out").exists()


def test_schedules() -> None:
    assert [schedule_fraction(i, 4, "linear") for i in range(1, 5)] == [0.25, 0.5, 0.75, 1.0]
    agp = [schedule_fraction(i, 3, "agp") for i in range(1, 4)]
    assert agp == pytest.approx([1 - (2 / 3) ** 3, 1 - (1 / 3) ** 3, 1.0])


@pytest.mark.parametrize("schedule", ["linear", "agp"])
def test_steps_reach_the_same_widths_and_keep_original_numbering(schedule: str, checkpoints) -> None:
    one = prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(spec=RESNET, rate=0.6, criterion="fpgm"))
    steps = prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(spec=RESNET, rate=0.6, criterion="fpgm",
                                                                         steps=3, schedule=schedule))
    assert widths(steps) == widths(one)
    history = steps.report["selection"]["history"]
    assert [h["step"] for h in history] == [1, 2, 3] and history[-1]["done"] == 1.0
    for name, kept in steps.manifest.kept.items():
        assert kept == sorted(kept) and max(kept) < dict((layer["name"], layer["before"])
                                                         for layer in steps.report["layers"])[name]


def test_bad_steps_and_schedule(checkpoints) -> None:
    with pytest.raises(SpecError, match="--steps"):
        prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(spec=RESNET, steps=0))
    with pytest.raises(SpecError, match="--schedule"):
        prunectl.prune(checkpoints["resnet18"], prunectl.PruneOptions(spec=RESNET, steps=2, schedule="cosine"))

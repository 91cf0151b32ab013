"""Resolving model factories: only nn.Module subclasses and registered providers, never a download."""
from __future__ import annotations

import pytest
import torch

from prunectl.errors import SpecError
from prunectl.models import factory as factories


@pytest.mark.parametrize("factory, fragment", [
    ("os:system", "refused"), ("subprocess:Popen", "refused"), ("builtins:eval", "refused"),
    ("fixtures.models:_private", "refused"), ("torch.nn:functional", "not an nn.Module subclass"),
    ("json:loads", "not an nn.Module subclass"), ("no_such_pkg.mod:Net", "module 'no_such_pkg' not found"),
    ("fixtures.models:Nope", "has no attribute 'Nope'"), ("torchvision:resnet9000", "unknown torchvision model"),
    ("fixtures.models:AlexNet;rm", "not a valid"),
])
def test_factories_only_build_modules(factory: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=None) as info:
        factories.build(factory, {})
    assert fragment in str(info.value)


def test_factories_never_download(monkeypatch) -> None:
    with pytest.raises(SpecError, match="would download weights"):
        factories.build("torchvision:resnet18", {"weights": "DEFAULT"})

    # segmentation/detection builders default to an ImageNet backbone: that default must not fetch
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    model = factories.build("torchvision:lraspp_mobilenet_v3_large", {})
    assert isinstance(model, torch.nn.Module)


def test_constructor_errors_name_the_factory() -> None:
    with pytest.raises(SpecError, match="'fixtures.models:AlexNet' with args .*constructor failed"):
        factories.build("fixtures.models:AlexNet", {"no_such_arg": 1})

"""Parameters and int attributes that follow a channel space (layers/params.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from prunectl.errors import SpecError
from prunectl.layers.params import (
    apply_parameter_resize,
    count_attribute_of,
    count_attributes,
    parameter_of,
    recorded_size,
    replace_parameter,
    resize_of,
)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer_scale = nn.Parameter(torch.ones(6, 1, 1))
        self.register_buffer("table", torch.zeros(6))
        self.hidden_dim, self.use_bias, self._private = 6, True, 3


def test_parameter_and_count_attribute_lookup_by_full_name() -> None:
    modules = dict(nn.Sequential(Block()).named_modules())
    owner, attr, parameter = parameter_of(modules, "0.layer_scale")
    assert attr == "layer_scale" and parameter.shape == (6, 1, 1) and owner is modules["0"]
    assert parameter_of(modules, "0.table") is None  # a buffer is not a parameter entry
    assert parameter_of(modules, "1.layer_scale") is None and parameter_of(modules, "layer_scale") is None
    assert count_attribute_of(modules, "0.hidden_dim")[2] == 6
    assert count_attribute_of(modules, "0.use_bias") is None  # bools are not counts


def test_count_attributes_lists_public_ints_only() -> None:
    assert count_attributes(Block()) == {"hidden_dim": 6}


def test_resize_of_records_only_the_axes_that_changed() -> None:
    assert resize_of(torch.zeros(1, 197, 768), torch.zeros(1, 197, 384)) == {"dim_2": 384}
    assert resize_of(torch.zeros(4), torch.zeros(4)) == {}


def test_apply_parameter_resize_reallocates_and_names_a_wrong_axis() -> None:
    block = Block()
    block.layer_scale.requires_grad_(False)
    apply_parameter_resize(block, "layer_scale", {"dim_0": 4}, "resize.layer_scale")
    assert block.layer_scale.shape == (4, 1, 1) and not block.layer_scale.requires_grad
    with pytest.raises(SpecError, match=r"has no resizable attribute 'dim_3'; expected dim_0 \.\. dim_2"):
        apply_parameter_resize(block, "layer_scale", {"dim_3": 2}, "resize.layer_scale")
    with pytest.raises(SpecError, match="no resizable attribute 'width'"):
        apply_parameter_resize(block, "layer_scale", {"width": 2}, "resize.layer_scale")


def test_replace_parameter_keeps_requires_grad_and_makes_it_contiguous() -> None:
    block = Block()
    replace_parameter(block, "layer_scale", torch.ones(1, 1, 6).transpose(0, 2))
    assert block.layer_scale.is_contiguous() and block.layer_scale.requires_grad


@pytest.mark.parametrize("value", [0, -1, True, 2.0, "3", None])
def test_recorded_size_accepts_positive_ints_only(value) -> None:
    with pytest.raises(SpecError, match="where: expected a positive integer"):
        recorded_size(value, "where")
    assert recorded_size(7, "where") == 7

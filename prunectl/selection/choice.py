"""What the selection stage hands to the cut: the groups, the channels each keeps, the model to cut."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..coupling.channel_spaces import ChannelGroup


@dataclass
class Choice:
    groups: list[ChannelGroup]  # of the original model
    kept: list[torch.Tensor | None]  # per group, original numbering (None: pinned)
    model: nn.Module  # the model to cut (the masked copy in unstructured mode)
    report: dict[str, Any] = field(default_factory=dict)  # extra report.json / manifest entries

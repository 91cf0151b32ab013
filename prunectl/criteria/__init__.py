"""Channel-importance criteria, one small class per file, found through the registry."""
from .base import Criterion, LayerView, get_criterion

__all__ = ["Criterion", "LayerView", "get_criterion"]

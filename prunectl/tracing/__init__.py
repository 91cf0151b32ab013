"""Tracing: capture a model's graph, follow every listed layer's channels through it, write the spec.

``trace.py`` turns a walk into a spec; ``capture.py`` gets the graph (torch.fx, torch.export);
``walk.py`` runs it with ``rules``/``flow`` and the followers (parameters, heads, window attention).
"""
from .trace import TraceResult, derive_spec, trace_model

__all__ = ["TraceResult", "derive_spec", "trace_model"]

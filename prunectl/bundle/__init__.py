"""Bundles written: atomic staging, the files (weights, report, ONNX), the manifest that seals them."""

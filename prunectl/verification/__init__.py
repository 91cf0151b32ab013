"""Verification: soft == hard on every run, the rebuild recipe and its proof, the ONNX check."""

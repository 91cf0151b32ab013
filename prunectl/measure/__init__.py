"""Measuring models: parameters, bytes and MACs, and latency on torch and ONNX Runtime."""

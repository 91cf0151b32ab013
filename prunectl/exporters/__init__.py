"""Writers for each output format (weights, ONNX); each checks the file is well-formed."""

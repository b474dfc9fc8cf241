"""Export: dense, static, hybrid and dynamic graphs to ONNX, OpenVINO IR and TensorRT, verified first."""

"""The world model as ONNX graphs (`onnx_export`), and running them with onnxruntime (`session`)."""

"""Deployment exports: ONNX graphs (:mod:`.onnx_export`) and their ONNX Runtime backend (:mod:`.onnx_runtime`)."""

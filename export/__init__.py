"""tgir.export: torch -> ONNX (router as ``If`` subgraphs), graph checks, TensorRT engines and the
deployable bundle. Imported as ``tgir.export`` (setup.py maps this folder)."""

"""tgir.runtime: runners (ONNX Runtime, TensorRT, PyTorch, the C library), gallery index and search.

Never imports torch, the exporter or the calibrator at import time; the C runtime's sources live
beside this file (include/, src/). Imported as ``tgir.runtime``."""

"""tgir.calib: calibration data, activation observers, Q/DQ insertion (inside ``If`` branches too),
FP16 conversion and TensorRT calibration caches. Imported as ``tgir.calib``."""

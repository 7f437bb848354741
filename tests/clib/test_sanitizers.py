"""Memory and robustness of libtgir: the C tests under AddressSanitizer + UBSan, and bounded libFuzzer
runs over the manifest, vocabulary and index readers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from tgir.runtime.clib import build_library

FUZZ_SECONDS = 15


def test_c_tests_run_clean_under_asan_and_ubsan(tmp_path, build_tools, amc_aoti_bundle):
    build = tmp_path / "asan"
    build_library(build, sanitize=True, build_type="Debug", extra=["-DTGIR_BUILD_EXAMPLES=OFF"])
    # LeakSanitizer stays on: the tests free everything they open, the runtime must too.
    env = {**os.environ, "TGIR_TEST_BUNDLE": str(amc_aoti_bundle),
           "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
    done = subprocess.run(["ctest", "--test-dir", str(build), "--output-on-failure"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "100% tests passed" in done.stdout and "Skipped" not in done.stdout
    nm = subprocess.run(["nm", "-D", str(build / "libtgir.so")], capture_output=True, text=True)
    assert "__asan" in nm.stdout  # really instrumented


def _seeds(folder, bundle) -> dict[str, object]:
    seeds = {name: folder / name for name in ("manifest", "vocab", "index")}
    for path in seeds.values():
        path.mkdir(parents=True)
    shutil.copy(bundle / "manifest.json", seeds["manifest"] / "real.json")
    (seeds["manifest"] / "small.json").write_text(json.dumps({"schema": "tgir-bundle", "schema_version": 2}))
    (seeds["vocab"] / "real").write_text("make the <BOS> red circle big\n" + (bundle / "vocab.json").read_text())
    np.save(seeds["index"] / "rows.npy", np.ones((3, 4), np.float32))
    return seeds


def test_readers_survive_fuzzing(tmp_path, build_tools, amc_aoti_bundle):
    if shutil.which("clang++") is None:
        if os.environ.get("CI"):
            pytest.fail("clang++ missing (runtime/scripts/install-deps.sh installs it)")
        pytest.skip("libFuzzer needs clang++ (runtime/scripts/install-deps.sh installs it)")
    build = tmp_path / "fuzz"
    build_library(build, tests=False, targets=["fuzz_manifest", "fuzz_vocab", "fuzz_index"],
                  extra=["-DCMAKE_C_COMPILER=clang", "-DCMAKE_CXX_COMPILER=clang++", "-DTGIR_FUZZ=ON",
                         "-DTGIR_WITH_AOTI=OFF", "-DTGIR_BUILD_EXAMPLES=OFF"])
    for name, corpus in _seeds(tmp_path / "corpus", amc_aoti_bundle).items():
        done = subprocess.run([str(build / "fuzz" / f"fuzz_{name}"), f"-max_total_time={FUZZ_SECONDS}",
                               "-rss_limit_mb=2048", str(corpus)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"fuzz_{name} crashed:\n{done.stderr[-4000:]}"
        assert "Done" in done.stderr

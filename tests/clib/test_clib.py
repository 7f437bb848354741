"""The C runtime (libtgir) end to end: ctest, parity with the Python ONNX Runtime runner on CSS-2D,
tokenizer and preprocessing parity, the example program, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from PIL import Image
from tgir.runtime.clib import CIndex, CRunner
from tgir.runtime.index import GalleryIndex, bundle_fingerprint
from tgir.runtime.ort import OrtOptions, OrtRunner

from tgir.data.registry import load_split
from tgir.errors import TgirUserError

EMBED_TOL = 1e-5  # C (AOTInductor) vs Python (ONNX Runtime) embeddings; measured 2.4e-7
PARITY_QUERIES = 240


@pytest.fixture(scope="module")
def runners(libtgir_build, amc_aoti_bundle):
    c = CRunner(amc_aoti_bundle, library=libtgir_build / "libtgir.so", threads=2)
    ort = OrtRunner(amc_aoti_bundle, OrtOptions(threads=2))
    yield c, ort
    c.close()
    ort.close()


@pytest.fixture(scope="module")
def parity_index(tmp_path_factory, runners, amc_aoti_bundle, parity_css2d):
    """The CSS-2D test gallery embedded by the Python runner, saved as `tgir index` does."""
    _, ort = runners
    split = load_split("css2d", parity_css2d, "test")
    gallery = [im for im in split.images if im.in_gallery]
    emb = ort.encode_images([str(im.path) for im in gallery])
    index = GalleryIndex(emb, [im.name for im in gallery], bundle_fingerprint(ort.manifest))
    folder = tmp_path_factory.mktemp("index") / "idx"
    index.save(folder)
    return split, index, folder


def _duplicate_groups(embeddings: np.ndarray) -> np.ndarray:
    """For each gallery row, the first row with a bitwise-identical embedding (CSS-2D renders some
    scenes twice; such rows are indistinguishable, and BLAS may score them an ulp apart)."""
    _, first = np.unique(embeddings, axis=0, return_inverse=True)
    rep = {}
    return np.array([rep.setdefault(g, i) for i, g in enumerate(first.ravel())])


def test_ctest_passes_on_a_real_bundle(libtgir_build, amc_aoti_bundle):
    env = {**os.environ, "TGIR_TEST_BUNDLE": str(amc_aoti_bundle)}
    done = subprocess.run(["ctest", "--test-dir", str(libtgir_build), "--output-on-failure"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "100% tests passed" in done.stdout and "Skipped" not in done.stdout


def test_c_runtime_matches_the_python_ort_runner_on_css2d(runners, parity_index):
    c, ort = runners
    split, index, folder = parity_index
    queries = split.queries[:PARITY_QUERIES]
    assert len(queries) >= 200
    refs, texts = [str(split.images[q.ref].path) for q in queries], [q.text for q in queries]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q_c, q_py = c.encode_queries(refs, texts), ort.encode_queries(refs, texts)
    assert np.abs(q_c - q_py).max() <= EMBED_TOL
    g_c = c.encode_images(refs[:32])
    assert np.abs(g_c - ort.encode_images(refs[:32])).max() <= EMBED_TOL
    top_c = CIndex(folder, c).search(q_c, k=10)
    top_py = index.search(q_py, k=10)
    groups = _duplicate_groups(index.embeddings)
    assert (groups[top_c.indices] == groups[top_py.indices]).all()
    assert np.abs(top_c.scores - top_py.scores).max() <= 1e-4


def test_tokenizers_agree_on_a_corpus(runners):
    c, ort = runners
    words = list(ort.vocab.itos[4:])
    corpus = ["", "   ", "make it red!", "Make IT Red, please...", "<BOS> red <AND> big <EOS>", "<bos>red<eos>",
              "<BOſ> red", "<UN\u212a> x", "rouge \u00e9l\u00e9gant caf\u00e9", "\u7ea2\u8272 circle \U0001F600",
              "tab\tsep\nnew\x1cline", "a-b_c d'e \"f\"", "unknownword xyzzy", " ".join(words * 3)]
    rng = np.random.default_rng(0)
    alphabet = list("abcdefghijklmnopqrstuvwxyzABC <>!?.,-\t\u00e9\u4e2d") + words[:10]
    corpus += ["".join(rng.choice(alphabet, size=rng.integers(1, 40))) for _ in range(300)]
    for text in corpus:
        assert c.c_tokenize(text) == ort.vocab.encode(text), text


@pytest.mark.parametrize("size", [(64, 64), (65, 64), (300, 200), (17, 900), (10, 10), (1, 1)])
def test_preprocessing_agrees_with_python(runners, size):
    c, ort = runners
    rgb = np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    expected = ort.preprocess(Image.fromarray(rgb))
    assert np.array_equal(c.c_preprocess(rgb), expected)


def test_example_program_prints_the_top_k(libtgir_build, runners, parity_index):
    c, _ = runners
    split, index, folder = parity_index
    q = split.queries[0]
    ref = str(split.images[q.ref].path)
    done = subprocess.run([str(libtgir_build / "examples" / "tgir_search"), str(c.folder), str(folder), ref, q.text,
                           "5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.strip().splitlines()]
    expected = index.search(c.encode_queries([ref], [q.text]), k=5)
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [r[2] for r in rows] == expected.ids[0]
    assert np.allclose([float(r[1]) for r in rows], expected.scores[0], atol=1e-5)
    bad = subprocess.run([str(libtgir_build / "examples" / "tgir_search"), str(c.folder), str(folder), str(folder),
                          "red"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "cannot read PNG" in bad.stderr


def _copy(bundle, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(bundle, out)
    return out


def _edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_bad_bundles_give_status_and_message(libtgir_build, amc_aoti_bundle, tmp_path):
    lib = libtgir_build / "libtgir.so"
    b = _copy(amc_aoti_bundle, tmp_path)
    so = b / "aoti" / "composer.so"
    so.write_bytes(so.read_bytes()[: so.stat().st_size // 2])  # truncated package
    with pytest.raises(TgirUserError, match=r"composer\.so: checksum differs"):
        CRunner(b, library=lib, manifest=_manifest_unchecked(amc_aoti_bundle))
    _edit_manifest(b, lambda m: m.update(schema_version=99))
    with pytest.raises(TgirUserError, match="schema version 99; this libtgir reads 2"):
        CRunner(b, library=lib, manifest=_manifest_unchecked(amc_aoti_bundle))
    _edit_manifest(b, lambda m: (m.update(schema_version=2), m.pop("aoti"), m["files"].pop("aoti/composer.so")))
    with pytest.raises(TgirUserError, match="no AOTInductor packages; run `tgir-export aoti"):
        CRunner(b, library=lib)
    _edit_manifest(b, lambda m: m["graphs"]["composer"]["inputs"][0].update(name="renamed"))
    with pytest.raises(TgirUserError, match="contract was edited"):
        CRunner(b, library=lib, manifest=_manifest_unchecked(amc_aoti_bundle))


def _manifest_unchecked(bundle):
    """The Python side's manifest of the intact bundle, so that only libtgir judges the broken copy."""
    from tgir.manifest import Manifest

    return Manifest.load(bundle, verify=False)


def test_unverified_truncated_package_is_refused_not_crashed(libtgir_build, amc_aoti_bundle, tmp_path):
    import ctypes

    from tgir.runtime.clib import _check, load_library

    b = _copy(amc_aoti_bundle, tmp_path)
    so = b / "aoti" / "image_encoder.so"
    so.write_bytes(so.read_bytes()[:4096])
    lib = load_library(libtgir_build / "libtgir.so")
    opts = lib.tgir_runtime_default_options()
    opts.verify_checksums, opts.backend = 0, 1
    handle = ctypes.c_void_p()
    with pytest.raises(TgirUserError, match=r"image_encoder\.so: cannot load the compiled graph"):
        _check(lib, lib.tgir_runtime_open(str(b).encode(), ctypes.byref(opts), ctypes.byref(handle)))


def test_bad_inputs_and_foreign_index(runners, parity_index, tmp_path):
    c, _ = runners
    with pytest.raises(TgirUserError, match="image is empty"):
        c.encode_images([np.zeros((0, 5, 3), np.uint8)])
    with pytest.raises(TgirUserError, match="RGB uint8"):
        c.encode_images([np.zeros((4, 4), np.float32)])
    with pytest.raises(TgirUserError, match="cannot decode image"):
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        c.encode_images([str(bad)])
    _, index, folder = parity_index
    other = tmp_path / "other"
    GalleryIndex(index.embeddings, index.ids, "0123456789abcdef-int8-0000").save(other)
    with pytest.raises(TgirUserError,
                       match=r"built by another bundle or precision .*`tgir index --bundle BUNDLE --backend c`"):
        CIndex(other, c)
    with pytest.raises(TgirUserError, match="k must be between 1 and the gallery size"):
        CIndex(folder, c).search(np.zeros((1, c.embed_dim), np.float32), k=0)


def test_recall_through_the_c_runtime_equals_the_python_runner(runners, parity_css2d, libtgir_build):
    from tgir.runtime import open as open_runner
    from tgir.runtime.evaluate import evaluate_bundle

    _, ort = runners
    split = load_split("css2d", parity_css2d, "test")
    with open_runner(ort.folder, "c", threads=2, library=libtgir_build / "libtgir.so") as c:
        got = evaluate_bundle(c, split, batch=16)
    want = evaluate_bundle(ort, split, batch=16)
    recall = [k for k in want if k.startswith("R@")]
    assert recall and {k: got[k] for k in recall} == {k: want[k] for k in recall}
    assert got["per_op"] == want["per_op"]


def test_installed_library_is_found_by_cmake_find_package(libtgir_build, tmp_path):
    """`cmake --install` then an app's find_package(tgir) + tgir::tgir, in plain C."""
    prefix, app = tmp_path / "prefix", tmp_path / "app"
    app.mkdir()
    (app / "CMakeLists.txt").write_text("cmake_minimum_required(VERSION 3.18)\nproject(app C)\n"
                                        "find_package(tgir 0.4 REQUIRED)\nadd_executable(app main.c)\n"
                                        "target_link_libraries(app PRIVATE tgir::tgir)\n")
    (app / "main.c").write_text('#include <stdio.h>\n#include <tgir.h>\n'
                                'int main(void) { printf("%s\\n", tgir_version()); return 0; }\n')
    steps = [["cmake", "--install", str(libtgir_build), "--prefix", str(prefix)],
             ["cmake", "-S", str(app), "-B", str(tmp_path / "build"), f"-DCMAKE_PREFIX_PATH={prefix}"],
             ["cmake", "--build", str(tmp_path / "build")], [str(tmp_path / "build" / "app")]]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    assert done.stdout.startswith("0.4.0 (aoti")
    assert (prefix / "include" / "tgir.h").is_file()
    example = prefix / "bin" / "tgir_search"
    if example.is_file():  # built where libpng is: it must find the installed libtgir by itself
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        done = subprocess.run([str(example)], capture_output=True, text=True, timeout=60, env=env)
        assert "cannot open shared object" not in done.stderr and "usage" in (done.stdout + done.stderr).lower(), (
            done.stderr)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf (binutils)")
def test_libtgir_loads_every_torch_library_a_compiled_graph_may_name(libtgir_build):
    """A graph's shared object finds its torch libraries only among those already loaded (dlopen does
    not search libtgir's RUNPATH for it): graphs compiled by torch 2.11 name libtorch.so, CUDA graphs
    libtorch_cuda.so and libc10_cuda.so. libtgir must load each one this torch has."""
    import torch

    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    dynamic = subprocess.run(["readelf", "-d", str(libtgir_build / "libtgir.so")], capture_output=True, text=True,
                             check=True).stdout
    needed = {line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "(NEEDED)" in line}
    wanted = {f"lib{n}.so" for n in ("torch_cpu", "c10", "torch", "torch_cuda", "c10_cuda")}
    assert {n for n in wanted if os.path.exists(os.path.join(lib_dir, n))} <= needed
    assert {"libtorch_cpu.so", "libc10.so", "libtorch.so"} <= needed  # in every torch build


def test_python_side_checks_before_libtgir(runners, parity_index, libtgir_build, amc_aoti_bundle, tmp_path):
    c, _ = runners
    _, index, folder = parity_index
    cindex = CIndex(folder, c)
    q = index.embeddings[:2]
    wide = np.concatenate([q, q], 1)
    for bad, message in ((q[:, :8], "queries have dimension 8"), (wide, f"dimension {wide.shape[1]}"),
                         (np.full_like(q, np.nan), "NaN or infinite")):
        with pytest.raises(TgirUserError, match=message):  # C reads D floats per query: no over-read
            cindex.search(bad, 3)
    for k, message in ((-1, "between 1 and the gallery size .* got -1"), (2.5, "k must be an integer, got float")):
        with pytest.raises(TgirUserError, match=message):
            cindex.search(q, k)
    assert cindex.search(q, np.int64(3)).indices.shape == (2, 3)
    with pytest.raises(TgirUserError, match=r"attach takes a GalleryIndex .* search a CIndex with its own"):
        c.attach(cindex)
    with pytest.raises(TgirUserError, match="contains a NUL character"):  # C would read "add" only
        c.encode_queries([np.zeros((8, 8, 3), np.uint8)], ["add\x00 red cube"])
    with pytest.raises(TgirUserError, match="threads must be an integer"):
        CRunner(amc_aoti_bundle, library=libtgir_build / "libtgir.so", threads="2")
    with pytest.raises(TgirUserError, match=r"device .* must be an integer, got str 'cuda'"):
        CRunner(amc_aoti_bundle, library=libtgir_build / "libtgir.so", device="cuda")
    (tmp_path / "h.py").write_text("print('not a library')\n")
    with pytest.raises(TgirUserError, match=r"h\.py: cannot load it as libtgir"):
        CRunner(amc_aoti_bundle, library=tmp_path / "h.py")
    closed = CRunner(amc_aoti_bundle, library=libtgir_build / "libtgir.so", threads=1)
    closed.close()
    with pytest.raises(TgirUserError, match="runner is closed"):
        closed.encode_images([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(TgirUserError, match="runner is closed"):  # not NULL, which would skip the bundle check
        CIndex(folder, closed)
    cindex.close()
    with pytest.raises(TgirUserError, match="the C index is closed"):
        cindex.search(q, 3)


def test_sixteen_bit_grey_is_scaled_for_the_c_runtime(runners, tmp_path):
    c, _ = runners
    grey = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # mode I;16
    a, b = c.encode_images([str(tmp_path / "g8.png"), str(tmp_path / "g16.png")])
    assert float(a @ b) > 0.9999

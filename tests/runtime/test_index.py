"""Gallery index and search: exact top-k equals a brute-force sort, FAISS equals exact, resumable
builds, refusal of foreign indices, and the `tgir index` / `tgir search` commands end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from tgir.runtime.index import GalleryIndex, build_index, exact_search

from tgir.cli import main
from tgir.errors import TgirUserError


def _unit(rows, dim, seed):
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_search_equals_brute_force():
    g, q = _unit(500, 16, 0), _unit(40, 16, 1)
    g[7] = g[3]  # an exact tie: the lower gallery row must rank first
    q[0] = g[3]
    idx, scores = exact_search(q, g, 10)
    full = q @ g.T
    for row in range(len(q)):
        want = sorted(range(len(g)), key=lambda j: (-full[row, j], j))[:10]
        assert idx[row].tolist() == want
        np.testing.assert_array_equal(scores[row], full[row, want])
    assert idx[0, :2].tolist() == [3, 7]
    assert exact_search(q, g, 500)[0].shape == (40, 500)  # k = G sorts everything


def test_faiss_equals_exact():
    pytest.importorskip("faiss", reason="faiss-cpu not installed")
    index = GalleryIndex(_unit(2000, 32, 2), [f"img{i}" for i in range(2000)], "fp")
    q = _unit(25, 32, 3)
    exact, fast = index.search(q, 20), index.search(q, 20, "faiss")
    assert exact.ids == fast.ids
    np.testing.assert_allclose(exact.scores, fast.scores, atol=1e-5)


def _clustered(rows, dim, clusters, spread, seed):
    """Near-duplicate groups (like CSS scenes that differ by one object): many scores within the
    int8 error of each other, so the re-rank has real work to do."""
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.standard_normal((clusters, dim)), rows // clusters, axis=0)
    x = (x + spread * rng.standard_normal(x.shape)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("spread", [0.3, 0.01, 0.0])
def test_int8_search_equals_exact(spread):
    g = _clustered(3000, 64, 30, spread, 4)
    index = GalleryIndex(g, [f"img{i}" for i in range(len(g))], "fp")
    q = np.concatenate([g[::150], _unit(10, 64, 5)])  # queries on gallery rows, and random ones
    for k in (1, 10, 100):
        exact, fast = index.search(q, k), index.search(q, k, "int8")
        np.testing.assert_allclose(fast.scores, exact.scores, atol=1e-6)
        # same entries in the same order, except where two scores differ by float rounding only:
        # numpy's GEMM and the re-rank's GEMV round differently (even equal rows can get scores one
        # ulp apart in a GEMM, so spread 0 is held to the same rule)
        for row in range(len(q)):
            for col in np.flatnonzero(np.asarray(fast.ids[row]) != np.asarray(exact.ids[row])):
                assert abs(exact.scores[row, col] - fast.scores[row, col]) < 1e-6
    stats = index.int8().stats
    assert stats.queries == len(q) and stats.candidates >= 100 * len(q)


def test_int8_bound_holds_and_prunes():
    from tgir.runtime.int8_search import Int8Search

    g, q = _unit(5000, 128, 6), _unit(8, 128, 7)
    search = Int8Search(g, threads=1)
    idx, scores = search.search(q, 5)
    assert idx.tolist() == exact_search(q, g, 5)[0].tolist()
    np.testing.assert_allclose(scores, exact_search(q, g, 5)[1], atol=1e-6)
    # unrelated random rows are far apart: the bound prunes most of the gallery
    assert search.stats.candidates < 0.2 * len(g) * len(q)
    # odd inputs: a zero query and a gallery with a zero row stay finite and exact
    g[3] = 0
    zero = Int8Search(g, threads=1)
    assert zero.search(np.zeros((1, 128), np.float32), 3)[0].tolist() == [[0, 1, 2]]
    assert zero.search(q, 5)[0].tolist() == exact_search(q, g, 5)[0].tolist()


def test_int8_search_model_is_readable_by_older_onnxruntime():
    """The scoring graph declares IR 8 (opset 17's), not the installed onnx's default: onnx 1.23
    writes IR 14, which onnxruntime 1.30 (the one on the lent GPU machines) refuses to load."""
    import onnx
    from tgir.runtime.int8_search import search_model

    model = search_model(np.zeros((16, 5), np.int8))
    assert model.ir_version == 8 and [o.version for o in model.opset_import] == [17]
    onnx.checker.check_model(model)


def test_unknown_search_method():
    index = GalleryIndex(_unit(5, 4, 0), list("abcde"), "fp")
    with pytest.raises(TgirUserError, match="unknown search method 'hnsw'; valid choices: 'exact', 'faiss', 'int8'"):
        index.search(_unit(1, 4, 1), 2, "hnsw")


def test_bad_k_and_dimension():
    index = GalleryIndex(_unit(5, 4, 0), list("abcde"), "fp")
    for k in (0, -1, 6):
        with pytest.raises(TgirUserError, match="k must be between 1 and the gallery size 5"):
            index.search(_unit(1, 4, 1), k)
    with pytest.raises(TgirUserError, match="dimension 3, the index 4"):
        index.search(_unit(1, 3, 1), 2)
    for method in ("exact", "int8"):
        with pytest.raises(TgirUserError, match="NaN or infinite"):
            index.search(np.full((1, 4), np.nan, np.float32), 2, method)


def test_faiss_puts_ties_in_gallery_order():
    faiss = pytest.importorskip("faiss", reason="faiss-cpu not installed")
    g = _unit(300, 8, 4)
    g[[250, 40, 299, 7, 120]] = g[3]  # six equal rows; FAISS alone returns them in heap order
    g[200:230] = g[100]  # a tie running past the rows FAISS is asked for
    index = GalleryIndex(g, [str(i) for i in range(300)], "fp")
    q = np.stack([g[3], g[100]])
    want = exact_search(q, g, 12)[0]
    got = index.search(q, 12, "faiss")
    assert got.indices.tolist() == want.tolist()
    assert got.indices[0, :6].tolist() == [3, 7, 40, 120, 250, 299]
    assert faiss is not None


@pytest.mark.parametrize("k", [2.5, "3", None, True, np.float32(2)])
def test_k_of_another_type_is_refused(k):
    index = GalleryIndex(_unit(5, 4, 0), list("abcde"), "fp")
    with pytest.raises(TgirUserError, match="k must be an integer, got"):
        index.search(_unit(1, 4, 1), k)
    assert index.search(_unit(1, 4, 1), np.int64(3)).indices.shape == (1, 3)  # numpy integers are integers


@pytest.mark.parametrize(("queries", "message"), [
    ("abc", "queries must be real numbers, got <U3"),
    (np.ones((1, 4), np.complex64), "real numbers, got complex64"),
    (np.ones((1, 1, 4), np.float32), r"must be \[Q, D\] \(or one \[D\] query\), got shape \[1, 1, 4\]"),
    (np.array([[None] * 4]), "real numbers, got object"),
    (np.full((1, 4), 1e300), "NaN or infinite values"),  # finite in float64, infinite in float32
])
def test_queries_must_be_real_1d_or_2d(queries, message):
    index = GalleryIndex(_unit(5, 4, 0), list("abcde"), "fp")
    with pytest.raises(TgirUserError, match=message):
        index.search(queries, 2)


def test_index_refuses_non_finite_embeddings_and_non_string_ids(tmp_path):
    bad = _unit(4, 4, 0)
    bad[2] = np.nan
    with pytest.raises(TgirUserError, match="embedding row 2 has NaN or infinite values"):
        GalleryIndex(bad, list("abcd"), "fp")
    with pytest.raises(TgirUserError, match="ids must be strings, got int 0"):
        GalleryIndex(_unit(4, 4, 0), [0, 1, 2, 3], "fp")
    with pytest.raises(TgirUserError, match="embeddings must be floats, got int64"):
        GalleryIndex(np.ones((4, 4), np.int64), list("abcd"), "fp")
    GalleryIndex(_unit(4, 4, 0), list("abcd"), "fp").save(tmp_path / "idx")
    np.save(tmp_path / "idx" / "embeddings.npy", bad)  # written by hand: load refuses it too
    with pytest.raises(TgirUserError, match=r"embeddings\.npy: holds NaN or infinite values"):
        GalleryIndex.load(tmp_path / "idx")


def test_k_past_the_gallery_is_refused_by_every_search_function():
    from tgir.runtime.int8_search import Int8Search

    g, q = _unit(5, 4, 0), _unit(1, 4, 1)
    with pytest.raises(TgirUserError, match="k must be between 1 and the gallery size 5, got 6"):
        exact_search(q, g, 6)
    with pytest.raises(TgirUserError, match="k must be between 1 and the gallery size 5, got 6"):
        Int8Search(g).search(q, 6)


def test_build_resumes_and_round_trips(tmp_path, monkeypatch):
    import tgir.runtime.index as module

    monkeypatch.setattr(module, "PART_ROWS", 4)
    items = [f"x{i}" for i in range(10)]
    emb = {f"x{i}": v for i, v in enumerate(_unit(10, 8, 5))}
    calls = []

    def embed(part, fail_at=None):
        calls.append(part)
        if fail_at and fail_at in part:
            raise KeyboardInterrupt
        return np.stack([emb[p] for p in part])

    with pytest.raises(KeyboardInterrupt):  # interrupted in the third part
        build_index(lambda p: embed(p, "x9"), items, items, tmp_path / "idx", "fp", {})
    calls.clear()
    built = build_index(embed, items, items, tmp_path / "idx", "fp", {"root": "r"})
    assert calls == [items[8:]]  # parts 0 and 1 were kept
    loaded = GalleryIndex.load(tmp_path / "idx")
    np.testing.assert_array_equal(loaded.embeddings, built.embeddings)
    assert loaded.ids == items and loaded.info == {"root": "r"} and not (tmp_path / "idx" / "parts").exists()
    with pytest.raises(TgirUserError, match="not a finished tgir index"):
        GalleryIndex.load(tmp_path)


def test_index_and_search_commands(tiny_amc_bundle, tiny_css2d, tmp_path, capsys):
    catalogue = tmp_path / "shop"
    catalogue.mkdir()
    for n, src in enumerate(sorted((tiny_css2d / "images").glob("css_test_*.png"))[:12]):
        shutil.copy(src, catalogue / f"item{n:02d}.png")
    ref = catalogue / "item03.png"
    assert main(["index", "--bundle", str(tiny_amc_bundle), "--images", str(catalogue),
                 "--out", str(tmp_path / "idx")]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 12
    args = ["search", "--bundle", str(tiny_amc_bundle), "--index", str(tmp_path / "idx"), "--image", str(ref),
            "--text", "make the red circle big", "-k", "5"]
    assert main([*args, "--json", "--grid", str(tmp_path / "grid.png")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in result["results"]] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True)
    assert Image.open(tmp_path / "grid.png").size[0] == 6 * 128
    # the same ranking as embedding by hand and sorting every score
    import tgir.runtime

    with tgir.runtime.open(tiny_amc_bundle) as runner:
        q = runner.encode_queries([ref], ["make the red circle big"])
        g = runner.encode_images(sorted(catalogue.glob("*.png")))
    assert [r["id"] for r in result["results"]] == [f"item{j:02d}.png" for j in np.argsort(-(q @ g.T)[0])[:5]]
    assert main([*args, "--json", "--search", "int8"]) == 0  # int8 scoring + re-rank: the same results
    assert [r["id"] for r in json.loads(capsys.readouterr().out)["results"]] == [r["id"] for r in result["results"]]
    assert main([*args, "--search", "hnsw"]) == 2  # click's own usage error lists the choices
    assert "'exact', 'faiss', 'int8'" in capsys.readouterr().err
    # user mistakes: one line, exit 1
    assert main([*args[:-2], "-k", "13"]) == 1
    assert "k must be between 1 and the gallery size 12" in capsys.readouterr().err
    assert main([*args[:-2], "-k", "0"]) == 1
    capsys.readouterr()
    assert main([*args[:5], "--image", str(tmp_path / "idx" / "ids.json"), *args[7:]]) == 1
    assert "cannot decode image" in capsys.readouterr().err
    assert main([*args[:-4], "--text", "qwerty zxcv", "-k", "3"]) == 0
    assert "no word of 'qwerty zxcv'" in capsys.readouterr().err  # warns, still answers
    data = json.loads((tmp_path / "idx" / "index.json").read_text())
    data["fingerprint"] = "another-bundle"
    (tmp_path / "idx" / "index.json").write_text(json.dumps(data))
    assert main(args) == 1
    assert "built by another bundle" in capsys.readouterr().err


def _int8_like(bundle, folder):
    """A copy of an fp32 bundle whose manifest says int8 and lists an AOTInductor image encoder, so the
    C runtime's fingerprint (fp32, the compiled encoder) differs from its graphs' (int8)."""
    from tgir.manifest import Manifest

    shutil.copytree(bundle, folder)
    shutil.copy(folder / "image_encoder.onnx", folder / "aoti_image_encoder.bin")
    m = Manifest.load(folder)
    m.precision = "int8"
    m.aoti = {"graphs": {"image_encoder": {"file": "aoti_image_encoder.bin"}}}
    (folder / "aoti_image_encoder.bin").write_bytes(b"compiled")
    m.files["aoti_image_encoder.bin"] = ""
    m.save(folder)
    return m


def test_index_records_the_fingerprint_of_the_runtime_that_searches(tiny_amc_bundle, tiny_css2d, tmp_path,
                                                                    capsys, monkeypatch):
    """`tgir index --backend c` on an INT8 bundle: the C runtime (AOTInductor, fp32) must accept the
    index, and ONNX Runtime (int8) refuse it with the command that fixes it, and the other way round."""
    from tgir.runtime.index import bundle_fingerprint
    from tgir.runtime.ort import OrtRunner

    import tgir.cli.search as cli

    m = _int8_like(tiny_amc_bundle, tmp_path / "b")

    class AotiLike(OrtRunner):  # what CRunner reports with AOTInductor packages, without building libtgir
        backend, index_backend = "c", "aoti"

    plain = cli.open_bundle

    def fake_open(bundle, backend, threads):
        return AotiLike(bundle) if backend == "c" else plain(bundle, backend, threads)

    monkeypatch.setattr(cli, "open_bundle", fake_open)
    catalogue = tmp_path / "shop"
    catalogue.mkdir()
    for src in sorted((tiny_css2d / "images").glob("css_test_*.png"))[:3]:
        shutil.copy(src, catalogue / src.name)
    base = ["--bundle", str(tmp_path / "b")]
    for backend in ("c", "onnxruntime"):
        assert main(["index", *base, "--images", str(catalogue), "--out", str(tmp_path / backend),
                     "--backend", backend]) == 0
    assert GalleryIndex.load(tmp_path / "c").fingerprint == bundle_fingerprint(m, backend="aoti")
    assert "-fp32-" in bundle_fingerprint(m, backend="aoti")
    assert GalleryIndex.load(tmp_path / "onnxruntime").fingerprint == bundle_fingerprint(m)
    capsys.readouterr()
    query = ["--image", str(next(catalogue.iterdir())), "--text", "add red circle", "-k", "2"]
    for backend in ("c", "onnxruntime"):
        assert main(["search", *base, "--index", str(tmp_path / backend), *query, "--backend", backend]) == 0
    assert main(["search", *base, "--index", str(tmp_path / "onnxruntime"), *query, "--backend", "c"]) == 1
    assert "rebuild it with `tgir index --backend c`" in capsys.readouterr().err
    assert main(["search", *base, "--index", str(tmp_path / "c"), *query, "--backend", "onnxruntime"]) == 1
    err = capsys.readouterr().err
    assert "built by another bundle or backend" in err and "with backend c" in err
    assert "search with --backend c, or rebuild it with `tgir index` without --backend c" in err


@pytest.mark.parametrize(("file", "content", "message"), [
    ("index.json", "[]", r"index\.json: expected a JSON object, got an array"),
    ("index.json", {"fingerprint": 5}, r"index\.json: 'fingerprint' must be a string, got a number"),
    ("index.json", {"count": "3"}, r"index\.json: 'count' must be an integer, got a string"),
    ("index.json", {"root": None}, r"index\.json: 'root' must be a string, got null"),
    ("ids.json", {"a": 1}, r"ids\.json: expected a JSON array of id strings"),
    ("ids.json", [1, 2, 3], r"ids\.json: expected a JSON array of id strings"),
])
def test_malformed_index_files_are_refused(tmp_path, file, content, message):
    GalleryIndex(_unit(3, 4, 0), list("abc"), "fp", {"root": "r"}).save(tmp_path)
    if isinstance(content, dict) and file == "index.json":
        content = {**json.loads((tmp_path / file).read_text()), **content}
    (tmp_path / file).write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(TgirUserError, match=message):
        GalleryIndex.load(tmp_path)


def test_unwritable_outputs_are_refused_before_the_work(tmp_path):
    from tgir.runtime.grid import draw_grid

    (tmp_path / "file").write_text("")
    calls = []
    with pytest.raises(TgirUserError, match=r"file/idx: cannot write there"):
        build_index(lambda p: calls.append(p), ["x"], ["x"], tmp_path / "file" / "idx", "fp", {})
    assert calls == []  # nothing embedded
    with pytest.raises(TgirUserError, match=r"file/g\.png: cannot write there"):
        draw_grid(tmp_path / "missing.png", "text", [], tmp_path / "file" / "g.png")  # before reading anything


def test_search_checks_the_grid_path_first_and_warns_about_long_texts(tiny_amc_bundle, tiny_css2d, tmp_path, capsys):
    catalogue = tmp_path / "shop"
    catalogue.mkdir()
    for src in sorted((tiny_css2d / "images").glob("css_test_*.png"))[:3]:
        shutil.copy(src, catalogue / src.name)
    assert main(["index", "--bundle", str(tiny_amc_bundle), "--images", str(catalogue),
                 "--out", str(tmp_path / "idx")]) == 0
    (tmp_path / "file").write_text("")
    args = ["search", "--bundle", str(tiny_amc_bundle), "--index", str(tmp_path / "idx"),
            "--image", str(next(catalogue.iterdir())), "-k", "2"]
    capsys.readouterr()
    assert main([*args, "--text", "add red circle", "--grid", str(tmp_path / "file" / "g.png")]) == 1
    err = capsys.readouterr().err
    assert "g.png: cannot write there" in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--text", "add a big red circle to the top left corner now"]) == 0  # 11 words > 8
    assert "has 11 words; the bundle reads the first 8 and ignores the rest" in capsys.readouterr().err
    assert main(["index", "--bundle", str(tiny_amc_bundle), "--images", str(catalogue),
                 "--out", str(tmp_path / "file" / "idx")]) == 1
    assert "idx: cannot write there" in capsys.readouterr().err


def test_every_option_has_help():
    from tgir.cli.search import index, search

    for command in (index, search):
        assert [p.name for p in command.params if not p.help] == []

"""``tgir-export aoti``: AOTInductor objects of a bundle's graphs match ONNX Runtime, are recorded and
checksummed in the manifest, are not recompiled when up to date, and a failure leaves the bundle as
it was. The compiled objects are loaded bare, as the C runtime loads them (no .pt2 package)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tgir.export import aoti
from tgir.export.aoti import AotiConfig, aoti_from_bundle, load_shared_object
from tgir.export.cli import main
from tgir.runtime.index import bundle_fingerprint
from tgir.runtime.ort import OrtOptions, OrtRunner

from tgir.errors import TgirInternalError, TgirUserError
from tgir.manifest import GRAPHS, Manifest, sha256

pytestmark = pytest.mark.slow  # the session fixture compiles three graphs with g++ (about 50 s)


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    return out


def _state(folder: Path) -> dict[str, str]:
    """Every file of a bundle (temporary folders included) and its checksum."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _prebuilt(bundle: Path, monkeypatch) -> None:
    """Skip ``torch.export`` and make ``compile_package`` package the bundle's compiled objects, so
    everything after compiling (extraction, parity, installing) runs in seconds."""
    def compile_package(program, path, device, name):
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w") as z:
            z.write(bundle / "aoti" / f"{name}.so", f"{name}/data/aotinductor/model/x.wrapper.so")
            z.writestr(f"{name}/data/aotinductor/model/x.wrapper.cpp", "// source, not extracted")
        return path

    monkeypatch.setattr(torch.export, "export", lambda *args, **kwargs: None)
    monkeypatch.setattr(aoti, "compile_package", compile_package)


def test_manifest_records_the_objects(tiny_aoti_bundle, tiny_amc_bundle):
    m = Manifest.load(tiny_aoti_bundle)  # verifies every checksum, the .so files included
    section = m.aoti
    assert {k: section[k] for k in ("device", "torch", "precision")} == {
        "device": "cpu", "torch": torch.__version__, "precision": "fp32"}
    assert section["cpu_isa"] == aoti.cpu_isa()
    assert list(section["graphs"]) == list(GRAPHS)
    for name, entry in section["graphs"].items():
        assert entry["file"] == f"aoti/{name}.so" and entry["file"] in m.files
        assert entry["inputs"] == [t["name"] for t in m.graphs[name]["inputs"]]
        assert entry["outputs"] == [t["name"] for t in m.graphs[name]["outputs"]]
        assert section["source_sha256"][name] == sha256(tiny_aoti_bundle / f"{name}.onnx")
        assert "extra_files" not in entry  # CPU: one self-contained object per graph
    assert section["graphs"]["composer"]["inputs"] == ["tokens", "text_features"]
    assert not list(tiny_aoti_bundle.glob(".aoti.*"))  # the work folder is gone
    assert Manifest.load(tiny_amc_bundle).aoti == {}


def test_objects_match_onnx_runtime(tiny_aoti_bundle):
    runner = OrtRunner(tiny_aoti_bundle, OrtOptions(provider="cpu"))
    objects = {g: load_shared_object(tiny_aoti_bundle / f"aoti/{g}.so") for g in GRAPHS}
    rng = np.random.default_rng(0)
    texts = ["add red circle", "remove blue square", "make it yellow"] * 3
    worst = {}
    for batch in (1, 3, 8):  # 8: the bundle's max batch
        images = rng.standard_normal((batch, 3, 64, 64)).astype(np.float32)
        ids, lengths = runner.tokenize(texts[:batch])
        feeds = {"image_encoder": {"images": images}, "text_encoder": {"ids": ids, "lengths": lengths}}
        ort_out = {g: runner.run(g, f) for g, f in feeds.items()}
        composer = {"tokens": ort_out["image_encoder"]["tokens"], **ort_out["text_encoder"]}
        feeds["composer"], ort_out["composer"] = composer, runner.run("composer", composer)
        for graph, spec in runner.graphs.items():
            args = [torch.from_numpy(feeds[graph][t["name"]]) for t in spec["inputs"]]
            got = objects[graph].run(args)
            for t, out in zip(spec["outputs"], got, strict=True):
                diff = float(np.abs(out.numpy() - ort_out[graph][t["name"]]).max())
                worst[graph] = max(worst.get(graph, 0.0), diff)
    assert all(d <= 1e-4 for d in worst.values()), worst


def test_up_to_date_does_not_recompile(tiny_aoti_bundle, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("recompiled an up-to-date bundle")

    monkeypatch.setattr(aoti, "compile_package", refuse)
    before = _state(tiny_aoti_bundle)
    lines = []
    aoti_from_bundle(tiny_aoti_bundle, progress=lines.append)
    assert len(lines) == 1 and lines[0].startswith("up to date")
    assert main(["aoti", "--bundle", str(tiny_aoti_bundle), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["up_to_date"] is True and sorted(out["files"]) == [f"aoti/{g}.so" for g in sorted(GRAPHS)]
    assert main(["aoti", "--bundle", str(tiny_aoti_bundle)]) == 0  # without --json: a summary for people
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"up to date: {tiny_aoti_bundle}/aoti (cpu, torch ")
    assert [ln.split()[0] for ln in lines[1:]] == [f"aoti/{g}.so" for g in sorted(GRAPHS)]
    assert _state(tiny_aoti_bundle) == before


def test_stale_when_a_graph_or_torch_changes(tiny_aoti_bundle, monkeypatch):
    m = Manifest.load(tiny_aoti_bundle)
    assert aoti.stale_reason(m, "cpu") is None
    assert aoti.stale_reason(m, "cuda") == "device differs"
    m.files["composer.onnx"] = "0" * 64  # as if the composer were re-exported
    assert aoti.stale_reason(m, "cpu") == "source_sha256 differs"
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert aoti.stale_reason(Manifest.load(tiny_aoti_bundle), "cpu") == "torch differs"


def test_forced_rebuild_replaces_the_objects(tiny_aoti_bundle, tmp_path, monkeypatch):
    bundle = _copy(tiny_aoti_bundle, tmp_path)
    (bundle / "aoti" / "stray.so").write_bytes(b"left by an older build")
    _prebuilt(tiny_aoti_bundle, monkeypatch)
    lines = []
    m = aoti_from_bundle(bundle, AotiConfig(force=True), progress=lines.append)
    assert [ln.split(":")[0] for ln in lines] == list(GRAPHS) and all("checked in" in ln for ln in lines)
    assert sorted(p.name for p in (bundle / "aoti").iterdir()) == sorted(f"{g}.so" for g in GRAPHS)
    assert Manifest.load(bundle).aoti == m.aoti == Manifest.load(tiny_aoti_bundle).aoti
    assert not list(bundle.glob(".aoti.*"))


def test_parity_failure_leaves_the_bundle_unchanged(tiny_aoti_bundle, tmp_path, monkeypatch):
    bundle = _copy(tiny_aoti_bundle, tmp_path)
    before = _state(bundle)
    _prebuilt(tiny_aoti_bundle, monkeypatch)
    real = aoti.load_shared_object

    class Off:  # the composer's object, 1e-3 off
        def __init__(self, path, device="cpu"):
            self.inner = real(path, device)
            self.off = 1e-3 if Path(path).stem == "composer" else 0.0

        def run(self, args):
            return [t + self.off for t in self.inner.run(args)]

    monkeypatch.setattr(aoti, "load_shared_object", Off)
    with pytest.raises(TgirInternalError, match=r"composer: AOTInductor output differs from eager PyTorch by 0\.001"):
        aoti_from_bundle(bundle, AotiConfig(force=True))
    assert _state(bundle) == before


def test_failed_install_restores_the_bundle(tiny_aoti_bundle, tmp_path, monkeypatch):
    bundle = _copy(tiny_aoti_bundle, tmp_path)
    before = _state(bundle)
    _prebuilt(tiny_aoti_bundle, monkeypatch)

    def broken_save(self, folder):
        (Path(folder) / "manifest.json").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(Manifest, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        aoti_from_bundle(bundle, AotiConfig(force=True))
    assert _state(bundle) == before


def test_compiler_failure_is_a_user_error(monkeypatch):
    from torch._inductor import exc

    def fail(*args, **kwargs):
        output = "\n".join(["x.cpp:1:1: error: boom", "line 2", "", "line 3", "line 4"])
        raise exc.InductorError(exc.CppCompileError(["g++", "x.cpp"], output), None)

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", fail)
    with pytest.raises(TgirUserError, match=r"^composer: AOTInductor needs a working C\+\+ compiler \(g\+\+; or set "
                                            r"CXX\): x\.cpp:1:1: error: boom \| line 2 \| line 3$"):
        aoti.compile_package(None, Path("/nonexistent/x.pt2"), "cpu", "composer")
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package",
                        lambda *a, **k: (_ for _ in ()).throw(exc.InductorError(exc.InvalidCxxCompiler(), None)))
    with pytest.raises(TgirUserError, match="No working C\\+\\+ compiler found"):
        aoti.compile_package(None, Path("/nonexistent/x.pt2"), "cpu", "composer")


def _one_error_line(err: str, text: str) -> None:
    lines = err.strip().splitlines()
    assert lines[-1].startswith("tgir-export: error: ") and text in lines[-1], err
    assert "Traceback" not in err


def test_cli_errors(tiny_amc_bundle, tmp_path, capsys):
    assert main(["aoti", "--bundle", str(tmp_path / "nowhere")]) == 1
    _one_error_line(capsys.readouterr().err, "not a tgir bundle (no manifest.json)")
    if not torch.cuda.is_available():
        assert main(["aoti", "--bundle", str(tmp_path / "nowhere"), "--device", "cuda"]) == 1
        _one_error_line(capsys.readouterr().err, "torch.cuda.is_available() is False")
    assert main(["aoti", "--bundle", str(tiny_amc_bundle), "--device", "tpu"]) == 2  # click's usage error
    bundle = _copy(tiny_amc_bundle, tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["model"]["checkpoint"], manifest["aoti"]  # and an older manifest without the section
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert Manifest.load(bundle).aoti == {}
    before = _state(bundle)
    assert main(["aoti", "--bundle", str(bundle)]) == 1
    _one_error_line(capsys.readouterr().err, "names no source checkpoint; pass --checkpoint")
    assert main(["aoti", "--bundle", str(bundle), "--checkpoint", str(tmp_path / "none.pt")]) == 1
    _one_error_line(capsys.readouterr().err, "none.pt")
    assert _state(bundle) == before


def test_compiler_failure_on_the_command_line(tiny_amc_bundle, tmp_path, monkeypatch, capsys):
    from torch._inductor import exc

    def fail(*args, **kwargs):
        raise exc.InductorError(exc.CppCompileError(["g++"], "fatal error: Python.h: No such file"), None)

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", fail)
    bundle = _copy(tiny_amc_bundle, tmp_path)
    before = _state(bundle)
    assert main(["aoti", "--bundle", str(bundle)]) == 1
    _one_error_line(capsys.readouterr().err, "image_encoder: AOTInductor needs a working C++ compiler (g++; or set "
                                             "CXX): fatal error: Python.h: No such file")
    assert _state(bundle) == before


def test_fingerprint_of_the_aoti_backend(tiny_aoti_bundle):
    m = Manifest.load(tiny_aoti_bundle)
    fp32 = bundle_fingerprint(m)
    assert bundle_fingerprint(m, backend="aoti") == fp32  # fp32 bundle: ORT and AOTI share the index
    assert bundle_fingerprint(m, backend="onnxruntime") == fp32
    m.precision = "int8"  # as an INT8 bundle of the same model with the same compiled objects
    digest = m.model["config_digest"][:16]
    assert bundle_fingerprint(m).startswith(f"{digest}-int8-")
    assert bundle_fingerprint(m, backend="aoti") == f"{digest}-fp32-{m.files['aoti/image_encoder.so'][:16]}"
    m.aoti = {}
    assert bundle_fingerprint(m, backend="aoti") == f"{digest}-fp32-"  # no objects: matches no index


def test_fp16_bundle_does_not_inherit_the_objects(tiny_aoti_bundle, tmp_path):
    """The compiled objects belong to the fp32 bundle they were recorded in: an FP16 bundle made from it
    has neither the section nor the files (``tgir-export aoti`` on it compiles its own)."""
    from tgir.calib.fp16 import fp16_from_bundle

    new = fp16_from_bundle(tiny_aoti_bundle, tmp_path / "fp16")
    assert new.aoti == {} and not any(f.startswith("aoti/") for f in new.files)
    assert not (tmp_path / "fp16" / "aoti").exists() and Manifest.load(tmp_path / "fp16").aoti == {}


# -- the objects behind the runner protocol (tgir bench's ``aoti`` backend) --------------------------
def test_aoti_runner_matches_onnx_runtime_on_whole_queries(tiny_aoti_bundle, tiny_css2d):
    from tgir.data.registry import load_split

    split = load_split("css2d", tiny_css2d, "test")
    refs = [split.images[q.ref].path for q in split.queries[:6]]
    texts = [q.text for q in split.queries[:6]]
    ort_runner = OrtRunner(tiny_aoti_bundle, OrtOptions(provider="cpu"))
    with aoti.AotiRunner(tiny_aoti_bundle) as runner:
        assert runner.backend == "aoti" and runner.device == "cpu"
        # an index it builds carries the fingerprint libtgir (same compiled graphs) computes
        assert runner.index_backend == "aoti"
        for batch in (1, 6):
            want = ort_runner.encode_queries(refs[:batch], texts[:batch])
            got = runner.encode_queries(refs[:batch], texts[:batch])
            assert got.shape == want.shape and np.abs(got - want).max() <= 1e-4
        gallery = runner.encode_images(refs)
        assert np.abs(gallery - ort_runner.encode_images(refs)).max() <= 1e-4
        with pytest.raises(TgirUserError, match="inputs are"):  # validated before the object runs
            runner.run("image_encoder", {"pixels": np.zeros((1, 3, 64, 64), np.float32)})


def test_aoti_runner_refuses_missing_foreign_or_stale_objects(tiny_aoti_bundle, tiny_amc_bundle, tmp_path,
                                                             monkeypatch):
    with pytest.raises(TgirUserError, match="has no AOTInductor packages; compile them with `tgir-export aoti"):
        aoti.AotiRunner(tiny_amc_bundle)
    if not torch.cuda.is_available():
        with pytest.raises(TgirUserError, match=r"torch\.cuda\.is_available"):
            aoti.AotiRunner(tiny_aoti_bundle, device="cuda")
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    with pytest.raises(TgirUserError, match=r"do not fit this machine \(torch differs: compiled for cpu, torch "):
        aoti.AotiRunner(tiny_aoti_bundle)


def test_bench_aoti_target_runs_and_reports_a_bundle_without_objects(tiny_aoti_bundle, tiny_amc_bundle):
    from tgir.benchmarks import bench
    from tgir.benchmarks.bench import BenchConfig, Target

    targets = (Target("aoti", "aoti", str(tiny_aoti_bundle), (("threads", "1"),)),
               Target("bare", "aoti", str(tiny_amc_bundle)))
    result = bench.run_bench(BenchConfig(targets=targets, isolate=False, batches=(1, 2), iters=2, warmup=1,
                                         gallery=20, k=3))
    ok, bare = result["targets"]
    assert ok["status"] == "ok" and (ok["precision"], ok["device"], ok["threads"]) == ("fp32", "cpu", 1)
    assert len(ok["results"]) == 8 and all(r["gpu_split"] is None for r in ok["results"])
    assert bare["status"] == "skipped" and "tgir-export aoti" in bare["reason"]


def test_aoti_runner_checks_inputs_device_and_closing(tiny_aoti_bundle):
    with pytest.raises(TgirUserError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        aoti.AotiRunner(tiny_aoti_bundle, device="tpu")
    runner = aoti.AotiRunner(tiny_aoti_bundle)
    size, length = len(runner.vocab), runner.text_length
    ones = np.ones((1, length), np.int64)
    with pytest.raises(TgirUserError, match=f"token id {size} outside the vocabulary"):  # the object would abort
        runner.run("text_encoder", {"ids": ones * size, "lengths": np.ones(1, np.int64)})
    with pytest.raises(TgirUserError, match=rf"lengths: 99 outside 1\.\.{length}"):
        runner.run("text_encoder", {"ids": ones, "lengths": np.full(1, 99, np.int64)})
    runner.close()
    with pytest.raises(TgirUserError, match="the aoti runner is closed"):
        runner.run("text_encoder", {"ids": ones, "lengths": np.ones(1, np.int64)})


def _truncate(bundle: Path, graph: str, sign: bool) -> Path:
    so = bundle / "aoti" / f"{graph}.so"
    so.write_bytes(so.read_bytes()[: so.stat().st_size // 2])
    if sign:  # re-signed: the checksum no longer tells the truncation
        m = Manifest.load(bundle, verify=False)
        m.files[f"aoti/{graph}.so"] = sha256(so)
        m.save(bundle)
    return so


def test_truncated_object_is_refused_not_mapped(tiny_aoti_bundle, tmp_path):
    bundle = _copy(tiny_aoti_bundle, tmp_path)
    so = _truncate(bundle, "text_encoder", sign=True)
    with pytest.raises(TgirUserError, match=r"text_encoder\.so: cannot load the compiled graph \(file truncated"):
        aoti.AotiRunner(bundle)  # mapping it would end the process with SIGBUS
    so.write_bytes(b"#!/bin/sh\n")
    with pytest.raises(TgirUserError, match="not a 64-bit ELF shared object"):
        aoti.check_elf(so)
    aoti.check_elf(tiny_aoti_bundle / "aoti" / "text_encoder.so")


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_rebuild_repairs_a_damaged_object(tiny_aoti_bundle, tmp_path, monkeypatch, damage):
    bundle = _copy(tiny_aoti_bundle, tmp_path)
    so = _truncate(bundle, "composer", sign=False)
    if damage == "missing":
        so.unlink()
    with pytest.raises(TgirUserError, match="checkpoint not found"):  # checked even before "up to date"
        aoti_from_bundle(bundle, checkpoint=tmp_path / "none.pt")
    _prebuilt(tiny_aoti_bundle, monkeypatch)
    lines = []
    aoti_from_bundle(bundle, AotiConfig(force=damage == "truncated"), progress=lines.append)  # stale either way
    assert [ln.split(":")[0] for ln in lines] == list(GRAPHS)
    assert Manifest.load(bundle).aoti == Manifest.load(tiny_aoti_bundle).aoti  # verified, checksums and all

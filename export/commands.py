"""The ``tgir-export`` subcommands: parse flags into a config, call one library function, print."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
from tgir.calib.cache import DEFAULT_CACHE_VERSION
from tgir.export.summary import aoti_lines, bundle_files, calibrate_what, emit, report_lines, written_lines

from tgir.data.registry import DATASETS

_TENSORRT_HELP = "TensorRT version whose ONNX parser the lint targets ('none' skips the lint)."
_JSON_HELP = "Print the result as one line of JSON (for scripts) instead of the summary."


def _tensorrt(value: str) -> str | None:
    """``--tensorrt``: None for 'none', else a version with an operator table (checked now, before any work)."""
    from tgir.export.lint import operator_table

    if value.lower() == "none":
        return None
    operator_table(value)  # raises the one-line error listing the known versions
    return value


def _write_checked(out_dir: str, overwrite: bool, write: Callable[[Path], object], check: Callable[[Path], object]):
    """Write a bundle and check it in a folder beside ``out_dir``, renamed to ``out_dir`` only when
    the check passed: a failed export or check leaves nothing behind (and any old bundle intact).

    Returns:
        What ``write`` and ``check`` returned.
    """
    from tgir.export.check import require_ok

    from tgir.manifest import staged_bundle

    with staged_bundle(out_dir, overwrite) as folder:
        written = write(folder)
        report = check(folder)
        require_ok(report, out_dir, note=f" (nothing was written to {out_dir})")
    return written, report


def _progress(label: str):
    def report(done: int, total: int) -> None:
        if done == total or done % 10 == 1:
            click.echo(f"{label} {done}/{total}", err=True)

    return report


@click.command("onnx")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Trained checkpoint.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Bundle directory.")
@click.option("--tau", type=float, help="AMC gate threshold (default: the checkpoint's; 0 = dense graph).")
@click.option("--router", type=click.Choice(["if", "dense"]), default="if", show_default=True,
              help="AMC router form: ONNX If per expert, or every expert computed with gates applied.")
@click.option("--opset", default=18, show_default=True, help="ONNX opset (18..23).")
@click.option("--max-batch", default=64, show_default=True, help="Largest batch of the dynamic batch axis.")
@click.option("--max-text-len", default=32, show_default=True, help="Padded text length of the text graph.")
@click.option("--data", type=click.Path(file_okay=False), help="Dataset root for the parity check "
              "(default: a small generated CSS-2D test split).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="css2d", show_default=True,
              help="Format of --data.")
@click.option("--parity/--no-parity", default=True, show_default=True,
              help="Compare ONNX Runtime with PyTorch on dataset samples after export.")
@click.option("--tensorrt", default="10.15", show_default=True, help=_TENSORRT_HELP)
@click.option("--overwrite/--no-overwrite", default=False, show_default=True, help="Replace a non-empty --out.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def onnx_command(checkpoint, out_dir, tau, router, opset, max_batch, max_text_len, data, dataset, parity, tensorrt,
                 overwrite, as_json) -> None:
    """Export a checkpoint to three ONNX graphs plus manifest.json, then check them."""
    from tgir.export.check import check_bundle
    from tgir.export.onnx import OnnxConfig, onnx_from_checkpoint

    cfg = OnnxConfig(tau=tau, router=router, opset=opset, max_batch=max_batch, text_length=max_text_len)
    lint = _tensorrt(tensorrt)
    manifest, report = _write_checked(
        out_dir, overwrite,
        lambda folder: onnx_from_checkpoint(checkpoint, folder, cfg,
                                            progress=lambda g: click.echo(f"exporting {g} ...", err=True)),
        lambda folder: check_bundle(folder, checkpoint, data, dataset, lint, parity, _progress("parity")))
    result = {"out": out_dir, "family": manifest.model["family"], "router": manifest.router, **report.to_dict()}
    r = manifest.router
    what = manifest.model["family"] + (f", router {r['form']}, tau {r.get('tau')}" if r.get("form") else "")
    emit(result, written_lines(out_dir, what, bundle_files(manifest), result), as_json)


@click.command("check")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="PyTorch reference for parity (default: the checkpoint the manifest names, if unchanged).")
@click.option("--data", type=click.Path(file_okay=False), help="Dataset root for parity samples "
              "(default: a small generated CSS-2D test split).")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="css2d", show_default=True,
              help="Format of --data.")
@click.option("--parity/--no-parity", default=True, show_default=True, help="Run the ONNX Runtime vs PyTorch check.")
@click.option("--tensorrt", default="10.15", show_default=True, help=_TENSORRT_HELP)
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def check_command(bundle, checkpoint, data, dataset, parity, tensorrt, as_json) -> None:
    """Check a bundle: ONNX checker (full), strict shape inference, I/O against the manifest, graph
    hygiene, TensorRT operator lint, ONNX Runtime's saved (*.ort.onnx) and fused graphs open, and
    ONNX Runtime vs PyTorch parity with identical top-10."""
    from tgir.export.check import check_bundle, require_ok

    report = check_bundle(bundle, checkpoint, data, dataset, _tensorrt(tensorrt), parity, _progress("parity"))
    result = report.to_dict()
    emit(result, [f"{bundle}: check {'passed' if report.ok else 'FAILED'}", *report_lines(result)], as_json)
    require_ok(report, bundle)


@click.command("calibrate")
@click.option("--bundle", required=True, type=click.Path(file_okay=False), help="fp32 bundle (tgir-export onnx).")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Dataset root of the samples.")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="css2d", show_default=True,
              help="Format of --data.")
@click.option("--split", default="train", show_default=True,
              help="Split the samples come from (never test: that would tune on it).")
@click.option("--method", type=click.Choice(["entropy", "percentile", "max"]), default="entropy", show_default=True,
              help="Activation observer.")
@click.option("--percentile", default=99.99, show_default=True, help="Kept share of |values| (percentile).")
@click.option("--samples", default=512, show_default=True, help="Calibration queries (reference + target + text).")
@click.option("--seed", default=0, show_default=True, help="Seed of the sample draw.")
@click.option("--flavour", type=click.Choice(["tensorrt", "cpu"]), default="tensorrt", show_default=True,
              help="tensorrt: int8 symmetric activations; cpu: uint8 activations, 7-bit weights (ONNX Runtime CPU).")
@click.option("--int8-lstm/--float-lstm", "int8_lstm", default=None,
              help="LSTM weights in int8 (ONNX Runtime's DynamicQuantizeLSTM). Default: int8 for the cpu flavour, "
                   "float for tensorrt (which cannot run that op).")
@click.option("--keep", multiple=True, metavar="PATTERN",
              help="Module names (fnmatch) left in floating point; repeatable; replaces the default: "
                   "*router.net.3 (the router's gate logits), *backbone._conv_stem and *backbone.conv1 "
                   "(the image trunk's stem).")
@click.option("--keep-sensitive", default=0, show_default=True, metavar="N",
              help="Also leave in float the N layers a sensitivity sweep finds most harmful to quantize.")
@click.option("--cache-trt-version", default=DEFAULT_CACHE_VERSION, show_default=True, metavar="X.Y.Z",
              help="TensorRT version the per-graph calibration caches (for the fp32 graphs' implicit INT8 path, "
                   "TensorRT 8.5-10.x) are written for; JetPack 5.1 is 8.5.2, JetPack 6.1/6.2 10.3.0.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Source checkpoint (default: the manifest's).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="INT8 bundle directory.")
@click.option("--overwrite/--no-overwrite", default=False, show_default=True, help="Replace a non-empty --out.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def calibrate_command(bundle, data, dataset, split, method, percentile, samples, seed, flavour, int8_lstm, keep,
                      keep_sensitive, cache_trt_version, checkpoint, out_dir, overwrite, as_json) -> None:
    """Calibrate an fp32 bundle's model on real samples and write an INT8 Q/DQ bundle (Q/DQ inside
    the experts' If branches too), then check it."""
    from tgir.calib.cache import version_number
    from tgir.calib.data import CalibData, usable_queries
    from tgir.calib.qdq import QuantConfig
    from tgir.export.check import check_graphs
    from tgir.export.quantize import quantized_from_bundle

    cdata = CalibData(dataset, data, split=split, samples=samples, seed=seed)
    qcfg = QuantConfig(flavour=flavour, method=method, percentile=percentile, int8_lstm=int8_lstm,
                       keep_sensitive=keep_sensitive, **({"keep": keep} if keep else {}))
    version_number(cache_trt_version)  # a bad version fails before minutes of calibration
    usable_queries(cdata)  # so does a dataset that is missing or too small
    (manifest, _), report = _write_checked(
        out_dir, overwrite,
        lambda folder: quantized_from_bundle(bundle, folder, cdata, qcfg, checkpoint, progress=_stage_reporter(),
                                             cache_version=cache_trt_version),
        lambda folder: check_graphs(folder, tensorrt="10.15" if flavour == "tensorrt" else None))
    result = {"out": out_dir, "precision": manifest.precision, "quantization": manifest.build["quantization"],
              **report.to_dict()}
    emit(result, written_lines(out_dir, calibrate_what(manifest.build["quantization"]), bundle_files(manifest),
                               result), as_json)


@click.command("fp16")
@click.option("--bundle", required=True, type=click.Path(file_okay=False), help="fp32 bundle (tgir-export onnx).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="FP16 bundle directory.")
@click.option("--keep-op", "keep_ops", multiple=True, metavar="OP",
              help="Op type computed in fp32; repeatable; replaces the default list (LayerNormalization, Softmax, "
                   "ReduceMean/Sum/L2/SumSquare/LogSumExp, Div, Pow, Sqrt, Exp, Log).")
@click.option("--keep-module", "keep_modules", multiple=True, metavar="PATTERN",
              help="Node names or torch module paths (fnmatch) computed in fp32; repeatable. Default: *router*.")
@click.option("--overwrite/--no-overwrite", default=False, show_default=True, help="Replace a non-empty --out.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def fp16_command(bundle, out_dir, keep_ops, keep_modules, overwrite, as_json) -> None:
    """Convert an fp32 bundle to FP16 (mixed precision: normalisation, softmax and reductions stay fp32;
    I/O stays float32), inside the experts' If branches too, then check it."""
    from tgir.calib.fp16 import Fp16Config, fp16_from_bundle
    from tgir.export.check import check_graphs

    from tgir.errors import TgirUserError

    cfg = Fp16Config(**({"keep_ops": keep_ops} if keep_ops else {}),
                     **({"keep_modules": keep_modules} if keep_modules else {}))
    if Path(out_dir).resolve() == Path(bundle).resolve():
        raise TgirUserError(f"{out_dir}: is the source bundle; write the fp16 bundle elsewhere")
    manifest, report = _write_checked(
        out_dir, overwrite,
        lambda folder: fp16_from_bundle(bundle, folder, cfg,
                                        progress=lambda g: click.echo(f"converting {g} ...", err=True)),
        lambda folder: check_graphs(folder, tensorrt="10.15"))
    result = {"out": out_dir, "precision": manifest.precision, "fp16": manifest.build["fp16"], **report.to_dict()}
    kept = f"fp32 kept for ops {', '.join(cfg.keep_ops)} and modules {', '.join(cfg.keep_modules)}"
    emit(result, written_lines(out_dir, f"fp16, {kept}", bundle_files(manifest), result), as_json)


@click.command("aoti")
@click.option("--bundle", required=True, type=click.Path(file_okay=False), help="Bundle directory (any precision).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the compiled graphs run.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Source checkpoint (default: the manifest's).")
@click.option("--force", is_flag=True, help="Compile even if the bundle's AOTInductor graphs are up to date.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def aoti_command(bundle, device, checkpoint, force, as_json) -> None:
    """Compile the bundle's three graphs with AOTInductor (from the fp32 PyTorch model) into
    <bundle>/aoti/<graph>.so for the C runtime, check them against PyTorch and record them in the
    manifest. Needs a C++ compiler (g++)."""
    from tgir.export.aoti import UP_TO_DATE, AotiConfig, aoti_from_bundle, files_summary

    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        click.echo(line, err=True)

    manifest = aoti_from_bundle(bundle, AotiConfig(device=device, force=force), checkpoint, report)
    result = {"bundle": bundle, "up_to_date": any(ln.startswith(UP_TO_DATE) for ln in lines),
              "device": manifest.aoti["device"], "torch": manifest.aoti["torch"],
              "files": files_summary(bundle, manifest)}
    emit(result, aoti_lines(result), as_json)


def _stage_reporter():
    """One line per stage with its elapsed time; counts inside a stage every ~10%."""
    import time

    state = {"stage": None, "t0": time.perf_counter(), "tick": -1}

    def report(stage: str, done: int, total: int) -> None:
        head = stage.split(" ")[0]
        if head != state["stage"]:
            state.update(stage=head, tick=-1)
            click.echo(f"[{time.perf_counter() - state['t0']:6.1f}s] {stage} ...", err=True)
        elif total and 10 * done // total != state["tick"]:
            state["tick"] = 10 * done // total
            click.echo(f"           {stage} {done}/{total}", err=True)

    return report


@click.command("build-engine")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Trained checkpoint [default: the shipped "
              "AMC, trained/amc_css2d.pt].")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "best"]), default="int8", show_default=True,
              help="int8: Q/DQ graphs calibrated on real samples; fp16: mixed-precision graphs; best: the same as "
                   "int8 (TensorRT 11 takes precision from the graph only, so there is no int8 + fp16 mix).")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto", show_default=True,
              help="auto: TensorRT when it imports and a GPU is present, else ONNX Runtime.")
@click.option("--calib-data", type=click.Path(file_okay=False),
              help="Dataset root for INT8 calibration [default: a generated CSS-2D training split].")
@click.option("--calib-dataset", type=click.Choice(sorted(DATASETS)), default="css2d", show_default=True,
              help="Format of --calib-data (its training split is used).")
@click.option("--calib-method", type=click.Choice(["entropy", "percentile", "max"]), default="percentile",
              show_default=True, help="Activation observer (the shipped setting is percentile 99.99).")
@click.option("--calib-samples", default=512, show_default=True, help="Calibration queries.")
@click.option("--calib-keep-sensitive", default=0, show_default=True, metavar="N",
              help="Leave in float the N layers a sensitivity sweep finds most harmful to quantize.")
@click.option("--out", "out_dir", default="bundle", show_default=True, type=click.Path(file_okay=False),
              help="Bundle directory; built beside it and renamed into place when every stage passed.")
@click.option("--router", type=click.Choice(["if", "dense"]), default="if", show_default=True,
              help="AMC router form: ONNX If per expert, or every expert computed with gates applied.")
@click.option("--tau", type=float, help="AMC gate threshold (default: the checkpoint's).")
@click.option("--max-batch", default=64, show_default=True, help="Largest batch of the dynamic batch axis.")
@click.option("--opt-batch", default=1, show_default=True, help="Batch TensorRT tunes its kernels for.")
@click.option("--max-text-len", default=32, show_default=True, help="Padded text length.")
@click.option("--threads", default=0, show_default=True, help="ONNX Runtime intra-op threads (0: one per core).")
@click.option("--parity/--no-parity", default=True, show_default=True, help="Check ONNX against PyTorch first.")
@click.option("--workspace-mib", type=int, help="TensorRT builder workspace limit.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache file (read and updated).")
@click.option("--version-compatible", is_flag=True, help="TensorRT: engines the lean runtime of later versions runs.")
@click.option("--exclude-lean-runtime", is_flag=True, help="TensorRT: with --version-compatible, do not embed "
              "the lean runtime (the app ships it).")
@click.option("--dla-core", type=int, help="Jetson: build for this DLA core (GPU fallback for other layers).")
@click.option("--legacy-calibrator", is_flag=True, help="TensorRT 8.5-10.x: implicit INT8 from a calibration "
              "cache instead of Q/DQ graphs (removed in TensorRT 11).")
@click.option("--calibration-cache", type=click.Path(), help="With --legacy-calibrator: a TensorRT calibration "
              "cache for every graph, or a folder of per-graph caches (an INT8 bundle from tgir-export calibrate). "
              "Default: calibrate here and use its caches.")
@click.option("--builder-optimization-level", type=click.IntRange(0, 5), help="TensorRT builder effort (default 3).")
@click.option("--static-batch", is_flag=True, help="TensorRT: one fixed batch (the max) instead of a range.")
@click.option("--gpu-fallback/--no-gpu-fallback", default=True, show_default=True,
              help="DLA: run layers DLA cannot on the GPU.")
@click.option("--device", default=0, show_default=True, help="CUDA device to build for.")
@click.option("--force", is_flag=True, help="Rebuild even if --out holds a bundle built from the same recipe.")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def build_engine_command(checkpoint, precision, backend, calib_data, calib_dataset, calib_method, calib_samples,
                         calib_keep_sensitive, out_dir, router, tau, max_batch, opt_batch, max_text_len, threads,
                         parity, workspace_mib, timing_cache, version_compatible, exclude_lean_runtime, dla_core,
                         legacy_calibrator, calibration_cache, builder_optimization_level, static_batch, gpu_fallback,
                         device, force, as_json) -> None:
    """Build a deployable bundle: export -> check -> calibrate -> engines (TensorRT) or optimised
    ONNX Runtime graphs. With no options: the shipped AMC, INT8, into ./bundle."""
    from tgir.export.build import BuildConfig, CalibSettings, build_bundle
    from tgir.export.onnx import OnnxConfig

    engine = {k: v for k, v in {"workspace_mib": workspace_mib, "timing_cache": timing_cache,
                                "version_compatible": version_compatible or None,
                                "exclude_lean_runtime": exclude_lean_runtime or None, "dla_core": dla_core,
                                "legacy_calibrator": legacy_calibrator or None,
                                "builder_optimization_level": builder_optimization_level,
                                "static_batch": static_batch or None, "gpu_fallback": None if gpu_fallback else False,
                                "device": device or None}.items() if v is not None}
    cfg = BuildConfig(checkpoint=checkpoint, out=out_dir, precision=precision, backend=backend,
                      onnx=OnnxConfig(tau=tau, router=router, max_batch=max_batch, opt_batch=opt_batch,
                                      text_length=max_text_len),
                      calib=CalibSettings(data=calib_data, dataset=calib_dataset, method=calib_method,
                                          samples=calib_samples, keep_sensitive=calib_keep_sensitive),
                      parity=parity, threads=threads, engine=engine, calibration_cache=calibration_cache)
    manifest, summary = build_bundle(cfg, _stage_reporter(), force=force)
    summary = {**summary, "precision": manifest.precision, "backend": manifest.backend,
               "family": manifest.model["family"], "files": bundle_files(manifest)}
    if as_json:
        emit(summary, [], as_json)
        return
    state = "up to date (same checkpoint and settings; --force rebuilds)" if summary["up_to_date"] else "built"
    click.echo(f"{state}: {out_dir}/  ({manifest.model['family']}, {manifest.precision}, {manifest.backend})")
    for name in summary["files"]:
        click.echo(f"  {name}")
    click.echo(f"next: tgir index --bundle {out_dir} --images CATALOGUE_DIR --out index/\n"
               f"      tgir search --bundle {out_dir} --index index/ --image REF.png --text \"make it red\"")

"""The ``tgir-export`` subcommands: parse flags into a config, call one library function, print."""

from __future__ import annotations

import json
import sys

import click

from tgir.data.registry import DATASETS

_TENSORRT_HELP = "TensorRT version whose ONNX parser the lint targets ('none' skips the lint)."


def _tensorrt(value: str) -> str | None:
    return None if value.lower() == "none" else value


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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def onnx_command(checkpoint, out_dir, tau, router, opset, max_batch, max_text_len, data, dataset, parity, tensorrt,
                 overwrite, as_json) -> None:
    """Export a checkpoint to three ONNX graphs plus manifest.json, then check them."""
    from tgir.export.check import check_bundle, require_ok
    from tgir.export.onnx import OnnxConfig, onnx_from_checkpoint

    cfg = OnnxConfig(tau=tau, router=router, opset=opset, max_batch=max_batch, text_length=max_text_len)
    manifest = onnx_from_checkpoint(checkpoint, out_dir, cfg, overwrite,
                                    progress=lambda g: click.echo(f"exporting {g} ...", err=True))
    report = check_bundle(out_dir, checkpoint, data, dataset, _tensorrt(tensorrt), parity, _progress("parity"))
    require_ok(report, out_dir)
    result = {"out": out_dir, "family": manifest.model["family"], "router": manifest.router, **report.to_dict()}
    click.echo(json.dumps(result, indent=None if as_json else 2))


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
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_command(bundle, checkpoint, data, dataset, parity, tensorrt, as_json) -> None:
    """Check a bundle: ONNX checker (full), strict shape inference, I/O against the manifest, graph
    hygiene, TensorRT operator lint, and ONNX Runtime vs PyTorch parity with identical top-10."""
    from tgir.export.check import check_bundle

    report = check_bundle(bundle, checkpoint, data, dataset, _tensorrt(tensorrt), parity, _progress("parity"))
    click.echo(json.dumps(report.to_dict(), indent=None if as_json else 2))
    if not report.ok:
        sys.exit(1)


@click.command("calibrate")
@click.option("--bundle", required=True, type=click.Path(file_okay=False), help="fp32 bundle (tgir-export onnx).")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Dataset root of the samples.")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="css2d", show_default=True)
@click.option("--split", default="train", show_default=True, help="Split the samples come from (never test).")
@click.option("--method", type=click.Choice(["entropy", "percentile", "max"]), default="entropy", show_default=True,
              help="Activation observer.")
@click.option("--percentile", default=99.99, show_default=True, help="Kept share of |values| (percentile).")
@click.option("--samples", default=512, show_default=True, help="Calibration queries (reference + target + text).")
@click.option("--seed", default=0, show_default=True, help="Seed of the sample draw.")
@click.option("--flavour", type=click.Choice(["tensorrt", "cpu"]), default="tensorrt", show_default=True,
              help="tensorrt: int8 symmetric activations; cpu: uint8 activations, 7-bit weights (ONNX Runtime CPU).")
@click.option("--keep", multiple=True, metavar="PATTERN",
              help="Module names (fnmatch) left in floating point; repeatable. Default: *router*.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Source checkpoint (default: the manifest's).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="INT8 bundle directory.")
@click.option("--overwrite/--no-overwrite", default=False, show_default=True, help="Replace a non-empty --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def calibrate_command(bundle, data, dataset, split, method, percentile, samples, seed, flavour, keep, checkpoint,
                      out_dir, overwrite, as_json) -> None:
    """Calibrate an fp32 bundle's model on real samples and write an INT8 Q/DQ bundle (Q/DQ inside
    the experts' If branches too), then check it."""
    from tgir.calib.data import CalibData
    from tgir.calib.qdq import QuantConfig
    from tgir.export.check import check_graphs, require_ok
    from tgir.export.quantize import quantized_from_bundle

    cdata = CalibData(dataset, data, split=split, samples=samples, seed=seed)
    qcfg = QuantConfig(flavour=flavour, method=method, percentile=percentile, **({"keep": keep} if keep else {}))

    def progress(stage: str, done: int, total: int) -> None:
        if not total or done == total or done % 10 == 1:
            click.echo(f"{stage} {done}/{total}" if total else f"{stage} ...", err=True)

    manifest, _ = quantized_from_bundle(bundle, out_dir, cdata, qcfg, checkpoint, overwrite, progress)
    report = check_graphs(out_dir, tensorrt="10.15" if flavour == "tensorrt" else None)
    require_ok(report, out_dir)
    result = {"out": out_dir, "precision": manifest.precision, "quantization": manifest.build["quantization"],
              **report.to_dict()}
    click.echo(json.dumps(result, indent=None if as_json else 2))

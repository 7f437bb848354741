"""The ``tgir-export`` subcommands: parse flags into a config, call one library function, print."""

from __future__ import annotations

import json
import sys

import click


@click.command("onnx")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="Trained checkpoint.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Bundle directory.")
@click.option("--tau", type=float, help="AMC gate threshold (default: the checkpoint's; 0 = dense graph).")
@click.option("--router", type=click.Choice(["if", "dense"]), default="if", show_default=True,
              help="AMC router form: ONNX If per expert, or every expert computed with gates applied.")
@click.option("--opset", default=18, show_default=True, help="ONNX opset (18..23).")
@click.option("--max-batch", default=64, show_default=True, help="Largest batch of the dynamic batch axis.")
@click.option("--max-text-len", default=32, show_default=True, help="Padded text length of the text graph.")
@click.option("--overwrite/--no-overwrite", default=False, show_default=True, help="Replace a non-empty --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def onnx_command(checkpoint, out_dir, tau, router, opset, max_batch, max_text_len, overwrite, as_json) -> None:
    """Export a checkpoint to three ONNX graphs plus manifest.json, then check them."""
    from tgir.export.check import check_graphs, require_ok
    from tgir.export.onnx import OnnxConfig, onnx_from_checkpoint

    cfg = OnnxConfig(tau=tau, router=router, opset=opset, max_batch=max_batch, text_length=max_text_len)
    manifest = onnx_from_checkpoint(checkpoint, out_dir, cfg, overwrite,
                                    progress=lambda g: click.echo(f"exporting {g} ...", err=True))
    report = check_graphs(out_dir)
    require_ok(report, out_dir)
    result = {"out": out_dir, "family": manifest.model["family"], "router": manifest.router, "graphs": report.graphs}
    click.echo(json.dumps(result, indent=None if as_json else 2))


@click.command("check")
@click.argument("bundle", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check_command(bundle, as_json) -> None:
    """Check a bundle: ONNX checker (full), strict shape inference, I/O against the manifest."""
    from tgir.export.check import check_graphs

    report = check_graphs(bundle)
    click.echo(json.dumps({"ok": report.ok, "graphs": report.graphs, "problems": report.problems},
                          indent=None if as_json else 2))
    if not report.ok:
        sys.exit(1)

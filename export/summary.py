"""What the ``tgir-export`` commands print: a short human summary by default, JSON with ``--json``.

The summaries are for people (what was written where, the key numbers); scripts read ``--json``.
"""

from __future__ import annotations

import json

import click


def emit(result: dict, lines: list[str], as_json: bool) -> None:
    """Print ``result`` as one line of JSON (``as_json``) or ``lines`` for a person."""
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo("\n".join(lines))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def report_lines(report: dict) -> list[str]:
    """One line per graph (nodes, parameters, file size), the parity result and every problem.

    Args:
        report: ``CheckReport.to_dict()``.
    """
    lines = [f"  {name}: {g['nodes']} nodes ({g['nodes_with_subgraphs']} with If bodies, {g['if_nodes']} If), "
             f"{g['params'] / 1e6:.2f}M params, {_size(g['bytes'])}" for name, g in report["graphs"].items()]
    lines += [f"  {name}: checked with onnxruntime" if ok is True else f"  {name}: {ok}"
              for name, ok in report.get("saved", {}).items()]
    parity = report.get("parity")
    if parity and "skipped" in parity:
        lines.append(f"  parity: skipped ({parity['skipped']})")
    elif parity:
        top = next(k for k in parity if k.startswith("top") and k.endswith("_identical"))
        lines.append(f"  parity with PyTorch: {parity['queries']} queries, {parity['gallery']} gallery images; "
                     f"max abs {max(parity['gallery_max_abs'], parity['query_max_abs']):.1e}, min cosine "
                     f"{min(parity['gallery_min_cosine'], parity['query_min_cosine']):.6f}, "
                     f"{top.removesuffix('_identical')} identical for {parity[top]}/{parity['queries']}")
    lines += [f"  problem: {p}" for p in report["problems"]]
    return lines


def written_lines(out: str, what: str, files: list[str], report: dict) -> list[str]:
    """``wrote OUT/ (what): files`` then the check's lines."""
    state = "check passed" if report["ok"] else "check FAILED"
    return [f"wrote {out}/ ({what}): {', '.join(files)}", f"{state}:", *report_lines(report)]


def bundle_files(manifest) -> list[str]:
    """Every file of a bundle: the checksummed ones and manifest.json itself."""
    return sorted([*manifest.files, "manifest.json"])


def calibrate_what(quantization: dict) -> str:
    """``int8, tensorrt flavour, percentile 99.99, 512 samples from css2d train``."""
    q = quantization
    method = f"percentile {q['percentile']}" if q["method"] == "percentile" else q["method"]
    return (f"int8, {q['flavour']} flavour, {method}, {q['samples']} samples from {q['dataset']} {q['split']}, "
            f"{q['tensors']} quantized tensors")


def aoti_lines(result: dict) -> list[str]:
    """``up to date|compiled: BUNDLE/aoti (device, torch)`` then one line per file with its size."""
    state = "up to date" if result["up_to_date"] else "compiled"
    return [f"{state}: {result['bundle']}/aoti ({result['device']}, torch {result['torch']})",
            *(f"  {name}  {_size(size)}" for name, size in sorted(result["files"].items()))]

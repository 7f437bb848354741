"""``tgir-export``: the exporter's command line (ONNX graphs, engines, AOTInductor objects, bundles)."""

from __future__ import annotations

import click

from tgir.cli.common import LazyGroup, run_main

COMMANDS: dict[str, str] = {
    "onnx": "tgir.export.commands:onnx_command",
    "check": "tgir.export.commands:check_command",
    "calibrate": "tgir.export.commands:calibrate_command",
    "fp16": "tgir.export.commands:fp16_command",
    "build-engine": "tgir.export.commands:build_engine_command",
    "aoti": "tgir.export.commands:aoti_command",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
@click.version_option(package_name="tgir")
def cli() -> None:
    """tgir-export: turn trained checkpoints into ONNX graphs, engines and deployable bundles."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tgir-export`` console script."""
    return run_main(cli, argv, prog_name="tgir-export")

"""The ``tgir`` command line: data, training, evaluation and benchmarks.

Subcommands are loaded lazily so that ``tgir --help`` stays fast and the core never imports the
upper floors (export, runtime, benchmarks) at import time.
"""

from __future__ import annotations

import click

from tgir.cli.common import LazyGroup, run_main

# name -> "module:attribute"; each module imports only what that command needs.
COMMANDS = {
    "data": "tgir.cli.data:data",
    "train": "tgir.cli.train:train",
    "eval": "tgir.cli.train:evaluate",
    "ship": "tgir.cli.train:ship",
    "index": "tgir.cli.search:index",
    "search": "tgir.cli.search:search",
    "bench": "tgir.cli.bench:bench",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             epilog="A user mistake prints one line and exits with code 1. Add --debug anywhere on the command "
                    "line, or set TGIR_DEBUG=1, to see the traceback.")
@click.version_option(package_name="tgir")
def cli() -> None:
    """tgir: text-guided image retrieval toolkit."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tgir`` console script.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The process exit code (0 success, 1 user error, 2 usage error).
    """
    return run_main(cli, argv, prog_name="tgir")

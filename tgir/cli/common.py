"""Shared plumbing for tgir's click command lines: lazy subcommands and error reporting."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

import click

from tgir.errors import TgirUserError

DEBUG_ENV = "TGIR_DEBUG"


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when invoked or listed."""

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module_name, attr = self._lazy[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)


def run_main(group: click.Group, argv: Sequence[str] | None, prog_name: str) -> int:
    """Run a click group and turn tgir's user errors into one line and exit code 1.

    Args:
        group: The root click group.
        argv: Arguments without the program name (``None``: ``sys.argv[1:]``).
        prog_name: Name shown in usage and error lines.

    Returns:
        The exit code. A ``TgirUserError`` prints ``<prog>: error: <message>`` to stderr and
        returns 1; its traceback is shown only with ``--debug`` or ``TGIR_DEBUG=1``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        result = group.main(args=args, prog_name=prog_name, standalone_mode=False)
    except TgirUserError as err:
        if debug:
            raise
        click.echo(f"{prog_name}: error: {err}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    return result if isinstance(result, int) else 0


def progress_callback(label: str):
    """Return ``(callback, close)`` driving a click progress bar on stderr.

    Library code reports progress through a plain ``callback(done, total)`` and never sees click;
    the command line passes this one in.
    """
    state: dict[str, object] = {}

    def callback(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            bar.__enter__()
            state["bar"] = bar
            state["done"] = 0
        bar.update(done - state["done"])  # type: ignore[union-attr]
        state["done"] = done

    def close() -> None:
        bar = state.pop("bar", None)
        if bar is not None:
            bar.__exit__(None, None, None)  # type: ignore[union-attr]

    return callback, close


@contextlib.contextmanager
def progress_bar(label: str):
    """``with progress_bar("embedding") as report:`` a ``report(done, total)`` callback whose bar is
    closed when the block ends, also on error."""
    callback, close = progress_callback(label)
    try:
        yield callback
    finally:
        close()


def open_bundle(bundle: str, backend: str, threads: int):
    """A runner for a command line's ``--bundle/--backend/--threads`` (threads 0: the backend's default,
    so a TensorRT bundle opened with ``auto`` is not handed an ONNX Runtime option)."""
    from tgir.runtime import open as open_runner

    return open_runner(bundle, backend, **({"threads": threads} if threads else {}))

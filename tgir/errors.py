"""The two kinds of failure tgir reports.

``TgirUserError``: the input is wrong (a path, a flag, a file's content). The message says what was
expected and, where there is a fixed set, lists the valid choices. The CLI prints it on one line and
exits with code 1, without a traceback.

``TgirInternalError``: tgir itself is wrong. The CLI shows the traceback so it can be reported.
"""

from __future__ import annotations

from collections.abc import Iterable


class TgirError(Exception):
    """Base class of every error tgir raises on purpose."""


class TgirUserError(TgirError, ValueError):
    """A user mistake: bad path, bad option, bad file content."""


class TgirInternalError(TgirError, RuntimeError):
    """A bug or broken invariant inside tgir."""


def unknown_choice(kind: str, value: object, choices: Iterable[object]) -> TgirUserError:
    """Build the standard error for a name that is not one of a fixed set.

    Args:
        kind: What the value names, e.g. ``"dataset"`` or ``"split"``.
        value: The value the user gave.
        choices: The valid values.

    Returns:
        A ``TgirUserError`` whose message lists the valid choices.
    """
    listed = ", ".join(repr(c) for c in choices)
    return TgirUserError(f"unknown {kind} {value!r}; valid choices: {listed}")

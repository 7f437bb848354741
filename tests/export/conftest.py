"""Fixtures shared by the export tests."""

from __future__ import annotations

import pytest

from tgir.manifest import contract_to_json, io_contract


@pytest.fixture
def contract_graphs(tiny):
    """``graphs(family="amc", max_batch=8, text_length=6)``: a manifest's ``graphs`` section for a tiny
    model of ``family`` (each graph's file ``<name>.onnx``), as engines and profiles read it."""
    def graphs(family: str = "amc", max_batch: int = 8, text_length: int = 6) -> dict:
        out = contract_to_json(io_contract(tiny(family), max_batch=max_batch, text_length=text_length, opt_batch=2))
        for name, spec in out.items():
            spec["file"] = f"{name}.onnx"
        return out

    return graphs


@pytest.fixture
def refuses_each(capsys):
    """``check(main, args, cases)``: for each ``(extra flags, message)`` the command exits 1 with that
    message on one stderr line and no traceback."""

    def check(main, args: list[str], cases: list[tuple[list[str], str]]) -> None:
        for extra, error in cases:
            assert main([*args, *extra]) == 1, extra
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and error in err and "Traceback" not in err, (extra, err)

    return check

"""Packaging contract: cheap imports, the folder mapping, the README's commands and CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tgir

REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_import_tgir_is_light():
    out = _python("import sys, tgir, tgir.vocab, tgir.evaluate, tgir.data.registry, tgir.data.images, "
                  "tgir.cli, tgir.runtime, tgir.export, tgir.calib, tgir.benchmarks; "
                  "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt') "
                  "if m in sys.modules))")
    assert out.strip() == "[]"


def test_stage_folders_map_into_the_package():
    import tgir.benchmarks
    import tgir.calib
    import tgir.export
    import tgir.runtime

    for module, folder in ((tgir.export, "export"), (tgir.calib, "calib"), (tgir.runtime, "runtime"),
                           (tgir.benchmarks, "benchmarks")):
        assert Path(module.__file__).resolve() == REPO / folder / "__init__.py"
    assert Path(tgir.__file__).resolve() == REPO / "tgir" / "__init__.py"
    for folder in ("export", "runtime", "calib", "benchmarks", "trained", "tests"):
        assert (REPO / folder).is_dir()


def _readme_command(marker: str) -> str:
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    fence = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    return lines[fence + 1]


def test_ci_runs_exactly_the_readme_test_command():
    assert _readme_command("test-command") == 'pip install -e ".[dev]" && python -m pytest'
    out = subprocess.run(["bash", str(REPO / ".ci" / "run"), "--print"], check=True, capture_output=True,
                         text=True).stdout
    assert out == 'pip install -e ".[dev]" && python -m pytest\n'


def test_readme_main_command_runs(tmp_path):
    cmd = _readme_command("Main job")
    assert cmd.startswith("pip install -e . && tgir ")
    args = [*cmd.split("&& tgir ", 1)[1].split(), "--scale", "0.005"]
    args = [str(tmp_path / "d") if a == "data/css2d" else a for a in args]
    done = subprocess.run([sys.executable, "-m", "tgir", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "test:" in done.stdout and (tmp_path / "d" / "css2d.json").is_file()


def test_version():
    assert tgir.__version__ == "0.1.0"

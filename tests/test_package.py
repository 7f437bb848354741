"""Packaging contract: cheap imports, the folder mapping, the README's commands and CI."""

from __future__ import annotations

import shlex
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
    want = 'bash runtime/scripts/install-deps.sh && pip install -e ".[dev]" && python -m pytest'
    assert _readme_command("test-command") == want
    out = subprocess.run(["bash", str(REPO / ".ci" / "run"), "--print"], check=True, capture_output=True,
                         text=True).stdout
    assert out == want + "\n"


def _readme_block(marker: str) -> list[str]:
    """The commands of the code block after ``marker``: continuations joined, comments dropped."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if marker in line)
    fence = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    end = next(i for i in range(fence + 1, len(lines)) if lines[i].startswith("```"))
    text = "\n".join(lines[fence + 1:end]).replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in text.splitlines() if line.strip()]


_ENTRY = {"tgir": [sys.executable, "-m", "tgir"],
          "tgir-export": [sys.executable, "-c", "import sys; from tgir.export.cli import main; sys.exit(main())"]}


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([*_ENTRY[command[0]], *command[1:]], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{command}: {done.stderr[-2000:]}"
    return done


def test_readme_main_command_then_search_example(tmp_path):
    """The main job (made small: 32 calibration samples, no parity; tests/export cover both at size),
    then the README's search example verbatim in the same folder."""
    assert _readme_command("Main job") == "pip install -e . && tgir-export build-engine"
    built = _run(["tgir-export", "build-engine", "--calib-samples", "32", "--no-parity"], tmp_path)
    assert "built: bundle/" in built.stdout and (tmp_path / "bundle" / "manifest.json").is_file()
    example = _readme_block("Then search with it")
    assert [c.split()[:2] for c in example] == [["tgir", "data"], ["tgir", "index"], ["tgir", "search"]]
    for command in example:
        done = _run(shlex.split(command), tmp_path)
    ranked = [line.split() for line in done.stdout.splitlines()]
    assert [int(r[0]) for r in ranked] == [1, 2, 3, 4, 5] and (tmp_path / "grid.png").is_file()


def test_version():
    assert tgir.__version__ == "0.1.0"

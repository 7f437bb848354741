"""One ``tgir bench`` target in a child process of its own: its peak RSS is its own, and a backend that
crashes the interpreter, hangs past its timeout or the run's deadline is reported (with the stage rows
its progress lines carried, status ``partial``) while the other targets still run.

The parent (``run_isolated``) starts ``python -m tgir.benchmarks.bench_process --one JOB --out
RESULT``; the child measures with ``bench_measure.run_target`` and prints each progress event on a
line starting with ``bench.PROGRESS_PREFIX``.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from tgir.benchmarks.bench import PROGRESS_PREFIX, BenchConfig, Progress, Target, failed_row


def run_isolated(target: Target, cfg: BenchConfig, emit: Progress, left: float | None = None) -> dict:
    """Run one target in ``python -m tgir.benchmarks.bench_process --one``; relay its progress lines.

    ``left``: seconds to the run's deadline. A child stopped by it or by ``cfg.timeout_s``, or one that
    crashes, keeps the stage rows it reported (status ``partial``)."""
    limits = [x for x in (cfg.timeout_s or None, left) if x is not None]
    limit = min(limits) if limits else None
    with tempfile.TemporaryDirectory(prefix="tgir-bench-") as tmp:
        job, out = Path(tmp, "job.json"), Path(tmp, "result.json")
        job.write_text(json.dumps({"target": target.to_dict(), "config": cfg.to_dict()}))
        cmd = [sys.executable, "-m", "tgir.benchmarks.bench_process", "--one", str(job), "--out", str(out)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace")
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            proc.kill()

        timer = threading.Timer(limit, kill) if limit else None
        if timer:
            timer.start()
        tail: collections.deque[str] = collections.deque(maxlen=20)
        seen: list[dict] = []  # the child's progress events: what it measured before any failure
        try:
            for line in proc.stdout:  # type: ignore[union-attr]
                if line.startswith(PROGRESS_PREFIX):
                    seen.append(json.loads(line[len(PROGRESS_PREFIX):]))
                    emit(seen[-1])
                elif line.strip():
                    tail.append(line.rstrip())
            code = proc.wait()
        finally:
            if timer:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
        if out.is_file():
            return json.loads(out.read_text())
    if killed.is_set():
        by_deadline = left is not None and limit == left
        why = (f"stopped at the run's --deadline of {cfg.deadline_s:g} s" if by_deadline
               else f"timed out after {limit:g} s")
    else:
        why = f"exited with code {code}"
        if code < 0:
            try:
                why = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                why = f"killed by signal {-code}"
        why = f"{why}: {tail[-1]}" if tail else why
    return _cut_short(target, why, seen)


def _cut_short(target: Target, why: str, events: list[dict]) -> dict:
    """The row of a child that ended without a result: ``failed``, or ``partial`` with the stage rows
    its progress events carried."""
    stages = [e for e in events if e.get("event") == "stage" and "result" in e]
    if not stages:
        return failed_row(target, "failed", why)
    opened = next((e for e in events if e.get("event") == "open"), {})
    row = failed_row(target, "partial", f"{why} ({len(stages)} of {stages[-1]['total']} stage rows measured)")
    row.update(precision=opened.get("precision"), device=opened.get("device"), open_s=opened.get("open_s"),
               accuracy=None, results=[e["result"] for e in stages])
    return row


def _child_main(argv: Sequence[str]) -> int:
    """``python -m tgir.benchmarks.bench_process --one JOB.json --out RESULT.json``: measure one target."""
    args = dict(zip(argv[::2], argv[1::2], strict=False))
    if "--one" not in args or "--out" not in args:
        print("usage: python -m tgir.benchmarks.bench_process --one JOB.json --out RESULT.json", file=sys.stderr)
        return 2
    from tgir.benchmarks.bench_measure import run_target

    job = json.loads(Path(args["--one"]).read_text())

    def emit(event: dict) -> None:
        print(PROGRESS_PREFIX + json.dumps(event), flush=True)

    row = run_target(Target.from_dict(job["target"]), BenchConfig.from_dict(job["config"]), emit)
    tmp = Path(args["--out"] + ".tmp")
    tmp.write_text(json.dumps(row))
    tmp.replace(args["--out"])
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))

"""``tgir bench`` results as a Markdown section for ``benchmarks/RESULTS.md`` and as a PNG plot.

The plot needs matplotlib, which tgir does not install (``require_matplotlib`` says how to get it).
"""

from __future__ import annotations

from pathlib import Path

from tgir.benchmarks.bench import MEASURED, STAGES

from tgir.errors import TgirUserError

STAGE_TITLES = {"image_encode": "image encode", "query_compose": "query compose", "search": "search",
                "end_to_end": "end-to-end"}
SPLIT_TITLES = {"h2d_latency": "H2D Latency", "gpu_compute_time": "GPU Compute Time", "d2h_latency": "D2H Latency"}
INSTALL_MATPLOTLIB = "--plot needs matplotlib, which tgir does not install: pip install matplotlib"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 \
        else f"{value:,.0f}"


def _num(value: float | None, places: int = 0) -> str:
    return "-" if value is None else f"{value:,.{places}f}"


def _results(row: dict) -> dict[tuple[str, int], dict]:
    return {(r["stage"], r["batch"]): r for r in row.get("results", [])}


def header(result: dict) -> list[str]:
    """Command, machine, versions, inputs and method: the facts every RESULTS.md figure carries."""
    m, cfg = result["machine"], result["config"]
    gpus = "; ".join(m.get("gpus") or []) or "none"
    cores = f"{m.get('logical_cpus')} logical CPUs" + (f", {m['physical_cores']} cores" if m.get("physical_cores")
                                                      else "")
    if m.get("cpu_features"):  # older JSON files do not have them
        cores += "; " + " ".join(m["cpu_features"])
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    if m.get("thread_env"):  # older JSON files do not have it
        versions += "; thread settings: " + " ".join(f"{k}={v}" for k, v in m["thread_env"].items())
    search = result["inputs"]["search"]
    return [f"`{result['command']}`", "",
            f"- date: {result['date']}; machine: {m['cpu']} ({cores}, {m.get('memory_gib')} GiB), {m['os']}; "
            f"GPU: {gpus}",
            f"- versions: Python {m['python']}, {versions}",
            f"- inputs: {result['inputs']['source']}, decoded before timing; timed: preprocessing + tokenizer + graphs"
            f", plus for search and end-to-end the top-{cfg['k']} search ({search}) over {cfg['gallery']:,} "
            "synthetic embeddings",
            f"- latency in ms over {cfg['iters']} timed runs after {cfg['warmup']} warm-up runs (numpy 'linear' "
            f"percentiles); queries/s = batch / mean end-to-end latency; "
            + (f"x {result['baseline']} = its end-to-end p50 / this p50; " if result.get("baseline") else "")
            + f"peak RSS = {result['inputs']['peak_rss']}"]


def markdown(result: dict) -> str:
    """The run as Markdown: header facts, the side-by-side table, what was not measured and why, the
    GPU split (when any), and the search scaling table (when measured)."""
    rows = result["targets"]
    base = result.get("baseline")
    gpu = any(r.get("gpu_memory") for r in rows)
    cols = ["target", "backend", "precision", "device", "batch", *(f"{STAGE_TITLES[s]} p50" for s in STAGES),
            "end-to-end p90", "end-to-end p99", "queries/s", f"x {base}" if base else "x baseline", "peak RSS MiB",
            *(["GPU MiB"] if gpu else []), "R@1", "R@10"]
    lines = [f"### tgir bench, {result['date'][:10]}", "", *header(result), "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    for row in rows:
        if row["status"] not in MEASURED:
            continue
        res, acc = _results(row), row.get("accuracy") or {}
        name = f"`{row['label']}`" + (" (partial)" if row["status"] == "partial" else "")
        for batch in result["config"]["batches"]:
            if not any(b == batch for _, b in res):
                continue  # a partial row that stopped before this batch
            e2e = res.get(("end_to_end", batch), {})
            speed = e2e.get("speedup_vs_baseline")
            cells = [name, row["backend"], row.get("precision") or "-", row.get("device") or "-",
                     str(batch), *(_ms(res.get((s, batch), {}).get("p50_ms")) for s in STAGES),
                     _ms(e2e.get("p90_ms")), _ms(e2e.get("p99_ms")), _num(e2e.get("throughput_per_s"), 1),
                     "-" if speed is None else f"{speed:.2f}", _num(row.get("peak_rss_mib")),
                     *([_num((row.get("gpu_memory") or {}).get("mib"))] if gpu else []),
                     "error" if "error" in acc else _num(acc.get("R@1"), 2), _num(acc.get("R@10"), 2)]
            lines.append("| " + " | ".join(cells) + " |")
    if not result.get("complete", True):
        lines += ["", f"**Run in progress or cut short: {len(rows)} of {len(result['config']['targets'])} "
                  "targets done.**"]
    missing = [r for r in rows if r["status"] != "ok"]
    if missing:
        lines += ["", "Not measured, or cut short:"]
        lines += [f"- `{r['label']}` ({r['backend']}, {r['bundle']}): {r['status']}: {r['reason']}" for r in missing]
    errors = [r for r in rows if "error" in (r.get("accuracy") or {})]
    lines += [f"- `{r['label']}`: recall not measured: {r['accuracy']['error']}" for r in errors]
    lines += gpu_split_table(rows)
    lines += scaling_table(result.get("search_scaling") or [])
    if result.get("search_scaling_skipped"):
        why = (f"failed: {result['search_scaling_error']}" if result.get("search_scaling_error")
               else result.get("search_scaling_skip_reason") or "the run's --deadline was reached")
        lines += ["", f"Search scaling not measured ({why}): galleries of "
                  + ", ".join(f"{n:,}" for n in result["search_scaling_skipped"])]
    return "\n".join(lines) + "\n"


def gpu_split_table(rows: list[dict]) -> list[str]:
    """trtexec's split of the PyTorch CUDA targets (p50 ms), beside the host wall time."""
    out = []
    for row in rows:
        for res in row.get("results", []):
            split = res.get("gpu_split")
            if split:
                out.append(f"| `{row['label']}` | {res['batch']} | {STAGE_TITLES[res['stage']]} | "
                           + " | ".join(_ms(split[k]["p50_ms"]) for k in SPLIT_TITLES) + f" | {_ms(res['p50_ms'])} |")
    if not out:
        return []
    head = ["target", "batch", "stage", *(f"{t} p50" for t in SPLIT_TITLES.values()), "host wall p50"]
    return ["", "GPU split (CUDA events around each graph call's copy in, model, copy out; summed per run):", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *out]


def scaling_table(scaling: list[dict]) -> list[str]:
    """Exact numpy vs FAISS flat search per gallery size and batch."""
    if not scaling:
        return []
    out = ["", f"Search scaling: exact numpy top-{scaling[0]['k']} vs FAISS IndexFlatIP vs tgir int8 (int8 scores + "
           f"certified float32 re-rank), synthetic unit vectors of dimension {scaling[0]['dim']}, ms:", "",
           "| gallery | batch | numpy p50 | numpy p99 | FAISS p50 | FAISS p99 | numpy / FAISS (p50) | FAISS build s "
           "| same top-k | int8 p50 | int8 p99 | numpy / int8 (p50) | int8 build s | int8 same top-k "
           "| re-scored per query |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in scaling:
        f, i = s.get("faiss") or {}, s.get("int8") or {}
        ratio = s["exact"]["p50_ms"] / f["p50_ms"] if f.get("p50_ms") else None
        ratio8 = s["exact"]["p50_ms"] / i["p50_ms"] if i.get("p50_ms") else None
        out.append(f"| {s['gallery']:,} | {s['batch']} | {_ms(s['exact']['p50_ms'])} | {_ms(s['exact']['p99_ms'])} | "
                   f"{_ms(f.get('p50_ms'))} | {_ms(f.get('p99_ms'))} | {_num(ratio, 1)} | "
                   f"{_num(s.get('faiss_build_s'), 2)} | {_share(s.get('same_topk'))} | {_ms(i.get('p50_ms'))} | "
                   f"{_ms(i.get('p99_ms'))} | {_num(ratio8, 1)} | {_num(s.get('int8_build_s'), 2)} | "
                   f"{_share(s.get('int8_same_topk'))} | {_num(s.get('int8_candidates'), 1)} |")
    reason = next((s["faiss_reason"] for s in scaling if s.get("faiss_reason")), None)
    return out + ([f"FAISS not measured: {reason}"] if reason else [])


def _share(value: float | None) -> str:
    return "-" if value is None else format(value, ".0%")


def require_matplotlib() -> None:
    """Raise a one-line ``TgirUserError`` with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise TgirUserError(INSTALL_MATPLOTLIB) from None


def plot(result: dict, path: str | Path) -> Path:
    """Two panels: end-to-end p50 latency against batch per target, and R@1 against end-to-end p50 at the
    smallest batch (one point per target with recall). Writes a PNG."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 20, 30, 40 rather than 2x10^1 on log axes

    rows = [r for r in result["targets"] if r["status"] in MEASURED]
    batches = result["config"]["batches"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for row in rows:
        res = _results(row)
        xs = [b for b in batches if ("end_to_end", b) in res]
        left.plot(xs, [res[("end_to_end", b)]["p50_ms"] for b in xs], marker="o",
                  label=f"{row['label']} ({row.get('precision')}, {row.get('device')})")
    left.set(xscale="log", yscale="log", xlabel="batch (queries per call)", ylabel="end-to-end p50 latency (ms)",
             title="Latency vs batch")
    left.set_xticks(batches, [str(b) for b in batches])
    left.xaxis.set_minor_formatter(NullFormatter())
    left.grid(True, which="both", alpha=0.3)
    if rows:
        left.legend(fontsize=8)
    scored = [r for r in rows if "R@1" in (r.get("accuracy") or {})]
    first = min(batches)
    for row in scored:
        x = _results(row).get(("end_to_end", first), {}).get("p50_ms")
        if x is not None:
            right.scatter([x], [row["accuracy"]["R@1"]], s=40)
            right.annotate(f"{row['label']} ({row.get('precision')})", (x, row["accuracy"]["R@1"]), fontsize=8,
                           xytext=(4, 4), textcoords="offset points")
    right.set(xscale="log", xlabel=f"end-to-end p50 latency at batch {first} (ms)", ylabel="R@1 (%)",
              title="Recall vs latency per backend / precision")
    right.grid(True, alpha=0.3)
    if not scored:
        right.text(0.5, 0.5, "no recall measured (give --data)", ha="center", va="center", transform=right.transAxes)
    for axis in (left.yaxis, right.xaxis):  # after set(xscale=...), which resets formatters
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
    fig.suptitle(f"tgir bench {result['date'][:10]}: {result['machine']['cpu']}"
                 + (f", {result['machine']['gpus'][0]}" if result["machine"].get("gpus") else ""), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

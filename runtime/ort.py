"""ONNX Runtime runner: the embedded default (CPU everywhere, CUDA EP where onnxruntime-gpu is installed).

Sessions are tuned once (graph optimisation level, intra-op threads, no per-run logging) and the
graphs' real inputs and outputs are checked against the manifest's contract at open, so a bundle
whose manifest does not describe its graphs fails here with a message instead of mid-run.

``save_optimized`` writes ONNX Runtime's optimised graphs into the bundle at build time; a runner
uses them only under the same onnxruntime version and provider (they may hold ORT-only fused ops).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tgir.runtime.base import Runner
from tgir.runtime.inputs import MAX_THREADS, integer

from tgir.errors import TgirUserError, unknown_choice
from tgir.manifest import Manifest

LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
PROVIDERS = ("auto", "cpu", "cuda")
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(bool)": "bool"}
# Saved optimised graphs stop at "extended": "all" adds layout transforms (NCHWc) tied to the CPU's
# instruction set, which ONNX Runtime re-applies at load anyway.
SAVED_LEVEL = "extended"


@dataclass(frozen=True)
class OrtOptions:
    """Session settings.

    Attributes:
        provider: ``"auto"`` (CUDA when onnxruntime-gpu sees a GPU, else CPU), ``"cpu"`` or ``"cuda"``.
        threads: Intra-op threads, 0..``MAX_THREADS`` (0: ONNX Runtime's default, one per physical core).
        level: Graph optimisation level: disable, basic, extended or all.
        use_saved: Load the bundle's saved optimised graphs when they match this onnxruntime.
        spin: Let idle intra-op workers spin-wait for work (ONNX Runtime's own default). Off here:
            a query runs three sessions in a row, each with its own pool, and the pools' spinning
            workers take the cores from the one that runs (measured on 2 cores, threads 2: a batch-1
            query 6.4 ms spinning vs 2.5 ms not; batch 8: 30 vs 11.6 ms).
        fused: Run whole queries through the bundle's fused ``query_encoder`` graph when it has one
            (one session call instead of three; off: the three graphs, as every other backend runs).
    """

    provider: str = "auto"
    threads: int = 0
    level: str = "all"
    use_saved: bool = True
    spin: bool = False
    fused: bool = True

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise unknown_choice("onnxruntime provider", self.provider, PROVIDERS)
        if self.level not in LEVELS:
            raise unknown_choice("graph optimisation level", self.level, LEVELS)
        object.__setattr__(self, "threads", integer("threads", self.threads, 0, MAX_THREADS))  # numpy ints too


def providers_for(choice: str) -> list[str]:
    """Execution providers for a choice, checked against what this onnxruntime build has."""
    available = ort.get_available_providers()
    if choice == "cuda" and "CUDAExecutionProvider" not in available:
        raise TgirUserError("onnxruntime has no CUDA provider here; install onnxruntime-gpu "
                            "(pip install -e \".[gpu]\") on a CUDA machine, or use provider 'cpu'")
    if choice == "cpu" or (choice == "auto" and "CUDAExecutionProvider" not in available):
        return ["CPUExecutionProvider"]
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def session_options(options: OrtOptions) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = LEVELS[options.level]
    opts.intra_op_num_threads = options.threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spin else "0")
    opts.log_severity_level = 3  # warnings about unused initialisers etc. say nothing to a user
    return opts


class OrtRunner(Runner):
    """Runs a bundle's ONNX graphs with ONNX Runtime.

    Args:
        folder: Bundle directory.
        options: Session settings.
        manifest: Already loaded manifest, if any.
    """

    backend = "onnxruntime"

    def __init__(self, folder: str | Path, options: OrtOptions = OrtOptions(), manifest: Manifest | None = None):
        super().__init__(folder, manifest)
        self.options = options
        self.providers = providers_for(options.provider)
        self.sessions = {name: self._session(name, spec) for name, spec in self.graphs.items()}
        self.fused = fused_entries(self.manifest) if options.fused else {}
        self.sessions.update({name: self._session(name, spec) for name, spec in self.fused.items()})

    def _session(self, name: str, spec: dict) -> ort.InferenceSession:
        path = self.folder / spec["file"]
        saved = self.manifest.build.get("onnxruntime_optimized", {})
        if (self.options.use_saved and saved.get("version") == ort.__version__
                and saved.get("providers") == self.providers and name in saved.get("files", {})):
            path = self.folder / saved["files"][name]
        try:
            session = ort.InferenceSession(str(path), session_options(self.options), providers=self.providers)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types for a corrupt graph
            raise TgirUserError(f"{path}: onnxruntime cannot load this graph ({str(err).splitlines()[0]})") from None
        _require_contract(path, spec, session)
        return session

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.sessions[graph].run(None, feeds)

    def close(self) -> None:
        """Drop the sessions; the runner refuses every call afterwards."""
        super().close()
        self.sessions = {}


def _require_contract(path: Path, spec: dict, session: ort.InferenceSession) -> None:
    """The graph's real I/O must be the manifest's: names, order, dtypes and ranks."""
    for kind, want, got in (("inputs", spec["inputs"], session.get_inputs()),
                            ("outputs", spec["outputs"], session.get_outputs())):
        have = [(t.name, _ORT_TYPES.get(t.type, t.type), len(t.shape)) for t in got]
        expect = [(t["name"], t["dtype"], len(t["shape"])) for t in want]
        if have != expect:
            raise TgirUserError(f"{path}: the graph's {kind} {have} differ from manifest.json's {expect} "
                                "(name, dtype, rank); the manifest does not describe this graph")


def fused_entries(manifest: Manifest) -> dict[str, dict]:
    """The bundle's fused entry points that were made from its current graphs.

    One fused from other graph files (a bundle whose graphs were replaced and re-signed afterwards)
    would answer for graphs that are no longer there: it is left out, with a warning.
    """
    current = {g: manifest.files.get(spec["file"], "") for g, spec in manifest.graphs.items()}
    entries = {}
    for name, entry in manifest.build.get("fused", {}).items():
        if any(current.get(g) != digest for g, digest in entry.get("from", {"?": "?"}).items()):
            warnings.warn(f"the bundle's fused {name} graph was made from other graph files; running the "
                          "separate graphs instead (rebuild the bundle to fuse them again)", stacklevel=3)
            continue
        entries[name] = entry
    return entries


def save_optimized(folder: str | Path, manifest: Manifest, options: OrtOptions = OrtOptions()) -> dict:
    """Write ONNX Runtime's optimised graphs (``<graph>.ort.onnx``) into a bundle and record them.

    Call before ``manifest.save``; the files join the manifest's checksummed files.

    Returns:
        The ``build["onnxruntime_optimized"]`` entry: version, providers, level, files.
    """
    folder = Path(folder)
    providers = providers_for(options.provider)
    files = {}
    for name, spec in {**manifest.graphs, **fused_entries(manifest)}.items():
        out = f"{Path(spec['file']).stem}.ort.onnx"
        opts = session_options(OrtOptions(options.provider, options.threads, SAVED_LEVEL))
        opts.optimized_model_filepath = str(folder / out)
        ort.InferenceSession(str(folder / spec["file"]), opts, providers=providers)
        files[name] = out
        manifest.files[out] = ""
    entry = {"version": ort.__version__, "providers": providers, "level": SAVED_LEVEL, "files": files}
    manifest.build["onnxruntime_optimized"] = entry
    return entry

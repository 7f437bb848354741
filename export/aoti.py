"""Bundle -> AOTInductor shared objects of its three graphs, for the C runtime (CPU or CUDA).

Each graph of the bundle's source model is exported with ``torch.export`` (a dynamic batch axis up
to the bundle's max batch; AMC's experts stay ``torch.cond`` conditionals), compiled by
``torch._inductor.aoti_compile_and_package`` with its weights inside the shared object, checked
against eager PyTorch, and extracted to ``<bundle>/aoti/<graph>.so``: what the C runtime loads with
``AOTInductorModelContainerCreateWithDevice`` (torch/csrc/inductor/aoti_runtime/interface.h).

The graphs are always compiled from the FP32 PyTorch model, even for an INT8 or FP16 bundle, so
the manifest's ``aoti`` section says ``"precision": "fp32"``. On CPU, Inductor compiles with
``-march=native`` (``torch._inductor.config.cpp.march``): the objects are for this machine's CPU,
whose vector ISA the section records.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tgir.export.graphs import graph_modules
from tgir.export.onnx import _examples
from tgir.runtime.reference import TorchDeviceRunner, torch_device

from tgir.errors import TgirInternalError, TgirUserError, unknown_choice
from tgir.manifest import GRAPHS, Manifest, sha256
from tgir.training.checkpoint import model_for_bundle

DEVICES = ("cpu", "cuda")
FOLDER = "aoti"
PARITY_TOL = 1e-4
UP_TO_DATE = "up to date"  # how the progress line of a skipped build starts
MODEL_DIR = "/data/aotinductor/"  # where a .pt2 package keeps the compiled model
SOURCE_SUFFIXES = (".cpp", ".h", ".hpp", ".cu", ".json", ".py", ".txt", ".log")  # not needed at run time
COMPILER_LINES = 3  # of a compiler's message, shown in the error
_ELF_HEADER = "16sHHIQQQIHHHHHH"  # Elf64_Ehdr after the byte-order mark: 64 bytes
_ELF_PHDR = "IIQQQQQQ"  # Elf64_Phdr: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
_PT_LOAD = 1


@dataclass(frozen=True)
class AotiConfig:
    """How to compile.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``: where the compiled graphs run.
        force: Compile even when the bundle's ``aoti`` section is up to date.
    """

    device: str = "cpu"
    force: bool = False

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise unknown_choice("AOTInductor device", self.device, DEVICES)


def require_device(device: str) -> None:
    """Refuse a device this machine lacks, before any work.

    Raises:
        TgirUserError: ``cuda`` without a CUDA build of torch and a visible GPU.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise TgirUserError("--device cuda: torch.cuda.is_available() is False (a CPU build of torch, or no "
                            "GPU visible); compile with --device cpu")


def aoti_from_bundle(bundle_dir: str | Path, cfg: AotiConfig = AotiConfig(), checkpoint: str | Path | None = None,
                     progress: Callable[[str], None] | None = None) -> Manifest:
    """Compile a bundle's three graphs with AOTInductor into ``<bundle>/aoti/`` and record them.

    Everything is compiled and checked in a temporary folder inside the bundle; ``aoti/`` and
    ``manifest.json`` change only when every graph compiled and matched eager PyTorch within
    ``PARITY_TOL``, so a failure leaves the bundle as it was.

    Args:
        bundle_dir: Bundle directory (any precision; the graphs are compiled from the fp32 model).
        cfg: Device and whether to force a rebuild.
        checkpoint: The bundle's source checkpoint (default: the one its manifest names, if unchanged).
        progress: Called with one line per graph (its compile and check time), or once with a line
            starting ``"up to date"`` when nothing needed compiling.

    Returns:
        The bundle's manifest (its ``aoti`` section and ``files`` updated).

    Raises:
        TgirUserError: Not a bundle, no usable checkpoint, no CUDA for ``cuda``, no working C++ compiler.
        TgirInternalError: A graph that does not export, compile or match eager PyTorch.
    """
    require_device(cfg.device)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise TgirUserError(f"{checkpoint}: checkpoint not found")
    folder = Path(bundle_dir)
    manifest, broken = _load_for_rebuild(folder)
    report = progress or (lambda line: None)
    blocker = broken or stale_reason(manifest, cfg.device)
    if not cfg.force and blocker is None:
        report(f"{UP_TO_DATE}: {folder}/{FOLDER}/ (device {cfg.device}, torch {torch.__version__}; --force rebuilds)")
        return manifest
    model = model_for_bundle(manifest, folder, checkpoint)
    text_length = next(t["shape"][1] for t in manifest.graphs["text_encoder"]["inputs"] if t["name"] == "ids")
    examples = {k: tuple(a.to(cfg.device) for a in v) for k, v in _examples(model, text_length).items()}
    model.to(cfg.device)
    max_batch = manifest.graphs["image_encoder"]["dynamic"]["batch"][-1]
    with _work_dir(folder) as tmp:
        graphs = {}
        for name, module in graph_modules(model).items():
            start = time.perf_counter()
            graphs[name] = compile_graph(name, module, examples[name], max_batch, cfg.device, tmp)
            report(f"{name}: compiled and checked in {time.perf_counter() - start:.1f}s "
                   f"(max |aoti - eager| {graphs[name].pop('parity'):.1e})")
        _install(folder, tmp, manifest, _section(manifest, cfg.device, graphs))
    return manifest


def _load_for_rebuild(folder: Path) -> tuple[Manifest, str | None]:
    """The bundle's manifest, every file verified but the ``aoti/`` ones a rebuild replaces.

    Returns:
        The manifest and, when an ``aoti/`` file is missing or changed, why (the bundle is then read
        through a view without them, so that they cannot stop their own rebuild).
    """
    try:
        return Manifest.load(folder), None
    except TgirUserError:
        raw = _raw_manifest(folder)
        if not isinstance(raw, dict) or not isinstance(raw.get("files"), dict):
            raise
        aoti_files = {k: v for k, v in raw["files"].items() if str(k).startswith(f"{FOLDER}/")}
        broken = [k for k, v in aoti_files.items() if not (folder / k).is_file() or sha256(folder / k) != v]
        if not broken:
            raise  # something else is wrong with the bundle
    with tempfile.TemporaryDirectory() as view:  # the bundle without its aoti/ files, linked not copied
        raw["files"] = {k: v for k, v in raw["files"].items() if k not in aoti_files}
        for name in raw["files"]:
            (Path(view) / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink((folder / name).resolve(), Path(view) / name)
        (Path(view) / "manifest.json").write_text(json.dumps(raw))
        manifest = Manifest.load(view)
    return manifest, f"{broken[0]} missing or changed"


def _raw_manifest(folder: Path) -> object:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def stale_reason(manifest: Manifest, device: str) -> str | None:
    """Why the bundle's ``aoti`` section is not up to date for ``device``, or None when it is.

    Up to date: same device, torch version (and CPU vector ISA on CPU), every graph compiled from
    the ONNX file the bundle holds now, every file present and listed (``Manifest.load`` already
    checked the listed files' checksums).
    """
    aoti = manifest.aoti
    if not aoti:
        return "no aoti section"
    want = {"device": device, "torch": torch.__version__, "source_sha256": _sources(manifest)}
    if device == "cpu":
        want["cpu_isa"] = cpu_isa()
    for key, value in want.items():
        if aoti.get(key) != value:
            return f"{key} differs"
    files = [f for g in aoti.get("graphs", {}).values() for f in [g["file"], *g.get("extra_files", [])]]
    if set(aoti.get("graphs", {})) != set(GRAPHS) or any(f not in manifest.files for f in files):
        return "files missing"
    return None


def cpu_isa() -> str:
    """The vector ISA Inductor compiles CPU kernels for on this machine (``"avx2"``, ``"avx512"``...)."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return str(pick_vec_isa()) or "none"


def compile_graph(name: str, module: torch.nn.Module, args: tuple[torch.Tensor, ...], max_batch: int,
                  device: str, work: Path) -> dict:
    """Export, compile and check one graph; its files land in ``work/aoti/``.

    Returns:
        ``{"file", "extra_files", "parity"}``: the shared object and any other binaries (CUDA
        kernels not embedded), relative to the bundle, and the largest difference from eager.
    """
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # export's chatter (LSTM flat weights, pytree deprecations)
        try:
            program = torch.export.export(module.eval(), args, dynamic_shapes=tuple({0: batch} for _ in args))
        except Exception as err:
            raise TgirInternalError(f"{name}: torch.export failed ({_first_line(err)})") from err
        package = compile_package(program, work / "packages" / f"{name}.pt2", device, name)
    files = _extract(package, work, name)
    parity = _check_parity(name, module, args, work / files["file"], device)
    return {**files, "parity": parity}


def compile_package(program: torch.export.ExportedProgram, path: Path, device: str, name: str) -> Path:
    """``aoti_compile_and_package`` with the weights (and on CUDA the kernels) inside the shared object.

    Raises:
        TgirUserError: No working C++ compiler, or the compiler failed (its first lines).
    """
    from torch._inductor import exc

    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"aot_inductor.package_constants_in_so": True}
    if device == "cuda":
        options["aot_inductor.embed_kernel_binary"] = True
    try:
        return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                                             inductor_configs=options))
    except Exception as err:
        inner = getattr(err, "inner_exception", err)
        if isinstance(inner, exc.CppCompileError | exc.InvalidCxxCompiler):
            lines = [ln.strip() for ln in getattr(inner, "output", str(inner)).splitlines() if ln.strip()]
            raise TgirUserError(f"{name}: AOTInductor needs a working C++ compiler (g++; or set CXX): "
                                f"{' | '.join(lines[:COMPILER_LINES])}") from None
        raise TgirInternalError(f"{name}: AOTInductor failed ({_first_line(inner)})") from err


def _extract(package: Path, work: Path, name: str) -> dict:
    """Copy the package's shared object to ``work/aoti/<name>.so`` and any other binary (CUDA kernels
    left outside it) to ``work/aoti/<name>/``."""
    with zipfile.ZipFile(package) as archive:
        members = [m for m in archive.namelist() if MODEL_DIR in m and not m.endswith("/")]
        objects = [m for m in members if m.endswith(".so")]
        if len(objects) != 1:
            raise TgirInternalError(f"{name}: expected one shared object in {package.name}, found {objects}")
        extras = [m for m in members if m not in objects and not m.endswith(SOURCE_SUFFIXES)]
        targets = {objects[0]: f"{FOLDER}/{name}.so",
                   **{m: f"{FOLDER}/{name}/{Path(m).name}" for m in extras}}
        for member, target in targets.items():
            (work / target).parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, open(work / target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return {"file": targets[objects[0]], "extra_files": sorted(targets[m] for m in extras)}


def load_shared_object(path: str | Path, device: str = "cpu"):
    """A runner of a compiled graph's shared object, as the C runtime loads it (``run(list) -> list``);
    ``device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        TgirUserError: Not a complete 64-bit ELF file (``check_elf``).
    """
    check_elf(Path(path))
    aoti = torch._C._aoti
    if device.startswith("cuda"):
        kernels = Path(path).with_suffix("")  # aoti/<graph>/ when kernels were left outside the object
        return aoti.AOTIModelContainerRunnerCuda(str(path), 1, device, str(kernels) if kernels.is_dir() else "")
    return aoti.AOTIModelContainerRunnerCpu(str(path), 1)


def check_elf(path: Path) -> None:
    """Refuse a shared object that is not a complete 64-bit ELF file before it is mapped: a truncated
    file would map segments past its end, and touching them kills the process with SIGBUS (libtgir's
    ``check_elf`` in runtime/src/aoti.cpp does the same).

    Raises:
        TgirUserError: Unreadable, not 64-bit ELF, or headers or a loaded segment past the file's end.
    """
    def bad(why: str) -> TgirUserError:
        return TgirUserError(f"{path}: cannot load the compiled graph ({why}); re-run `tgir-export aoti --force`")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] not in (1, 2):
                raise bad("not a 64-bit ELF shared object")
            order = "<" if head[5] == 1 else ">"
            fields = struct.unpack(order + _ELF_HEADER, head)
            phoff, shoff, phentsize, phnum, shnum = fields[5], fields[6], fields[9], fields[10], fields[12]
            if phentsize != struct.calcsize(_ELF_PHDR) or phoff > size or phnum > (size - phoff) // phentsize:
                raise bad("truncated program headers")
            if shnum and (shoff > size or shnum > (size - shoff) // 64):
                raise bad("file truncated: section headers past its end")
            f.seek(phoff)
            for _ in range(phnum):
                p_type, _, offset, _, _, filesz, _, _ = struct.unpack(order + _ELF_PHDR, f.read(phentsize))
                if p_type == _PT_LOAD and (offset > size or filesz > size - offset):
                    raise bad("file truncated: a segment ends past its end")
    except OSError as err:
        raise TgirUserError(f"{path}: cannot read the compiled graph ({err.strerror or err})") from None


class AotiRunner(TorchDeviceRunner):
    """A bundle's AOTInductor graphs run from Python through torch's loader, behind the runner protocol:
    the compiled kernels libtgir runs, measurable where libtgir cannot be built (``tgir bench``'s
    ``aoti`` backend).

    Args:
        folder: Bundle directory with an ``aoti`` section (``tgir-export aoti``).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; the packages must be compiled for its kind.
        manifest: The bundle's manifest, when the caller already loaded it.

    Raises:
        TgirUserError: No packages, packages for the other device kind or out of date, no CUDA.
    """

    backend = "aoti"
    index_backend = "aoti"  # compiled from the FP32 model: embeds in FP32 space even on an INT8 bundle

    def __init__(self, folder: str | Path, device: str = "cpu", manifest: Manifest | None = None) -> None:
        device = torch_device(device)
        super().__init__(folder, manifest)
        kind = "cuda" if device.startswith("cuda") else "cpu"
        fix = f"`tgir-export aoti --bundle {self.folder} --device {kind} --force`"
        if not self.manifest.aoti:
            raise TgirUserError(f"{self.folder} has no AOTInductor packages; compile them with {fix}")
        stale = stale_reason(self.manifest, kind)
        if stale:
            raise TgirUserError(f"{self.folder}'s AOTInductor packages do not fit this machine ({stale}: compiled "
                                f"for {self.manifest.aoti.get('device')}, torch {self.manifest.aoti.get('torch')}); "
                                f"recompile with {fix}")
        self.device = device
        self._objects = {name: load_shared_object(self.folder / g["file"], device)
                         for name, g in self.manifest.aoti["graphs"].items()}

    def _forward(self, graph: str, args: list) -> tuple:
        """One compiled graph on device tensors in contract order; outputs on device."""
        with torch.no_grad():
            return tuple(self._objects[graph].run(args))

    def close(self) -> None:
        """Drop the loaded objects; the runner refuses every call afterwards."""
        super().close()
        self._objects = {}


def _check_parity(name: str, module: torch.nn.Module, args: tuple[torch.Tensor, ...], so: Path,
                  device: str) -> float:
    """Largest |compiled - eager| over the examples and their first row (batch 2 and 1).

    Raises:
        TgirInternalError: Above ``PARITY_TOL``.
    """
    runner = load_shared_object(so, device)
    worst = 0.0
    for batch in (args, tuple(a[:1] for a in args)):
        with torch.no_grad():
            want = module(*batch)
        want = want if isinstance(want, tuple) else (want,)
        got = runner.run(list(batch))
        if [g.shape for g in got] != [w.shape for w in want]:
            raise TgirInternalError(f"{name}: compiled graph returns shapes {[list(g.shape) for g in got]}, "
                                    f"eager {[list(w.shape) for w in want]}")
        worst = max(worst, *((g - w).abs().max().item() for g, w in zip(got, want, strict=True)))
    if not worst <= PARITY_TOL:  # NaN fails too
        raise TgirInternalError(f"{name}: AOTInductor output differs from eager PyTorch by {worst:.3g} "
                                f"(tolerance {PARITY_TOL:g})")
    return worst


def _sources(manifest: Manifest) -> dict[str, str]:
    """SHA-256 of each graph's ONNX file (checked against the files by ``Manifest.load``)."""
    return {g: manifest.files.get(spec["file"], "") for g, spec in manifest.graphs.items()}


def _section(manifest: Manifest, device: str, graphs: dict) -> dict:
    """The manifest's ``aoti`` entry: where each graph's object is and its I/O names in call order."""
    entries = {}
    for name, files in graphs.items():
        spec = manifest.graphs[name]
        entries[name] = {"file": files["file"], "inputs": [t["name"] for t in spec["inputs"]],
                         "outputs": [t["name"] for t in spec["outputs"]]}
        if files["extra_files"]:
            entries[name].update(extra_files=files["extra_files"], cubin_dir=f"{FOLDER}/{name}")
    section = {"device": device, "torch": torch.__version__, "precision": "fp32", "graphs": entries,
               "source_sha256": _sources(manifest)}
    return {**section, "cpu_isa": cpu_isa()} if device == "cpu" else section


@contextlib.contextmanager
def _work_dir(folder: Path) -> Iterator[Path]:
    """A temporary folder inside the bundle (same file system, so installing is a rename)."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".aoti.", dir=folder))
    except OSError as err:
        raise TgirUserError(f"{folder}: cannot write there ({err.strerror})") from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(folder: Path, work: Path, manifest: Manifest, section: dict) -> None:
    """Swap ``work/aoti`` in for ``folder/aoti`` and save the manifest; on failure put both back."""
    old_manifest = (folder / "manifest.json").read_bytes()
    old_files, old_section = dict(manifest.files), manifest.aoti
    target, backup = folder / FOLDER, work / "previous"
    try:
        if target.exists():
            os.replace(target, backup)
        os.replace(work / FOLDER, target)
        listed = [g["file"] for g in section["graphs"].values()]
        listed += [f for g in section["graphs"].values() for f in g.get("extra_files", [])]
        manifest.files = {k: v for k, v in manifest.files.items() if not k.startswith(f"{FOLDER}/")}
        manifest.files.update(dict.fromkeys(listed, ""))
        manifest.aoti = section
        manifest.save(folder)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        if backup.exists():
            os.replace(backup, target)
        (folder / "manifest.json").write_bytes(old_manifest)
        manifest.files, manifest.aoti = old_files, old_section
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def files_summary(folder: str | Path, manifest: Manifest) -> dict[str, int]:
    """Size in bytes of each compiled file of the bundle's ``aoti`` section."""
    graphs = manifest.aoti.get("graphs", {})
    names = [f for g in graphs.values() for f in [g["file"], *g.get("extra_files", [])]]
    return {name: (Path(folder) / name).stat().st_size for name in names}


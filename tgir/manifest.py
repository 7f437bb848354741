"""The model I/O contract and the bundle manifest: defined once, torch-free.

Exporters write the contract into every artefact's ``manifest.json``; runtimes (Python and C) read
it instead of guessing tensor names, dtypes, shapes or preprocessing. Three graphs:
    image_encoder: images [batch, 3, S, S] float32 -> gallery [batch, D], tokens [batch, N, D]
    text_encoder:  ids [batch, L] int64, lengths [batch] int64 -> the family's text features
    composer:      tokens + text features -> query [batch, D]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tgir.errors import TgirUserError
from tgir.models.config import ModelConfig

SCHEMA = "tgir-bundle"
SCHEMA_VERSION = 2  # 2: contract_sha256
GRAPHS = ("image_encoder", "text_encoder", "composer")
# Optional fused entry point (``build["fused"]``): images, ids, lengths -> query in one graph.
FUSED_QUERY = "query_encoder"
DTYPES = ("float32", "float16", "int64", "int32", "bool")

Dim = int | str  # a fixed size or the name of a dynamic axis


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, dtype and shape (strings name dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise TgirUserError(f"tensor {self.name}: unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")


@dataclass(frozen=True)
class GraphSpec:
    """A graph's tensors and the ranges of its dynamic axes (``{"batch": (min, opt, max)}``)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def image_tokens(config: ModelConfig) -> int:
    """Number of region tokens N the image encoder hands the composer."""
    if config.family == "tirg":
        return 1  # the pooled feature
    levels = config.backbone.levels if config.family == "itma" else config.backbone.levels[-1:]
    return sum((config.image_size // s) ** 2 for s in levels)


def text_features(config: ModelConfig, length: Dim = "length") -> tuple[TensorSpec, ...]:
    """What the family's text encoder outputs (and its composer takes after the image tokens)."""
    d = config.embed_dim
    if config.family == "itma":
        return (TensorSpec("text_tokens", "float32", ("batch", length, d)),
                TensorSpec("text_mask", "float32", ("batch", length)))
    return (TensorSpec("text_features", "float32", ("batch", d)),)


def io_contract(config: ModelConfig, max_batch: int = 64, text_length: int = 32, opt_batch: int = 1
                ) -> dict[str, GraphSpec]:
    """The I/O contract of every graph of a model.

    The text length is fixed (``text_length``): texts are padded to it, which keeps the LSTM graph
    static in time (TensorRT profiles and torch.export both prefer that) and costs nothing since
    padded steps are masked.
    """
    if not 1 <= opt_batch <= max_batch:
        raise TgirUserError(f"need 1 <= opt batch <= max batch, got {opt_batch} and {max_batch}")
    if text_length < 1:
        raise TgirUserError(f"text length must be >= 1, got {text_length}")
    s, d, n = config.image_size, config.embed_dim, image_tokens(config)
    batch = {"batch": (1, opt_batch, max_batch)}
    text = text_features(config, text_length)
    return {
        "image_encoder": GraphSpec((TensorSpec("images", "float32", ("batch", 3, s, s)),),
                                   (TensorSpec("gallery", "float32", ("batch", d)),
                                    TensorSpec("tokens", "float32", ("batch", n, d))), batch),
        "text_encoder": GraphSpec((TensorSpec("ids", "int64", ("batch", text_length)),
                                   TensorSpec("lengths", "int64", ("batch",))), text, batch),
        "composer": GraphSpec((TensorSpec("tokens", "float32", ("batch", n, d)), *text),
                              (TensorSpec("query", "float32", ("batch", d)),), batch),
    }


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Manifest:
    """What a bundle directory holds; ``manifest.json`` is its serialised form.

    Attributes:
        model: ``{"family", "config_digest", "config"}``, plus ``"checkpoint"`` and
            ``"checkpoint_sha256"`` of the source checkpoint when exported from one.
        graphs: Graph name -> ``{"file", "inputs", "outputs", "dynamic"}``.
        preprocess: The image contract (``tgir.data.images.Preprocess.to_dict()``).
        tokenizer: ``{"vocab_file", "max_length", "pad_id", "specials", "rules"}``.
        precision: ``"fp32"``, ``"fp16"`` or ``"int8"``.
        backend: ``"onnxruntime"``, ``"tensorrt"`` or ``"aoti"``.
        router: AMC: ``{"mode": "if"|"dense", "tau", "experts"}``; empty otherwise.
        build: Tool versions and build facts (exporter, opset, TensorRT version, GPU...).
        aoti: AOTInductor shared objects of the graphs for the C runtime (``tgir-export aoti``):
            ``{"device", "torch", "precision", "graphs": {g: {"file", "inputs", "outputs"}},
            "source_sha256": {g: SHA-256 of the ONNX file compiled alongside}}``; empty when none.
        files: File name -> SHA-256 of every file the bundle needs.
        contract_sha256: SHA-256 of the graphs' I/O contract (names, dtypes, shapes, ranges, files),
            so an edited contract is caught at load even though the graph files are unchanged.
    """

    model: dict
    graphs: dict
    preprocess: dict
    tokenizer: dict
    precision: str = "fp32"
    backend: str = "onnxruntime"
    router: dict = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    aoti: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    contract_sha256: str = ""

    def source_checkpoint(self) -> tuple[str | None, str]:
        """The checkpoint this bundle was exported from, if it is still there unchanged.

        Returns:
            ``(path, "")``, or ``(None, why not)``.
        """
        path = self.model.get("checkpoint")
        if not path:
            return None, "the manifest names no source checkpoint; pass --checkpoint"
        if not Path(path).is_file():
            return None, f"source checkpoint {path} is gone; pass --checkpoint"
        if sha256(path) != self.model.get("checkpoint_sha256"):
            return None, f"source checkpoint {path} changed since export; pass --checkpoint"
        return path, ""

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **asdict(self)}

    def save(self, folder: str | Path) -> Path:
        """Record checksums of the listed files and write ``manifest.json`` into ``folder``."""
        folder = Path(folder)
        self.files = {name: sha256(folder / name) for name in sorted(self.files)}
        self.contract_sha256 = contract_digest(self.graphs)
        path = folder / "manifest.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path, verify: bool = True) -> Manifest:
        """Read and check a bundle's manifest.

        Raises:
            TgirUserError: No manifest, another schema or version, a missing file, or (with
                ``verify``) a file whose checksum differs from the manifest's.
        """
        folder = Path(folder)
        path = folder / "manifest.json"
        if not path.is_file():
            raise TgirUserError(f"{folder}: not a tgir bundle (no manifest.json)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TgirUserError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise TgirUserError(f"{path}: not a tgir bundle manifest (expected \"schema\": \"{SCHEMA}\")")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise TgirUserError(f"{path}: manifest schema version {data.get('schema_version')!r}; "
                                f"this tgir reads {SCHEMA_VERSION} (re-export the bundle)")
        fields = {k: v for k, v in data.items() if k not in ("schema", "schema_version")}
        try:
            manifest = cls(**fields)
        except TypeError as err:
            raise TgirUserError(f"{path}: malformed manifest ({err})") from None
        _check_sections(path, manifest)
        _check_graphs(path, manifest.graphs)
        if manifest.contract_sha256 != contract_digest(manifest.graphs):
            raise TgirUserError(f"{path}: the graphs' I/O contract was edited after the bundle was written "
                                "(its digest differs); re-export the bundle instead of editing manifest.json")
        for name, digest in manifest.files.items():
            file = folder / name
            if not file.is_file():
                raise TgirUserError(f"{file}: missing from the bundle (listed in manifest.json)")
            if verify and sha256(file) != digest:
                raise TgirUserError(f"{file}: checksum differs from manifest.json (file changed or truncated)")
        return manifest


@contextlib.contextmanager
def staged_bundle(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """An empty folder beside ``out_dir`` to assemble a bundle in; it replaces ``out_dir`` when the
    block succeeds and is removed when it fails, so a failed write never leaves half a bundle.

    Args:
        out_dir: Where the bundle goes.
        overwrite: Replace ``out_dir`` when it holds a tgir bundle (never any other folder).

    Raises:
        TgirUserError: ``out_dir`` exists and is not empty without ``overwrite``, holds something
            other than a tgir bundle, or is not writable.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not is_bundle_dir(out):  # a dataset or someone's files: never deleted, whatever the flags
            raise TgirUserError(f"{out}: exists and is not empty; pass --overwrite only to replace a tgir bundle, "
                                "and this is not one: choose another folder")
        if not overwrite:
            raise TgirUserError(f"{out}: exists and is not empty; pass --overwrite to replace it")
    require_writable(out, folder=True)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise TgirUserError(f"{out}: cannot write there ({err.strerror or err})") from None
    try:
        yield tmp
        open_to_umask(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_bundle_dir(folder: Path) -> bool:
    """Whether ``folder`` holds a ``manifest.json`` that tgir wrote (its schema), valid or not."""
    try:
        data = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def open_to_umask(folder: Path) -> None:
    """Give a ``tempfile.mkdtemp`` folder (0700 whatever the umask) the mode of a folder the user makes:
    a bundle renamed into place is meant to be shared like one."""
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    folder.chmod(0o777 & ~mask)


def require_writable(path: str | Path, *, folder: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written, creating nothing.

    The nearest existing ancestor must be a folder that accepts a new file (probed with a temporary
    file, since permission bits say nothing about read-only mounts, /proc, or root); missing folders
    below it are left for the writer to create.

    Args:
        path: The file or folder about to be written.
        folder: ``path`` is a folder (else a file, which must not be an existing folder).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        TgirUserError: ``"PATH: cannot write there (reason)"``.
    """
    path = Path(path)
    if path.is_dir() != folder and path.exists():
        raise TgirUserError(f"{path}: cannot write there ({'not a folder' if folder else 'it is a folder'})")
    probe = path if folder and path.is_dir() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a folder")
        if path.is_file() and not os.access(path, os.W_OK):
            raise PermissionError("permission denied")
        fd, name = tempfile.mkstemp(prefix=".tgir-probe.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise TgirUserError(f"{path}: cannot write there ({err.strerror or err})") from None
    return path


def contract_digest(graphs: dict) -> str:
    """SHA-256 of a manifest's ``graphs`` entry in canonical JSON."""
    return hashlib.sha256(json.dumps(graphs, sort_keys=True).encode()).hexdigest()


def _check_sections(path: Path, manifest: Manifest) -> None:
    """Every top-level entry has the JSON type the dataclass declares (the constructor checks none)."""
    for name, kind in (("model", dict), ("graphs", dict), ("preprocess", dict), ("tokenizer", dict),
                       ("precision", str), ("backend", str), ("router", dict), ("build", dict),
                       ("aoti", dict), ("files", dict), ("contract_sha256", str)):
        value = getattr(manifest, name)
        if not isinstance(value, kind):
            want = "an object" if kind is dict else "a string"
            raise TgirUserError(f"{path}: {name!r} must be {want}, got {json_type(value)}")
    for name, digest in manifest.files.items():
        if not isinstance(digest, str):
            raise TgirUserError(f"{path}: 'files' entry {name!r} must be a SHA-256 string, "
                                f"got {json_type(digest)}")
    if not isinstance(manifest.model.get("config_digest", ""), str):
        raise TgirUserError(f"{path}: 'model.config_digest' must be a string")


def json_type(value: object) -> str:
    """A value's JSON type name ("an object", "null"...), for messages about hand-edited files."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _check_graphs(path: Path, graphs: object) -> None:
    """Every graph entry names its file and lists well-formed tensors."""
    if not isinstance(graphs, dict) or not graphs:
        raise TgirUserError(f"{path}: 'graphs' must map graph names to their contracts")
    for name, spec in graphs.items():
        keys = ("file", "inputs", "outputs", "dynamic")
        if not isinstance(spec, dict) or any(k not in spec for k in keys):
            raise TgirUserError(f"{path}: graph {name!r} needs {', '.join(keys)}")
        for key, kind in (("file", str), ("inputs", list), ("outputs", list), ("dynamic", dict)):
            if not isinstance(spec[key], kind):
                raise TgirUserError(f"{path}: graph {name!r} {key!r} must be {json_type(kind())}, "
                                    f"got {json_type(spec[key])}")
        for t in [*spec["inputs"], *spec["outputs"]]:
            if (not isinstance(t, dict) or set(t) != {"name", "dtype", "shape"} or t["dtype"] not in DTYPES
                    or not isinstance(t["name"], str) or not isinstance(t["shape"], list)):
                raise TgirUserError(f"{path}: graph {name!r} has a malformed tensor entry {t!r}")
        for axis, r in spec["dynamic"].items():
            if not (isinstance(r, list) and len(r) == 3 and all(type(v) is int for v in r)
                    and 1 <= r[0] <= r[1] <= r[2]):
                raise TgirUserError(f"{path}: graph {name!r} axis {axis!r} range {r!r} is not [min, opt, max]")


def contract_to_json(contract: dict[str, GraphSpec]) -> dict:
    """The contract as manifest JSON (``graphs`` entries without their ``file``)."""
    def tensor(t: TensorSpec) -> dict:
        return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}

    return {name: {"inputs": [tensor(t) for t in g.inputs], "outputs": [tensor(t) for t in g.outputs],
                   "dynamic": {k: list(v) for k, v in g.dynamic.items()}} for name, g in contract.items()}

"""The C runtime (libtgir) from Python through ctypes: a runner of the common protocol, its index,
and the CMake build of the library.

Status codes become exceptions: user mistakes (bad bundle, bad index, bad input) raise
``TgirUserError`` with libtgir's message; backend failures and internal errors raise ``TgirError``.

    from tgir.runtime.clib import CRunner, CIndex
    with CRunner("bundle/") as runner:
        q = runner.encode_queries(["ref.png"], ["make it red"])  # [1, D], computed in C
        hits = CIndex("idx/", runner).search(q, k=10)
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tgir.runtime.base import ImageLike, Progress, Runner
from tgir.runtime.index import SearchResult
from tgir.runtime.inputs import MAX_THREADS, image_list, integer, query_array, text_list, top_k

from tgir.data.images import load_image, to_rgb
from tgir.errors import TgirInternalError, TgirUserError
from tgir.manifest import Manifest

SOURCE_DIR = Path(__file__).resolve().parent  # runtime/: CMakeLists.txt, include/, src/
DEFAULT_BUILD_DIR = SOURCE_DIR / "build"
LIBRARY_ENV = "TGIR_LIBRARY"
BACKENDS = {"auto": 0, "aoti": 1, "tensorrt": 2}
# Status codes of tgir.h, in order; the user's mistakes versus failures of the library itself.
STATUS = ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "BAD_BUNDLE", "VERSION_MISMATCH", "UNSUPPORTED", "BACKEND",
          "OUT_OF_MEMORY", "BAD_INDEX", "IO", "INTERNAL")
USER_ERRORS = {1, 2, 3, 4, 5, 8, 9}


class _Options(ctypes.Structure):
    _fields_ = [("backend", ctypes.c_int), ("device", ctypes.c_int), ("num_threads", ctypes.c_int),
                ("verify_checksums", ctypes.c_int), ("cuda_graphs", ctypes.c_int), ("max_batch", ctypes.c_size_t)]


class _Info(ctypes.Structure):
    _fields_ = [("embed_dim", ctypes.c_size_t), ("image_size", ctypes.c_size_t), ("max_batch", ctypes.c_size_t),
                ("max_text_tokens", ctypes.c_size_t), ("backend", ctypes.c_char_p), ("device", ctypes.c_char_p),
                ("precision", ctypes.c_char_p), ("model_family", ctypes.c_char_p),
                ("fingerprint", ctypes.c_char_p)]


class _Image(ctypes.Structure):
    _fields_ = [("pixels", ctypes.c_void_p), ("width", ctypes.c_size_t), ("height", ctypes.c_size_t),
                ("stride", ctypes.c_size_t)]


class _Hit(ctypes.Structure):
    _fields_ = [("row", ctypes.c_int64), ("score", ctypes.c_float), ("id", ctypes.c_char_p)]


class CError(TgirInternalError):
    """libtgir reported a failure of its own (backend, memory, internal); ``status`` names the code."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"libtgir {status}: {message}")
        self.status = status


def library_path(path: str | Path | None = None) -> Path:
    """Where libtgir is: ``path``, else ``$TGIR_LIBRARY``, else ``runtime/build/libtgir.so``."""
    found = Path(path or os.environ.get(LIBRARY_ENV) or DEFAULT_BUILD_DIR / "libtgir.so")
    if not found.is_file():
        raise TgirUserError(f"{found}: libtgir not found; build it with `python -m tgir.runtime.clib build` "
                            f"or point {LIBRARY_ENV} at it")
    return found


_LIBS: dict[Path, ctypes.CDLL] = {}


def load_library(path: str | Path | None = None) -> ctypes.CDLL:
    """Load libtgir once per path and declare its functions' signatures."""
    found = library_path(path).resolve()
    if found not in _LIBS:
        try:
            lib = ctypes.CDLL(str(found))
        except OSError as err:
            raise TgirUserError(f"{found}: cannot load it as libtgir ({err}); build it with "
                                "`python -m tgir.runtime.clib build`") from None
        P, S, Int = ctypes.POINTER, ctypes.c_size_t, ctypes.c_int
        sigs = {
            "tgir_status_string": ([Int], ctypes.c_char_p), "tgir_last_error": ([], ctypes.c_char_p),
            "tgir_version": ([], ctypes.c_char_p), "tgir_runtime_default_options": ([], _Options),
            "tgir_runtime_open": ([ctypes.c_char_p, P(_Options), P(ctypes.c_void_p)], Int),
            "tgir_runtime_clone": ([ctypes.c_void_p, P(ctypes.c_void_p)], Int),
            "tgir_runtime_free": ([ctypes.c_void_p], None),
            "tgir_runtime_get_info": ([ctypes.c_void_p, P(_Info)], Int),
            "tgir_encode_images": ([ctypes.c_void_p, P(_Image), S, P(ctypes.c_float)], Int),
            "tgir_encode_queries": ([ctypes.c_void_p, P(_Image), P(ctypes.c_char_p), S, P(ctypes.c_float)], Int),
            "tgir_tokenize": ([ctypes.c_void_p, ctypes.c_char_p, P(ctypes.c_int64), S, P(S)], Int),
            "tgir_preprocess_image": ([ctypes.c_void_p, P(_Image), P(ctypes.c_float)], Int),
            "tgir_index_open": ([ctypes.c_char_p, ctypes.c_void_p, P(ctypes.c_void_p)], Int),
            "tgir_index_size": ([ctypes.c_void_p], S),
            "tgir_index_search": ([ctypes.c_void_p, P(ctypes.c_float), S, S, P(_Hit)], Int),
            "tgir_index_free": ([ctypes.c_void_p], None),
        }
        for name, (args, res) in sigs.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise TgirUserError(f"{found}: not libtgir (it has no function {name})") from None
            fn.argtypes, fn.restype = args, res
        _LIBS[found] = lib
    return _LIBS[found]


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status == 0:
        return
    message = lib.tgir_last_error().decode("utf-8", "replace")
    if status in USER_ERRORS:
        raise TgirUserError(message)
    raise CError(STATUS[status] if status < len(STATUS) else str(status), message)


def _as_rgb(image: ImageLike | np.ndarray) -> np.ndarray:
    """An ``[H, W, 3]`` uint8 C-contiguous array from a path, a PIL image or such an array."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise TgirUserError(f"the C runtime takes RGB uint8 [H, W, 3] images, got {image.dtype} "
                                f"{list(image.shape)}; pass files, PIL images or such arrays")
        return np.ascontiguousarray(image)
    img = image if isinstance(image, Image.Image) else load_image(image)
    return np.ascontiguousarray(np.asarray(to_rgb(img), np.uint8))


def _images(arrays: list[np.ndarray]) -> ctypes.Array:
    return (_Image * max(len(arrays), 1))(*[_Image(a.ctypes.data, a.shape[1], a.shape[0], 0) for a in arrays])


class CRunner(Runner):
    """The runner protocol on libtgir: preprocessing, tokenization and the graphs all run in C.

    Args:
        folder: Bundle directory; it needs AOTInductor packages (``tgir-export aoti``) or engines.
        backend: ``"auto"``, ``"aoti"`` or ``"tensorrt"`` (the C library's backends).
        device: -1 for the CPU, else a CUDA device index.
        threads: CPU threads of the compiled graphs; 0: the library's default.
        max_batch: Largest batch per graph call; 0: the manifest's.
        library: Path of libtgir.so (default: ``$TGIR_LIBRARY`` or ``runtime/build``).
    """

    backend = "c"
    gives_tokens = False

    def __init__(self, folder: str | Path, backend: str = "auto", device: int = -1, threads: int = 0,
                 max_batch: int = 0, library: str | Path | None = None, manifest: Manifest | None = None) -> None:
        super().__init__(folder, manifest)
        if not isinstance(backend, str) or backend not in BACKENDS:
            raise TgirUserError(f"unknown C backend {backend!r}; valid: {', '.join(BACKENDS)}")
        device = integer("device (-1: the CPU, else a CUDA device index)", device, -1, 1 << 16)
        threads = integer("threads", threads, 0, MAX_THREADS)
        max_batch = integer("max_batch (0: the manifest's)", max_batch, 0, 1 << 31)
        self._lib = load_library(library)
        opts = self._lib.tgir_runtime_default_options()
        opts.backend, opts.device, opts.num_threads, opts.max_batch = BACKENDS[backend], device, threads, max_batch
        handle = ctypes.c_void_p()
        _check(self._lib, self._lib.tgir_runtime_open(str(folder).encode(), ctypes.byref(opts), ctypes.byref(handle)))
        self._handle = handle
        info = _Info()
        _check(self._lib, self._lib.tgir_runtime_get_info(self._handle, ctypes.byref(info)))
        self.embed_dim, self.max_batch = info.embed_dim, info.max_batch
        self.c_backend, self.device = info.backend.decode(), info.device.decode()
        self.fingerprint = info.fingerprint.decode()
        self.index_backend = self.c_backend if self.c_backend == "aoti" else None

    def close(self) -> None:
        """Free libtgir's runtime (idempotent); the runner refuses every call afterwards."""
        super().close()
        if getattr(self, "_handle", None):
            self._lib.tgir_runtime_free(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()

    def _batches(self, images: list, progress: Progress | None) -> Iterator[tuple[int, list[np.ndarray]]]:
        """``(start, RGB arrays)`` of each batch of at most ``max_batch`` images, reporting progress."""
        steps = range(0, len(images), self.max_batch)
        for n, start in enumerate(steps, 1):
            yield start, [_as_rgb(im) for im in images[start:start + self.max_batch]]
            if progress:
                progress(n, len(steps))

    def _images_of(self, images: object) -> list:
        """The runner is open and ``images`` a list of pictures (the C runtime takes no network input)."""
        self._require_open()
        images = image_list(images)
        if isinstance(images, np.ndarray):
            raise TgirUserError("the C runtime takes pictures (files, PIL images, [H, W, 3] uint8 arrays), "
                                "not a [B, 3, S, S] float32 network input")
        return images

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise TgirUserError("the C runtime runs whole queries (encode_images, encode_queries), not single graphs")

    def _out(self, n: int) -> np.ndarray:
        return np.empty((n, self.embed_dim), np.float32)

    def encode_images(self, images: Sequence[ImageLike | np.ndarray], progress: Progress | None = None,
                      tokens: bool = False) -> np.ndarray:
        """Gallery embeddings ``[B, D]``, computed by libtgir from RGB pixels."""
        if tokens:
            raise TgirUserError("the C runtime does not hand out image tokens; use encode_queries")
        images = self._images_of(images)
        out = self._out(len(images))
        for start, part in self._batches(images, progress):
            dst = out[start:start + len(part)].ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            _check(self._lib, self._lib.tgir_encode_images(self._handle, _images(part), len(part), dst))
        return out

    def encode_queries(self, images: Sequence[ImageLike | np.ndarray], texts: Sequence[str],
                       progress: Progress | None = None) -> np.ndarray:
        """Query embeddings ``[B, D]`` of reference images modified by texts, computed by libtgir."""
        images, texts = self._images_of(images), text_list(texts)  # no NUL: C would end the text there
        if len(images) != len(texts):
            raise TgirUserError(f"{len(images)} reference images but {len(texts)} texts; give one text per image")
        self.tokenize(texts)  # warns about texts with no known word, as every runner does
        out = self._out(len(images))
        for start, part in self._batches(images, progress):
            words = (ctypes.c_char_p * len(part))(*[t.encode() for t in texts[start:start + len(part)]])
            dst = out[start:start + len(part)].ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            _check(self._lib, self._lib.tgir_encode_queries(self._handle, _images(part), words, len(part), dst))
        return out

    def c_tokenize(self, text: str) -> list[int]:
        """Token ids as libtgir's tokenizer computes them (for checking it against ``tgir.vocab``)."""
        self._require_open()
        if not isinstance(text, str):
            raise TgirUserError(f"text must be a string, got {type(text).__name__}")
        raw, length = text.encode("utf-8", "surrogatepass"), ctypes.c_size_t()
        _check(self._lib, self._lib.tgir_tokenize(self._handle, raw, None, 0, ctypes.byref(length)))
        ids = (ctypes.c_int64 * max(length.value, 1))()
        _check(self._lib, self._lib.tgir_tokenize(self._handle, raw, ids, length.value, ctypes.byref(length)))
        return list(ids[:length.value])

    def c_preprocess(self, image: ImageLike | np.ndarray) -> np.ndarray:
        """``[3, S, S]`` network input as libtgir computes it from an image."""
        self._require_open()
        rgb = _as_rgb(image_list([image])[0])
        out = np.empty((3, self.preprocess.size, self.preprocess.size), np.float32)
        _check(self._lib, self._lib.tgir_preprocess_image(self._handle, _images([rgb]),
                                                          out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))))
        return out


class CIndex:
    """A gallery index opened by libtgir (``tgir_index_open``); with a runner, one from another bundle
    is refused."""

    def __init__(self, folder: str | Path, runner: CRunner | None = None, library: str | Path | None = None) -> None:
        if runner is not None:
            if not isinstance(runner, CRunner):
                raise TgirUserError(f"CIndex takes a CRunner (or None), got {type(runner).__name__}")
            runner._require_open()  # a closed runner's NULL handle would skip the bundle check
        self._lib = runner._lib if runner else load_library(library)
        handle = ctypes.c_void_p()
        _check(self._lib, self._lib.tgir_index_open(str(folder).encode(), runner._handle if runner else None,
                                                    ctypes.byref(handle)))
        self._handle = handle
        self.dim = _index_dim(Path(folder))

    def _require_open(self) -> None:
        if not getattr(self, "_handle", None):
            raise TgirUserError("the C index is closed; open it again")

    def __len__(self) -> int:
        self._require_open()
        return self._lib.tgir_index_size(self._handle)

    def search(self, queries: np.ndarray, k: int = 10) -> SearchResult:
        """Exact top-k of each query ``[Q, D]``, as ``GalleryIndex.search`` returns it.

        Raises:
            TgirUserError: A closed index, k not an integer in 1..len(index), queries not real
                numbers of the index's dimension, NaN or infinite values.
        """
        k = top_k(k, len(self))
        q = query_array(queries, self.dim)  # C reads D floats per query: a narrower row would be over-read
        hits = (_Hit * max(len(q) * k, 1))()
        _check(self._lib, self._lib.tgir_index_search(self._handle, q.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                                                      len(q), k, hits))
        rows = np.array([h.row for h in hits[:len(q) * k]], np.int64).reshape(len(q), k)
        scores = np.array([h.score for h in hits[:len(q) * k]], np.float32).reshape(len(q), k)
        ids = [[hits[i * k + j].id.decode() for j in range(k)] for i in range(len(q))]
        return SearchResult(rows, scores, ids)

    def close(self) -> None:
        """Free libtgir's index (idempotent); the index refuses every call afterwards."""
        if getattr(self, "_handle", None):
            self._lib.tgir_index_free(self._handle)
            self._handle = None

    def __del__(self) -> None:
        self.close()


def _index_dim(folder: Path) -> int:
    """The embedding width an index folder's ``index.json`` records (libtgir checked it when opening)."""
    try:
        dim = json.loads((folder / "index.json").read_text())["dim"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TgirUserError(f"{folder}/index.json: cannot read the index's dimension ({err})") from None
    return integer(f"{folder}/index.json: dim", dim, 1)


def build_library(build_dir: str | Path = DEFAULT_BUILD_DIR, sanitize: bool = False, tests: bool = True,
                  jobs: int = 2, extra: Sequence[str] = (), build_type: str = "Release",
                  targets: Sequence[str] = ()) -> Path:
    """Configure and build libtgir with CMake; returns the library's path.

    Args:
        sanitize: Instrument with AddressSanitizer + UndefinedBehaviorSanitizer.
        tests: Build the C tests (ctest).
        extra: More ``-D`` settings for CMake.
        build_type: CMake build type (``Release``; ``Debug`` compiles faster, e.g. for sanitizers).
        targets: Build only these targets (default: all).

    Raises:
        TgirUserError: cmake missing, or configuring/building failed (the tool's last output lines).
    """
    if shutil.which("cmake") is None:
        raise TgirUserError("cmake not found; install it (apt-get install cmake) to build libtgir")
    build_dir = Path(build_dir)
    configure = ["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir), f"-DCMAKE_BUILD_TYPE={build_type}",
                 f"-DPython3_EXECUTABLE={sys.executable}", f"-DTGIR_SANITIZE={'ON' if sanitize else 'OFF'}",
                 f"-DTGIR_BUILD_TESTS={'ON' if tests else 'OFF'}", *extra]
    build = ["cmake", "--build", str(build_dir), "-j", str(jobs), *(["--target", *targets] if targets else [])]
    for cmd in (configure, build):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
            raise TgirUserError(f"`{' '.join(cmd)}` failed (exit {done.returncode}):\n{tail}")
    return build_dir / "libtgir.so"


if __name__ == "__main__":  # python -m tgir.runtime.clib build [BUILD_DIR]
    USAGE = "usage: python -m tgir.runtime.clib build [BUILD_DIR]   (CMake-builds libtgir; prints its path)"
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(USAGE)
        sys.exit(0)
    if sys.argv[1:2] != ["build"]:
        sys.exit(USAGE)
    try:
        print(build_library(sys.argv[2] if len(sys.argv) > 2 else DEFAULT_BUILD_DIR))
    except TgirUserError as err:
        sys.exit(f"error: {err}")

"""Int8 gallery search on ONNX Runtime with a certified exact re-rank: exact results, a quarter
of the memory traffic.

At batch 1 the exact search is one matrix-vector product over the whole gallery. It is bound by
memory, not arithmetic (a 10,000 x 512 float32 gallery is 20 MB read per query, more than this
CPU's cache share), and it evicts the encoders' weights between queries. Here every gallery row
is also stored as 7-bit codes in int8 with one scale of its own (symmetric), each query is
quantized to uint8 around 128 with its own scale, and ONNX Runtime's ``MatMulInteger`` (MLAS's
u8s8 kernels) gives the exact integer dot products of the quantized vectors. Seven bits, not
eight: x86 without VNNI multiplies u8 x s8 pairs into saturating int16 sums (``vpmaddubsw``), and
``2 * 255 * 127`` overflows them (measured here: wrong scores) while ``2 * 255 * 63`` does not;
this is onnxruntime's own ``reduce_range``. The session is checked for exact integer results on
extreme inputs when it is built.

The quantized scores are off by at most a bound computed per query and row (Cauchy-Schwarz):
``|q.g - q^.g^| <= |q - q^| |g| + |q^| |g - g^|``, with ``|g|`` and ``|g - g^|`` stored per row at
build time and the query terms computed per query. Any row whose upper bound falls below the
k-th best lower bound cannot be in the top k; every other row (typically a few dozen) is
re-scored in float32 and sorted like ``exact_search`` (ties in gallery order). The entries returned
are therefore those of the exact search, up to float rounding of equal scores, and the scores are
the exact float32 ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tgir.runtime.inputs import top_k

from tgir.errors import TgirUserError

QUERY_ZERO = 128  # uint8 queries are symmetric around 128: MLAS runs u8 x s8 fastest on x86
QUERY_LEVELS = 127  # query steps in [-127, 127]
CODE_LEVELS = 63  # gallery codes in [-63, 63]: no int16 saturation (module doc)
SLACK = 1e-5  # float32 rounding of the scaled scores and bounds, far above its real size


@dataclass
class SearchStats:
    """What the last call re-scored: ``candidates`` rows in float32 over ``queries`` queries."""

    queries: int = 0
    candidates: int = 0


class Int8Search:
    """Int8 scoring plus certified re-rank over a float32 gallery ``[G, D]`` (rows L2-normalised or not).

    Args:
        embeddings: The float32 gallery; kept (not copied) for the re-rank.
        threads: ONNX Runtime intra-op threads (0: its default).

    Raises:
        TgirUserError: onnxruntime missing, or a gallery too large for one int8 graph (2 GB).
    """

    def __init__(self, embeddings: np.ndarray, threads: int = 0) -> None:
        gallery = np.ascontiguousarray(embeddings, np.float32)  # [G, D]
        if gallery.nbytes // 4 >= 2**31 - 2**24:
            raise TgirUserError(f"int8 search: a gallery of {gallery.shape[0]} x {gallery.shape[1]} does not fit one "
                                "ONNX graph (2 GB); use the exact or FAISS search")
        self.gallery = gallery
        peak = np.abs(gallery).max(axis=1)  # [G]
        self.scale = np.where(peak > 0, peak / CODE_LEVELS, 1.0).astype(np.float32)  # [G]
        codes = np.clip(np.rint(gallery / self.scale[:, None]), -CODE_LEVELS, CODE_LEVELS).astype(np.int8)  # [G, D]
        self.norm = np.linalg.norm(gallery, axis=1).astype(np.float32)  # [G]
        self.error = np.linalg.norm(gallery - codes * self.scale[:, None], axis=1).astype(np.float32)  # [G]
        self.session = _session(np.ascontiguousarray(codes.T), threads)  # codes as [D, G]
        _check_exact(self.session, codes)
        self.stats = SearchStats()

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(indices [Q, k], scores [Q, k])`` of ``queries`` ``[Q, D]``, as ``exact_search``."""
        k = top_k(k, self.gallery.shape[0])
        queries = np.ascontiguousarray(queries, np.float32)
        # |q / qscale| <= 127 by construction, so rounding alone lands in [-127, 127]
        qscale = (np.maximum(np.abs(queries).max(axis=1), 1e-30) / QUERY_LEVELS).astype(np.float32)  # [Q]
        steps = np.rint(queries / qscale[:, None])  # [Q, D]
        qhat = steps * qscale[:, None]
        q_err = np.sqrt(np.square(queries - qhat).sum(axis=1, dtype=np.float32))  # [Q]
        q_norm = np.sqrt(np.square(qhat).sum(axis=1, dtype=np.float32))  # [Q]
        (acc,) = self.session.run(None, {"query": (steps + QUERY_ZERO).astype(np.uint8)})  # [Q, G] int32
        approx = acc.astype(np.float32)  # float32 throughout: these arrays are the per-query cost
        approx *= self.scale
        approx *= qscale[:, None]  # [Q, G] quantized scores
        n = self.gallery.shape[0]
        indices = np.empty((len(queries), k), np.int64)
        top = np.empty((len(queries), k), np.float32)
        self.stats = SearchStats(queries=len(queries))
        bound = np.empty(n, np.float32)
        for row in range(len(queries)):
            np.multiply(self.norm, q_err[row], out=bound)
            bound += self.error * q_norm[row]
            bound += SLACK  # [G]: |exact - approx| <= bound
            floor = np.partition(approx[row] - bound, n - k)[n - k] if k < n else -np.inf
            bound += approx[row]  # now the upper bound of each row's exact score
            cand = np.flatnonzero(bound >= floor)  # every row that could be in the top k
            exact = self.gallery[cand] @ queries[row]  # [C]
            best = np.lexsort((cand, -exact))[:k]
            indices[row], top[row] = cand[best], exact[best]
            self.stats.candidates += len(cand)
        return indices, top


def _check_exact(session, codes: np.ndarray) -> None:
    """Refuse a kernel whose integer products are not exact on the extreme queries (all +127, all
    -127, alternating signs), where saturation would show first; the re-rank's guarantee needs them."""
    dim = codes.shape[1]
    steps = np.stack([np.full(dim, QUERY_LEVELS), np.full(dim, -QUERY_LEVELS),
                      np.where(np.arange(dim) % 2, QUERY_LEVELS, -QUERY_LEVELS)])  # [3, D]
    (got,) = session.run(None, {"query": (steps + QUERY_ZERO).astype(np.uint8)})
    if not np.array_equal(got, steps @ codes.T.astype(np.int64)):
        raise TgirUserError("int8 search: this onnxruntime's integer kernel does not give exact products on this "
                            "CPU; use the exact or FAISS search")


def _session(codes: np.ndarray, threads: int):
    """ONNX Runtime session of ``search_model(codes)``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise TgirUserError("int8 search needs onnxruntime (pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(search_model(codes).SerializeToString(), options, providers=["CPUExecutionProvider"])


def search_model(codes: np.ndarray):
    """ONNX model computing ``MatMulInteger(query_u8 [Q, D], codes [D, G]) -> int32 [Q, G]``."""
    try:
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise TgirUserError("int8 search needs onnx (pip install onnx)") from None
    dim = codes.shape[0]
    node = helper.make_node("MatMulInteger", ["query", "codes", "query_zero"], ["scores"])
    graph = helper.make_graph(
        [node], "tgir_int8_search",
        [helper.make_tensor_value_info("query", TensorProto.UINT8, ["queries", dim])],
        [helper.make_tensor_value_info("scores", TensorProto.INT32, ["queries", codes.shape[1]])],
        [numpy_helper.from_array(codes, "codes"),
         numpy_helper.from_array(np.array(QUERY_ZERO, np.uint8), "query_zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # IR 8 is opset 17's own (onnx 1.12); the installed onnx's newer default can be past what this
    # onnxruntime reads (onnx 1.23 writes IR 14, onnxruntime 1.30 reads up to 13).
    model.ir_version = 8
    return model

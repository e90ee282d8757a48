"""Sentence embeddings from any sentence-transformers folder, with plain transformers.

Reading the folder's ``modules.json`` ourselves (transformer module, pooling config, optional
normalisation) avoids importing sentence-transformers at serving time. BERT-family encoders (the
default all-MiniLM-L6-v2 among them) run through :class:`_BertForward`, the same arithmetic as
transformers' ``BertModel`` in a handful of fused tensor calls: a single short prompt spends
about a quarter of its time in Python module dispatch otherwise, and the guard sits on every request.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ._paths import DEFAULT_ENCODER_NAME, default_encoder_folder
from ._prompting import TOKENIZE_LOCK
from .exceptions import ConfigurationError, InvalidInputError

_PROBE = "A fixed sentence whose embedding identifies the encoder."
PRECISIONS = ("float32", "bfloat16")
"""``bfloat16`` runs the matrix multiplications in bfloat16 (residuals and LayerNorm stay float32):
about 1.7x the throughput on CPUs with AVX512-BF16 or AMX, embeddings within cosine 0.9999 of
float32 on MiniLM. On CPUs without bfloat16 instructions it is slower; keep ``float32`` there."""


class LoadedEncoder(NamedTuple):
    """What :meth:`SentenceEncoder.load` reads from the folder."""

    model: Any
    tokenizer: Any
    pooling: str
    normalize: bool
    max_length: int


def length_sorted_batches(texts: Sequence[str], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``texts`` in batches of similar length, so each batch pads little on a CPU.

    Callers write each batch's results back at these indices, which restores the input order.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


class SentenceEncoder:
    """Mean/CLS/max-pooled sentence embeddings from a sentence-transformers folder.

    >>> encoder = SentenceEncoder()            # the embedded all-MiniLM-L6-v2
    >>> encoder.encode(["hello"]).shape        # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        precision: str = "float32",
    ) -> None:
        if precision not in PRECISIONS:
            msg = (
                f"Unknown encoder precision {precision!r}; choose one of: {', '.join(PRECISIONS)}."
            )
            raise ConfigurationError(msg)
        if not isinstance(batch_size, int) or batch_size < 1:
            msg = f"batch_size must be a positive integer, got {batch_size!r}."
            raise ConfigurationError(msg)
        self.path = path
        # 16 rather than 64: on a CPU, smaller batches of length-sorted texts waste less on padding.
        self.batch_size = batch_size
        self.max_length = max_length
        self.precision = precision
        self._loaded: LoadedEncoder | None = None
        self._forward: Any = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> SentenceEncoder:
        # Estimators are cloned with deepcopy; the encoder is a read-only shared resource.
        return self

    @property
    def name(self) -> str:
        return DEFAULT_ENCODER_NAME if self.path is None else Path(self.path).name

    def load(self) -> LoadedEncoder:
        """The folder's model, tokenizer and pooling, read once and shared by every caller."""
        with self._lock:
            if self._loaded is None:
                from ._models import resolve_encoder_path

                self._loaded = _load_folder(
                    resolve_encoder_path(self.path)
                    if self.path is not None
                    else default_encoder_folder(),
                    self.max_length,
                )
                model = self._loaded.model
                dtype = getattr(torch, self.precision)
                self._forward = (
                    _BertForward(model, dtype)
                    if _BertForward.supports(model)
                    else _hf_forward(model, dtype)
                )
        return self._loaded

    def known_word(self, word: str) -> bool:
        """Whether the tokenizer writes ``word`` as one vocabulary entry: a word common enough
        in the encoder's training text to have its own (BERT's "karachi", not "hagrid")."""
        tokenizer = self.load().tokenizer
        with TOKENIZE_LOCK:  # one fast tokenizer serves every thread, encode() included
            return len(tokenizer.tokenize(word)) == 1

    @property
    def dim(self) -> int:
        model = self.load().model
        return int(model.config.hidden_size)

    def encode(self, texts: list[str], *, show_progress: bool = False) -> np.ndarray:
        """L2-normalised (when the folder says so) float32 embeddings, ``[len(texts), dim]``."""
        if isinstance(texts, str):
            msg = "encode() takes a list of texts; wrap a single text as [text]."
            raise InvalidInputError(msg)
        model, tokenizer, pooling, normalize, max_length = self.load()
        if not texts:
            return np.zeros((0, int(model.config.hidden_size)), dtype=np.float32)
        out = np.zeros((len(texts), int(model.config.hidden_size)), dtype=np.float32)
        from tqdm.auto import tqdm

        batches = list(length_sorted_batches(texts, self.batch_size))
        with torch.inference_mode():
            for idx in tqdm(
                batches, desc="embedding", unit="batch", disable=not show_progress, file=sys.stderr
            ):
                with TOKENIZE_LOCK:
                    batch = tokenizer(
                        [texts[i] for i in idx],
                        padding=True,
                        truncation=True,
                        max_length=max_length,
                        return_tensors="pt",
                    )
                pooled = pool_tokens(self._forward(batch), batch["attention_mask"], pooling)
                if normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.float().numpy()
        return out

    def fingerprint(self) -> list[float]:
        """A few rounded coordinates of a fixed sentence: tells two encoders apart on load."""
        return _fingerprint_of(self.encode([_PROBE])[0])

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dim": self.dim,
            "precision": self.precision,
            "fingerprint": self.fingerprint(),
        }


def encoder_name(encoder: Any) -> str:
    return str(getattr(encoder, "name", None) or type(encoder).__name__)


def _fingerprint_of(probe_embedding: Any) -> list[float]:
    return [round(float(x), 3) for x in np.asarray(probe_embedding)[:8]]


def encoder_fingerprint(encoder: Any) -> list[float]:
    """:meth:`SentenceEncoder.fingerprint` for any object with ``encode(texts)``."""
    own = getattr(encoder, "fingerprint", None)
    if callable(own):
        return list(own())
    return _fingerprint_of(np.asarray(encoder.encode([_PROBE]))[0])


def encoder_identity(encoder: Any) -> dict[str, Any]:
    """What a saved guard records of its encoder. Duck-typed encoders (any object with
    ``encode(texts)``) fit guards too, so what they lack is derived from their embeddings."""
    own = getattr(encoder, "identity", None)
    if callable(own):
        return dict(own())
    probe = np.asarray(encoder.encode([_PROBE]))
    return {
        "name": encoder_name(encoder),
        "dim": int(probe.shape[1]),
        "precision": str(getattr(encoder, "precision", "float32")),
        "fingerprint": _fingerprint_of(probe[0]),
    }


def _hf_forward(model: Any, dtype: torch.dtype) -> Any:
    if dtype == torch.float32:

        def plain(batch: Any) -> torch.Tensor:
            hidden: torch.Tensor = model(**batch).last_hidden_state
            return hidden

        return plain

    def forward(batch: Any) -> torch.Tensor:
        with torch.autocast("cpu", dtype=dtype):
            hidden: torch.Tensor = model(**batch).last_hidden_state.float()
        return hidden

    return forward


class _BertForward:
    """``BertModel.forward`` for inference, on the model's own weights (Q, K and V fused into one matmul).

    Outputs match transformers to float32 rounding (tested); anything this does not cover (relative
    positions, other activations, decoders) takes the transformers forward instead.
    """

    def __init__(self, model: Any, dtype: torch.dtype = torch.float32) -> None:
        config, weights = model.config, dict(model.named_parameters())
        self.dtype = dtype
        self.heads, self.hidden, self.eps = (
            int(config.num_attention_heads),
            int(config.hidden_size),
            float(config.layer_norm_eps),
        )

        def w(name: str) -> torch.Tensor:
            weight: torch.Tensor = weights[name].detach()
            return weight

        self.word, self.position, self.token_type = (
            w(f"embeddings.{n}_embeddings.weight") for n in ("word", "position", "token_type")
        )
        self.embed_norm = (w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"))
        self.layers = []
        for i in range(int(config.num_hidden_layers)):
            p = f"encoder.layer.{i}."
            qkv_w = torch.cat(
                [w(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")]
            ).contiguous()
            qkv_b = torch.cat(
                [w(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")]
            )
            self.layers.append(
                (
                    qkv_w.to(dtype),
                    qkv_b.to(dtype),
                    w(p + "attention.output.dense.weight").to(dtype),
                    w(p + "attention.output.dense.bias").to(dtype),
                    w(p + "attention.output.LayerNorm.weight"),
                    w(p + "attention.output.LayerNorm.bias"),
                    w(p + "intermediate.dense.weight").to(dtype),
                    w(p + "intermediate.dense.bias").to(dtype),
                    w(p + "output.dense.weight").to(dtype),
                    w(p + "output.dense.bias").to(dtype),
                    w(p + "output.LayerNorm.weight"),
                    w(p + "output.LayerNorm.bias"),
                )
            )

    @staticmethod
    def supports(model: Any) -> bool:
        config = model.config
        return (
            getattr(config, "model_type", None) == "bert"
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and getattr(config, "hidden_act", None) == "gelu"
            and not getattr(config, "is_decoder", False)
            and type(model).__name__ == "BertModel"
        )

    def __call__(self, batch: Any) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        rows, length = ids.shape
        token_types = batch.get("token_type_ids")
        types = self.token_type[token_types] if token_types is not None else self.token_type[0]
        x = F.layer_norm(
            self.word[ids] + self.position[:length] + types,
            (self.hidden,),
            *self.embed_norm,
            self.eps,
        )
        # Padding keys are masked out; a batch without padding needs no mask at all.
        keep = None if bool(mask.all()) else mask[:, None, None, :].bool()
        head_dim, dtype = self.hidden // self.heads, self.dtype
        # The residual stream and LayerNorm stay float32; only the matmuls take ``dtype``
        # (``.to`` is free when it is already float32).
        for (
            qkv_w,
            qkv_b,
            out_w,
            out_b,
            n1_w,
            n1_b,
            up_w,
            up_b,
            down_w,
            down_b,
            n2_w,
            n2_b,
        ) in self.layers:
            q, k, v = (
                F.linear(x.to(dtype), qkv_w, qkv_b)
                .view(rows, length, 3, self.heads, head_dim)
                .permute(2, 0, 3, 1, 4)
            )
            attended = (
                F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
                .transpose(1, 2)
                .reshape(rows, length, self.hidden)
            )
            x = F.layer_norm(
                F.linear(attended, out_w, out_b).float() + x, (self.hidden,), n1_w, n1_b, self.eps
            )
            up = F.gelu(F.linear(x.to(dtype), up_w, up_b))
            x = F.layer_norm(
                F.linear(up, down_w, down_b).float() + x, (self.hidden,), n2_w, n2_b, self.eps
            )
        return x


def pool_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per text from its token states, by the folder's pooling ("cls", "max", "mean")."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "max":
        return hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def _load_folder(folder: Path, max_length: int | None) -> LoadedEncoder:
    from transformers import AutoModel, AutoTokenizer

    if not folder.is_dir():
        problem = "is a file" if folder.exists() else "does not exist"
        msg = f"Encoder folder {folder} {problem}; pass a sentence-transformers folder."
        raise ConfigurationError(msg)
    transformer_dir, pooling, normalize = folder, "mean", False
    modules_file = folder / "modules.json"
    if modules_file.is_file():
        for module in json.loads(modules_file.read_text()):
            kind, sub = module.get("type", ""), folder / module.get("path", "")
            if kind.endswith("Transformer"):
                transformer_dir = sub
            elif kind.endswith("Pooling"):
                pooling = _pooling_mode(sub / "config.json")
            elif kind.endswith("Normalize"):
                normalize = True
    if not (transformer_dir / "config.json").is_file():
        msg = f"{folder} is not a sentence-transformers or transformers model folder (no config.json)."
        raise ConfigurationError(msg)
    if max_length is None:
        st_config = transformer_dir / "sentence_bert_config.json"
        max_length = (
            int(json.loads(st_config.read_text()).get("max_seq_length", 256))
            if st_config.is_file()
            else 256
        )
    tokenizer = AutoTokenizer.from_pretrained(transformer_dir)
    model = AutoModel.from_pretrained(transformer_dir, dtype=torch.float32)
    model.eval()
    return LoadedEncoder(model, tokenizer, pooling, normalize, max_length)


def _pooling_mode(config_file: Path) -> str:
    if not config_file.is_file():
        return "mean"
    config = json.loads(config_file.read_text())
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_max_tokens"):
        return "max"
    return "mean"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

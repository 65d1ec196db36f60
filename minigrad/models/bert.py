"""BERT in minigrad: the encoder of Devlin et al.'s figure, with the names of transformers'
checkpoints, so a pretrained (or fine-tuned) BERT folder loads with NumPy alone.

    embeddings:  word + position + token type -> LayerNorm -> dropout
    each layer:  x = LayerNorm(x + dropout(attention(x)))        self-attention, padding masked
                 x = LayerNorm(x + dropout(W2 gelu(W1 x)))       feed-forward
    head:        [CLS] -> pooler (dense, tanh) -> dropout -> classifier     (pooling="cls")
                 masked mean of the tokens -> dropout -> classifier         (pooling="mean")

    model = from_pretrained(path, num_labels=2, pooling="mean").eval()
    logits = model(input_ids, attention_mask=mask, token_type_ids=types)   # (batch, num_labels)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from minigrad import nn
from minigrad.errors import CheckpointError
from minigrad.nn import functional as F  # noqa: N812 - torch's spelling
from minigrad.tensor import Tensor


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BertConfig:
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: np.ndarray, token_type_ids: np.ndarray) -> Tensor:
        positions = np.arange(input_ids.shape[1])
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """Every token looks at every unmasked token: softmax(q k^T / sqrt(d) + mask) v, per head."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads, self.head_size = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n, width = x.shape

        def split_heads(t: Tensor) -> Tensor:  # (b, n, width) -> (b, heads, n, head_size)
            return t.reshape(b, n, self.heads, self.head_size).transpose(1, 2)

        q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
        scores = q.matmul(k.transpose(-1, -2)) * (1 / math.sqrt(self.head_size)) + mask
        context = self.dropout(scores.softmax(-1)).matmul(v)
        return context.transpose(1, 2).reshape(b, n, width)


class AttentionOutput(nn.Module):
    """dense, dropout, and the residual's LayerNorm (BertSelfOutput and BertOutput alike)."""

    def __init__(self, c: BertConfig, width_in: int) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = SelfAttention(c)
        self.output = AttentionOutput(c, c.hidden_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = AttentionOutput(c, c.intermediate_size)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class Pooler(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.dense(hidden[:, 0]).tanh()


class BertModel(nn.Module):
    """The encoder: token ids in, one vector per token out (transformers' last_hidden_state)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config)

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> Tensor:
        ids = _ids(input_ids)
        keep = np.ones(ids.shape, dtype=bool) if attention_mask is None else _ids(attention_mask).astype(bool)
        types = np.zeros_like(ids) if token_type_ids is None else _ids(token_type_ids)
        x = self.embeddings(ids, types)
        # padding keys get the most negative number the dtype has: exp() of it is 0
        mask = Tensor(np.where(keep, 0, np.finfo(x.dtype).min).astype(x.dtype)[:, None, None, :])
        return self.encoder(x, mask)


class BertForSequenceClassification(nn.Module):
    """BERT with a classifier over the [CLS] pooler (``cls``) or the masked mean of the tokens (``mean``)."""

    def __init__(self, config: BertConfig, num_labels: int = 2, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.pooling = pooling
        self.bert = BertModel(config)
        if pooling == "mean":
            self.bert.pooler = None  # unused by the mean head (as in finetune): no weights that never train
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        for module in self.modules():  # transformers' initialisation, which a new head keeps
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=config.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> Tensor:
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        if self.pooling == "cls":
            pooled = self.bert.pooler(hidden)
        else:
            keep = np.ones(hidden.shape[:2]) if attention_mask is None else _ids(attention_mask)
            weights = Tensor((keep / np.maximum(keep.sum(1, keepdims=True), 1e-9)).astype(hidden.dtype)[..., None])
            pooled = (hidden * weights).sum(1)
        return self.classifier(self.dropout(pooled))

    def to(self, dtype: Any) -> BertForSequenceClassification:
        """All weights in ``dtype`` (float64 for exact comparisons), in place."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
        return self


def _ids(x: Any) -> np.ndarray:
    return np.asarray(x.data if isinstance(x, Tensor) else x.numpy() if hasattr(x, "numpy") else x, dtype=np.int64)


# ----------------------------------------------------------------------------- loading


def from_pretrained(path: str | Path, num_labels: int = 2, pooling: str = "mean") -> BertForSequenceClassification:
    """A BERT classifier from a transformers checkpoint folder (config.json + model.safetensors),
    read with NumPy. A bare encoder (``BertModel``) gets a new classifier; a folder that holds a
    trained head (``BertForSequenceClassification``, or finetune's mean-pooling classifier) loads
    with it, and its pooling."""
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
    except ImportError:  # not one of minigrad's own dependencies (NumPy and SciPy)
        raise ImportError(
            "from_pretrained reads model.safetensors with the safetensors package: pip install safetensors"
        ) from None

    folder = Path(path)
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    if not config_file.is_file() or not weights_file.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint folder: it needs config.json and model.safetensors")
    try:
        settings = json.loads(config_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{config_file} is not valid JSON ({e}): the checkpoint is damaged; save or download it again"
        ) from None
    if settings.get("model_type") == "mean-pooling-classifier":  # finetune's head over a BERT encoder
        num_labels, pooling = len(settings.get("id2label") or {}) or num_labels, "mean"
        settings = settings["encoder"]
    elif any(a.endswith("ForSequenceClassification") for a in settings.get("architectures") or []):
        pooling, num_labels = "cls", len(settings.get("id2label") or {}) or num_labels
    if settings.get("model_type") != "bert":
        raise CheckpointError(f"{folder} holds a {settings.get('model_type')!r} model, not a BERT")
    model = BertForSequenceClassification(BertConfig.from_dict(settings), num_labels, pooling)
    try:
        weights = load_file(str(weights_file))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"{weights_file} cannot be read ({type(e).__name__}: {e}): the file is truncated or "
            "corrupt; save or download the checkpoint again"
        ) from None
    state = {_our_name(k): v for k, v in weights.items() if not k.endswith("position_ids")}
    if model.bert.pooler is None:
        state = {k: v for k, v in state.items() if not k.startswith("bert.pooler.")}
    own = dict(model.named_parameters())
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise CheckpointError(f"{folder}: weights this BERT has no place for: {', '.join(unknown[:3])}")
    missing = sorted(n for n in set(own) - set(state) if not n.startswith(("classifier.", "bert.pooler.")))
    if missing:
        raise CheckpointError(f"{folder} lacks {', '.join(missing[:3])}: not a whole BERT checkpoint")
    for name, value in state.items():
        if value.shape != own[name].shape:
            raise CheckpointError(f"{folder}: {name} has shape {value.shape}, the config says {own[name].shape}")
        own[name].data[...] = value
    return model


def _our_name(key: str) -> str:
    """transformers' parameter name -> this module's: the encoder lives under ``bert.``."""
    for prefix in ("bert.", "encoder."):
        if key.startswith(prefix) and not key.startswith("encoder.layer."):
            return "bert." + key[len(prefix) :]
    return key if key.startswith("classifier.") else "bert." + key

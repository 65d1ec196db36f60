"""The mean-pooling classification head: encoder -> attention-masked mean of the last hidden states
-> dropout -> linear.

This file is self-contained (it imports only torch and transformers) because it travels: both
classes are registered for the Auto classes (``register_for_auto_class``), so ``save_pretrained``
copies this file, as it is, into every run directory and writes ``auto_map`` into config.json.
A Python without finetune then loads a run with
``AutoModelForSequenceClassification.from_pretrained(run, trust_remote_code=True)`` or
``pipeline("text-classification", model=run, trust_remote_code=True)``, and its tokenizer with
``AutoTokenizer.from_pretrained(run, trust_remote_code=True)`` (transformers reads the config to
find it). The config's own class, not BERT's, keeps a client that forgets ``trust_remote_code``
from getting a stock head: it gets an error instead. finetune itself imports
these classes from here (``finetune.model.modeling``) and never runs the copy in a run directory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class MeanPoolingConfig(PretrainedConfig):
    """Config of ``MeanPoolingClassifier``: the encoder's own config plus the head's settings."""

    model_type = "mean-pooling-classifier"

    def __init__(self, encoder: dict | None = None, classifier_dropout: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder or {}
        self.classifier_dropout = classifier_dropout

    def encoder_config(self) -> PretrainedConfig:
        """The encoder's config, as its own class (BertConfig, RobertaConfig ...)."""
        settings = dict(self.encoder)
        return AutoConfig.for_model(settings.pop("model_type"), **settings)


class MeanPoolingClassifier(PreTrainedModel):
    """encoder -> masked mean over tokens -> dropout -> linear: logits (and a loss given labels)."""

    config_class = MeanPoolingConfig
    base_model_prefix = "encoder"

    def __init__(self, config: MeanPoolingConfig) -> None:
        super().__init__(config)
        encoder_config = config.encoder_config()
        self.encoder = without_pooler(AutoModel.from_config(encoder_config))
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(encoder_config.hidden_size, config.num_labels)
        self.post_init()  # draws what the encoder did not: the classifier, normal(0, 0.02) and zero bias

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **inputs: Any,
    ) -> SequenceClassifierOutput:
        """Logits over the labels (one score for regression), and the loss when ``labels`` are given."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {k: v for k, v in inputs.items() if k in ("token_type_ids", "position_ids", "inputs_embeds")}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **inputs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        logits = self.classifier(self.dropout(pooled))
        return SequenceClassifierOutput(loss=classification_loss(logits, labels, self.config), logits=logits)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor | None, config: PretrainedConfig) -> Any:
    """Cross-entropy for classes, mean squared error for regression (STS-B), as the stock heads."""
    if labels is None:
        return None
    if config.num_labels == 1:
        return nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return nn.functional.cross_entropy(logits, labels)


def without_pooler(encoder: PreTrainedModel) -> PreTrainedModel:
    """Drop BERT-style [CLS] poolers: the mean head does not use them (and unused weights
    would trouble distributed training)."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


# save_pretrained copies this file beside the weights and names the classes in config.json's auto_map
MeanPoolingConfig.register_for_auto_class()
MeanPoolingClassifier.register_for_auto_class("AutoModelForSequenceClassification")

"""Shared test set-up: hypothesis profiles, the opt-in slow marker, and data-dependent skips."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run long tests (full MRPC epochs)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long run: opt in with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


GLUE_DIR_DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue")


@pytest.fixture(scope="session")
def glue_dir() -> str:
    """The GLUE root ($GLUE_DIR, else ../shared/data/glue). Skipped when absent, with the reason
    shown, unless REQUIRE_DATA=1 (as CI sets), where a missing data folder fails the test."""
    path = os.environ.get("GLUE_DIR") or GLUE_DIR_DEFAULT
    if not os.path.isdir(os.path.join(path, "MRPC")):
        message = f"GLUE data not found at {path!r}: set GLUE_DIR to a GLUE-layout folder"
        if os.environ.get("REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _save_tiny(model_type: str, directory: str, dropout: bool = True) -> str:
    """A tiny randomly initialised model with the default checkpoint's tokenizer (BERT's vocab).
    Dropout stays at the architecture's default (0.1): resume and determinism must hold with it.
    Its weights are drawn from a seed of their own, not from the global RNG whose state depends on
    the tests that ran before: the same model whatever the order of the suite."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from finetune.model.modeling import default_model_path

    small = {
        "bert": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64),
        "roberta": dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                        pad_token_id=0, bos_token_id=101, eos_token_id=102),
        "distilbert": dict(dim=32, n_layers=4, n_heads=2, hidden_dim=64),
    }[model_type]  # fmt: skip
    config = AutoConfig.for_model(model_type, vocab_size=30522, max_position_embeddings=512, **small)
    if not dropout:
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if hasattr(config, key):
                setattr(config, key, 0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModel.from_config(config)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths of tiny random BERT, RoBERTa and DistilBERT checkpoints (fast to train)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {t: _save_tiny(t, str(root / t)) for t in ("bert", "roberta", "distilbert")}


@pytest.fixture(scope="session")
def tiny_bert_without_dropout(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny BERT with every dropout at 0, only for claims about arithmetic that dropout would
    blur on purpose (two processes' averaged gradients equal one process's)."""
    return _save_tiny("bert", str(tmp_path_factory.mktemp("tiny-no-dropout") / "bert"), dropout=False)

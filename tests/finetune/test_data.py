"""GLUE data built from the original files equals the Hub's; tokenization and dynamic padding."""

import os
import shutil

import pytest
from datasets import ClassLabel, Value

from finetune.data.glue import DataError, load_glue, make_collator, tokenize_glue
from finetune.model.modeling import default_model_path, load_tokenizer


@pytest.fixture(scope="module")
def mrpc(glue_dir):
    return load_glue("mrpc", glue_dir)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(default_model_path())


def test_mrpc_matches_the_hub_layout(mrpc):
    assert {k: len(v) for k, v in mrpc.items()} == {"train": 3668, "validation": 408, "test": 1725}
    features = mrpc["train"].features
    assert list(features) == ["sentence1", "sentence2", "label", "idx"]
    assert features["label"] == ClassLabel(names=["not_equivalent", "equivalent"])
    assert features["idx"] == Value("int32") and features["sentence1"] == Value("string")
    first = mrpc["train"][0]
    assert first["sentence1"].startswith('Amrozi accused his brother , whom he called " the witness "')
    assert first["sentence2"].startswith('Referring to him as only " the witness " , Amrozi accused his brother')
    assert first["label"] == 1 and first["idx"] == 0
    assert mrpc["train"][1]["sentence1"].startswith("Yucaipa owned Dominick 's before selling the chain")
    assert mrpc["train"][1]["label"] == 0
    assert mrpc["validation"][0]["sentence1"].startswith("He said the foodservice pie business doesn 't fit")
    assert mrpc["validation"][0]["label"] == 1
    assert mrpc["test"][0]["sentence1"].startswith("PCCW 's chief operating officer , Mike Butcher , and Alex Arena")
    assert mrpc["test"][0]["label"] == 1
    assert [r["idx"] for r in mrpc["validation"].select(range(3))] == [0, 1, 2]
    assert sum(mrpc["train"]["label"]) == 2474 and sum(mrpc["test"]["label"]) == 1147


def test_sst2_and_cola_load_with_hub_features(glue_dir):
    sst2 = load_glue("sst2", glue_dir)
    assert {k: len(v) for k, v in sst2.items()} == {"train": 67349, "validation": 872, "test": 1821}
    assert sst2["train"].features["label"] == ClassLabel(names=["negative", "positive"])
    assert set(sst2["test"]["label"]) == {-1}
    cola = load_glue("cola", glue_dir)
    assert {k: len(v) for k, v in cola.items()} == {"train": 8551, "validation": 1043, "test": 1063}
    assert cola["train"][0] == {
        "sentence": "Our friends won't buy this analysis, let alone the next one we propose.",
        "label": 1,
        "idx": 0,
    }
    assert cola["test"][0]["sentence"] == "Bill whistled past the house." and cola["test"][0]["label"] == -1


def test_tokenization_of_a_pair_is_exact(tokenizer):
    enc = tokenizer("This is the first sentence.", "This is the second one.")
    assert enc["input_ids"] == [101, 2023, 2003, 1996, 2034, 6251, 1012, 102, 2023, 2003, 1996, 2117, 2028, 1012, 102]
    assert enc["token_type_ids"] == [0] * 8 + [1] * 7


def test_tokenized_mrpc_and_dynamic_padding(mrpc, tokenizer):
    tokenized = tokenize_glue(mrpc, tokenizer, "mrpc")
    assert set(tokenized["train"].column_names) == {"labels", "input_ids", "token_type_ids", "attention_mask"}
    first8 = tokenized["train"].select(range(8))
    assert [len(ids) for ids in first8["input_ids"]] == [50, 59, 47, 67, 59, 50, 62, 32]
    batch = make_collator(tokenizer)([first8[i] for i in range(8)])
    assert tuple(batch["input_ids"].shape) == (8, 67)
    assert tuple(batch["attention_mask"].shape) == (8, 67) and batch["labels"].tolist() == first8["labels"]
    padded = tokenize_glue(mrpc, tokenizer, "mrpc", max_length=128, pad_to_max_length=True)
    assert {len(ids) for ids in padded["validation"]["input_ids"]} == {128}


def test_missing_data_dir_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="no MRPC/ folder.*--data-dir"):
        load_glue("mrpc", tmp_path)


def test_offline_without_a_directory_says_how_to_point_at_files(monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="Hub is offline.*--data-dir"):
        load_glue("mrpc")


def test_malformed_file_names_the_line(glue_dir, tmp_path):
    shutil.copytree(os.path.join(glue_dir, "MRPC"), tmp_path / "MRPC")
    path = tmp_path / "MRPC" / "msr_paraphrase_train.txt"
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    lines[3] = "1\t123\tonly three fields"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"msr_paraphrase_train.txt:4: expected 5 tab-separated fields"):
        load_glue("mrpc", tmp_path)

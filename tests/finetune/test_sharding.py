"""Beyond one machine: two torchrun "nodes" on 127.0.0.1 train exactly as one node with two
processes, and ``--fsdp`` (FSDP2 over gloo on the CPU) trains exactly as plain data parallelism
with every freezing strategy, leaves frozen weights alone, saves an ordinary model directory and
resumes exactly after a SIGKILL mid-epoch; misuse is one line before any work."""

import dataclasses
import io
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from finetune.cli import main
from finetune.errors import ConfigError
from finetune.run.checkpoint import check_no_code, is_complete, list_checkpoints

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun() -> str:
    path = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert path, "torchrun is installed with torch"
    return path


def train_args(model, glue_dir, out, *extra, samples=64):
    return [
        "-m", "finetune", "train", "--model", model, "--data-dir", glue_dir, "--output-dir", str(out),
        "--loop", "accelerate", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--warmup-ratio", "0",
        "--max-train-samples", str(samples), "--max-eval-samples", "37", "--seed", "3", "--no-progress",
        "--no-group-by-length", "--mixed-precision", "no", *extra,  # a later --mixed-precision wins
    ]  # fmt: skip


def run(command, cwd):
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def one_node(args, cwd):
    return run([torchrun(), "--nproc_per_node", "2", "--master_port", str(free_port()), *args], cwd)


def weights(out):
    return load_file(str(out / "model.safetensors"))


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def test_two_nodes_on_loopback_equal_one_node_with_two_processes(tiny_bert_without_dropout, glue_dir, tmp_path):
    port = free_port()
    nodes = []
    for rank in (0, 1):  # each "node" is a torchrun of its own, as on two machines
        command = [torchrun(), "--nnodes", "2", "--node_rank", str(rank), "--nproc_per_node", "1",
                   "--master_addr", "127.0.0.1", "--master_port", str(port),
                   *train_args(tiny_bert_without_dropout, glue_dir, tmp_path / "two-nodes")]  # fmt: skip
        nodes.append(
            subprocess.Popen(command, env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    one_node(train_args(tiny_bert_without_dropout, glue_dir, tmp_path / "one-node"), tmp_path)

    two, one = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("two-nodes", "one-node"))
    assert (two["world_size"], two["distributed_type"]) == (2, "MULTI_CPU")
    assert two["batches_seen_per_process"] == one["batches_seen_per_process"] == 64 // 16 * 2
    assert_same_weights(weights(tmp_path / "two-nodes"), weights(tmp_path / "one-node"), atol=0)
    assert two["validation"] == one["validation"]


@pytest.mark.parametrize(
    ("strategy", "mode", "precision", "accumulation", "atol"),
    [
        ("partial", "full_shard", "no", 1, 1e-5),
        ("full", "shard_grad_op", "no", 2, 1e-5),
        ("head", "full_shard", "no", 1, 1e-5),
        ("partial", "full_shard", "bf16", 1, 1e-2),
    ],  # bf16: FSDP computes and reduces in it, DDP autocasts
)
def test_fsdp_trains_as_plain_data_parallel(
    tiny_bert_without_dropout, glue_dir, tmp_path, strategy, mode, precision, accumulation, atol
):
    model = tiny_bert_without_dropout
    args = ["--strategy", strategy, "--mixed-precision", precision, "--grad-accum-steps", str(accumulation)]
    one_node(train_args(model, glue_dir, tmp_path / "fsdp", *args, "--fsdp", mode), tmp_path)
    one_node(train_args(model, glue_dir, tmp_path / "ddp", *args), tmp_path)

    results = json.loads((tmp_path / "fsdp" / "results.json").read_text())
    assert (results["world_size"], results["distributed_type"], results["config"]["fsdp"]) == (2, "FSDP", mode)
    sharded, plain = weights(tmp_path / "fsdp"), weights(tmp_path / "ddp")
    assert_same_weights(sharded, plain, atol=atol)
    # an ordinary save_pretrained directory: full tensors, and frozen ones as they were loaded
    initial = load_file(os.path.join(model, "model.safetensors"))
    frozen = {"partial": ["embeddings.", "encoder.layer.0.", "encoder.layer.1."], "head": [""], "full": []}[strategy]
    checked = [key for key in initial if f"encoder.{key}" in sharded and any(map(key.startswith, frozen))]
    assert len(checked) >= len(frozen)
    for key in checked:
        assert torch.equal(sharded[f"encoder.{key}"], initial[key]), key


def start_workers(args, world_size, cwd):
    """The processes torchrun would start, started here, so that a SIGKILL reaches each of them."""
    env = {**ENV, "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    workers = []
    for rank in range(world_size):
        rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        workers.append(
            subprocess.Popen(
                [sys.executable, *args], env=rank_env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    return workers


def test_fsdp_resumes_exactly_after_a_sigkill_mid_epoch(tiny_models, glue_dir, tmp_path):
    def args(out, *extra):  # dropout on: each rank's RNG must resume too; 5 steps an epoch
        return train_args(tiny_models["bert"], glue_dir, out, "--strategy", "partial", "--fsdp", "full_shard",
                          "--save-steps", "3", *extra, samples=80)  # fmt: skip

    one_node(args(tmp_path / "whole"), tmp_path)
    workers = start_workers(args(tmp_path / "cut", "--logging-steps", "1"), 2, tmp_path)
    deadline = time.time() + 300
    while not any(s >= 3 and is_complete(p) for s, p in list_checkpoints(tmp_path / "cut")):
        assert time.time() < deadline and all(w.poll() is None for w in workers), "no checkpoint-3 in time"
        time.sleep(0.02)
    for worker in workers:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    assert not (tmp_path / "cut" / "results.json").exists()
    assert (tmp_path / "cut" / "checkpoint-3" / "sharded" / ".metadata").is_file()  # torch.distributed.checkpoint
    one_node(args(tmp_path / "cut", "--logging-steps", "1", "--resume-from-checkpoint", "latest"), tmp_path)

    assert_same_weights(weights(tmp_path / "whole"), weights(tmp_path / "cut"), atol=1e-6)
    whole, cut = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("whole", "cut"))
    assert cut["resumed_from"] and whole["validation"] == pytest.approx(cut["validation"], abs=1e-6)
    check_tampered_shards_are_refused(tmp_path / "cut" / "checkpoint-3", tmp_path)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo ran",))


def check_tampered_shards_are_refused(checkpoint, tmp_path):
    """torch.distributed.checkpoint unpickles its index and non-tensor values without restriction:
    an edited one is refused before resuming (``check_no_code``), whichever of the two it is."""
    for part in ("index", "value"):
        copy = tmp_path / f"tampered-{part}"
        shutil.copytree(checkpoint, copy)
        index = copy / "sharded" / ".metadata"
        metadata = pickle.loads(index.read_bytes())
        if part == "index":
            metadata.storage_meta = RunsCode()
        else:  # one optimizer hyperparameter replaced by a pickle that calls a function
            key = next(k for k in metadata.storage_data if k.fqn.endswith("param_groups.0.lr"))
            payload = io.BytesIO()
            torch.save(RunsCode(), payload)
            shard = copy / "sharded" / metadata.storage_data[key].relative_path
            offset = shard.stat().st_size
            shard.write_bytes(shard.read_bytes() + payload.getvalue())
            metadata.storage_data[key] = dataclasses.replace(
                metadata.storage_data[key], offset=offset, length=len(payload.getvalue())
            )
        index.write_bytes(pickle.dumps(metadata))
        with pytest.raises(ConfigError, match="holds more than tensors and numbers"):
            check_no_code(copy)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--loop", "native", "--fsdp", "full_shard"],
            "--fsdp full_shard shards over several processes: use --loop accelerate (or trainer) under torchrun",
        ),
        (["--loop", "accelerate", "--fsdp", "hybrid"], "unknown --fsdp 'hybrid': choose full_shard or shard_grad_op"),
    ],
)
def test_fsdp_misuse_is_one_line_before_any_work(tmp_path, capsys, extra, message):
    assert main(["train", "--output-dir", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_fsdp_in_one_process_says_there_is_nothing_to_shard(tiny_models, glue_dir, tmp_path):
    done = run([sys.executable, *train_args(tiny_models["bert"], glue_dir, tmp_path / "one", "--fsdp", "full_shard",
                                            "--epochs", "1")], tmp_path)  # fmt: skip
    assert "--fsdp full_shard: one process has nothing to shard, training without it (launch several:" in done.stdout
    assert json.loads((tmp_path / "one" / "results.json").read_text())["distributed_type"] == "NO"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without a GPU")
def test_the_trainer_refuses_fsdp_without_a_gpu_in_one_line(tmp_path, capsys):
    assert main(["train", "--output-dir", str(tmp_path / "run"), "--loop", "trainer", "--fsdp", "full_shard"]) == 2
    err = capsys.readouterr().err
    assert "--fsdp full_shard with --loop trainer needs a CUDA GPU" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_the_trainer_gets_fsdp2_per_encoder_layer(tiny_models, tmp_path):
    """What the Trainer is handed on a GPU, built here: Accelerate's FSDP2 plugin settings."""
    from finetune.config import TrainConfig
    from finetune.data.tasks import get_task
    from finetune.loops.trainer import training_arguments
    from finetune.model.modeling import load_model
    from finetune.model.sharding import trainer_arguments

    model = load_model(tiny_models["bert"], get_task("mrpc"))
    cfg = TrainConfig(loop="trainer", lr=1e-3, epochs=1, batch_size=8, warmup_ratio=0.0)
    settings = cfg.loop_settings()
    args = training_arguments(settings, str(tmp_path), torch.device("cpu"), trainer_arguments("shard_grad_op", model))
    assert args.fsdp_plugin_args == {
        "fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_cls_names_to_wrap": "BertLayer",
        "cpu_ram_efficient_loading": False, "state_dict_type": "SHARDED_STATE_DICT", "reshard_after_forward": False,
    }  # fmt: skip

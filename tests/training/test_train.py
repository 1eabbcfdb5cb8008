"""`mmp train`: DeepSpeed prompt training in one and two processes, and resume after SIGKILL."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmp_core.config import TrainParams
from mmp_core.model.precision import bf16_native, resolve_precision
from mmp_core.model.prompts import ADAPTER_WEIGHTS_NAME, MissingAwarePromptModel
from mmp_core.training.budget import step_budget, validation_interval
from mmp_core.training.deepspeed_setup import deepspeed_config, parameter_groups
from tests.model_fixtures import REPO, make_workspace, mmp_env, run_mmp, write_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("train"))


def train_args(root: Path, method: str, out: str, params: Path) -> list[str]:
    return [
        "train", "--method", method, "--prepared", str(root / "prepared"), "--out", str(root / out),
        "--params", str(params), "--checkpoint-dir", str(root / f"{out}.ckpt"),
    ]  # fmt: skip


def adapter_tensors(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(directory / "adapter" / ADAPTER_WEIGHTS_NAME)


def test_train_writes_best_adapter_curve_and_summary(workspace):
    params = write_params(workspace / "params.yaml", workspace / "backbone")
    result = run_mmp(train_args(workspace, "input", "single", params), workspace)
    out = workspace / "single"
    summary = json.loads((out / "train_summary.json").read_text())
    # 96 samples / micro batch 8 = 12 micro-batches = 6 optimizer steps per epoch, 3 epochs.
    assert summary["steps"] == 18 and summary["world_size"] == 1
    assert len(summary["history"]) == 6  # validated twice per epoch
    best = max(h["f1_macro"] for h in summary["history"])
    assert summary["best_val_f1_macro"] == best
    assert summary["best_step"] == next(h["step"] for h in summary["history"] if h["f1_macro"] == best)
    assert "[input] best val f1_macro" in result.stdout

    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["training"]["step"] == summary["best_step"]
    assert config["prompt_config"]["prompt_type"] == "input"
    from mmp_core.model.backbone import load_backbone

    model = MissingAwarePromptModel.from_pretrained(load_backbone(str(workspace / "backbone")), out / "adapter")
    assert model.prompts.shape == (3, 3, 6, 32)
    metrics = json.loads((out / "dvclive" / "metrics.json").read_text())
    assert metrics["step"] == 18 and "f1_macro" in metrics["val"]
    assert not (workspace / "single.ckpt").exists(), "checkpoints are scratch: removed after success"


def test_two_processes_agree_and_only_rank_zero_writes(workspace):
    params = write_params(workspace / "params2.yaml", workspace / "backbone", epochs=2)
    port = str(29400 + os.getpid() % 500)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
        "-m", "mmp_core.cli", *train_args(workspace, "attention", "ddp", params),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=workspace, env=mmp_env(workspace), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    summary = json.loads((workspace / "ddp" / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    hashes = summary["rank_parameter_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    # 96 samples over 2 ranks: 48 each, 6 micro-batches of 8, accumulation 1 -> 6 steps per epoch.
    assert summary["steps"] == 12
    assert result.stdout.count("best val f1_macro") == 1, "only rank 0 reports"
    written = sorted(p.name for p in (workspace / "ddp").iterdir())
    assert written == ["adapter", "dvclive", "train_summary.json"]


@pytest.mark.slow(seconds=20)
def test_two_nodes_rendezvous_and_end_with_one_adapter(workspace):
    """Two "nodes" on 127.0.0.1, one process each, as on two GPU machines (`torchrun --nnodes 2 --node-rank R`);
    the folders are shared, as a multi-node job's are (its checkpoints need a shared filesystem)."""
    params = write_params(workspace / "params-nodes.yaml", workspace / "backbone", epochs=1)
    port = str(28400 + os.getpid() % 500)

    def node(rank: int) -> subprocess.Popen:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
            "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port,
            "-m", "mmp_core.cli", *train_args(workspace, "input", "nodes", params),
        ]  # fmt: skip
        return subprocess.Popen(
            command, cwd=workspace, env=mmp_env(workspace), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    nodes = [node(0), node(1)]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr[-5000:]
    summary = json.loads((workspace / "nodes" / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    hashes = summary["rank_parameter_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1], "both nodes end with the same trained tensors"
    assert outputs[0][0].count("best val f1_macro") == 1 and "best val" not in outputs[1][0], "rank 0 reports"


def test_deepspeed_launcher_two_processes(workspace):
    params = write_params(workspace / "params3.yaml", workspace / "backbone", epochs=1)
    port = str(29900 + os.getpid() % 90)
    deepspeed = Path(sys.executable).with_name("deepspeed")
    command = [
        str(deepspeed), "--num_gpus", "2", "--master_port", port, "--module", "mmp_core.cli",
        *train_args(workspace, "baseline", "ds", params),
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, cwd=workspace, env=mmp_env(workspace), capture_output=True, text=True, timeout=600
        )
    finally:
        # The launcher's all-reduce buffers stay in /dev/shm (named after the port): ours only.
        for leftover in glob.glob(f"/dev/shm/deepspeed_allreduce_buffer_*{port}*"):
            os.unlink(leftover)
    assert result.returncode == 0, result.stderr[-5000:]
    summary = json.loads((workspace / "ds" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and len(set(summary["rank_parameter_hashes"])) == 1


@pytest.mark.slow(seconds=25)
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(workspace):
    params = write_params(workspace / "params4.yaml", workspace / "backbone", epochs=3, val_per_epoch=3)
    run_mmp(train_args(workspace, "input", "whole", params), workspace)

    checkpoints = workspace / "killed.ckpt"
    process = subprocess.Popen(
        [sys.executable, "-m", "mmp_core.cli", *train_args(workspace, "input", "killed", params)],
        cwd=workspace,
        env=mmp_env(workspace),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not (checkpoints / "latest").is_file():
            assert process.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (workspace / "killed" / "train_summary.json").exists(), "the run was killed before it finished"
    first_tag = (checkpoints / "latest").read_text().strip()

    # Resume into another output folder, the first one gone (as `dvc repro` removes a stage's outputs): the
    # best adapter so far lives in the checkpoint and is delivered even if no later step beats it.
    shutil.rmtree(workspace / "killed", ignore_errors=True)
    args = train_args(workspace, "input", "resumed", params)
    args[args.index("--checkpoint-dir") + 1] = str(checkpoints)
    result = run_mmp(args, workspace)
    assert "resuming at step" in result.stderr
    whole = json.loads((workspace / "whole" / "train_summary.json").read_text())
    resumed = json.loads((workspace / "resumed" / "train_summary.json").read_text())
    assert resumed["adapter"] == str(workspace / "resumed" / "adapter")
    config = json.loads((workspace / "resumed" / "adapter" / "adapter_config.json").read_text())
    assert config["training"]["step"] == resumed["best_step"]
    assert not checkpoints.exists(), "scratch goes once the adapter is delivered"
    assert int(first_tag.removeprefix("step")) < resumed["steps"], "killed mid-run, not at the end"
    # The guarantee is equality up to the last bits of torch's multi-threaded CPU reductions (two fresh runs
    # with 2 threads already differ by ~1e-7): within 1e-5, and the same validation history and best step.
    assert [h["step"] for h in resumed["history"]] == [h["step"] for h in whole["history"]]
    for ours, theirs in zip(resumed["history"], whole["history"], strict=True):
        assert ours == pytest.approx(theirs, abs=1e-3)
    assert resumed["best_step"] == whole["best_step"]
    expected, actual = adapter_tensors(workspace / "whole"), adapter_tensors(workspace / "resumed")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-5, msg=f"{name} after resume")


def test_one_thread_runs_are_bitwise_reproducible(workspace):
    # What "reproducible run" means on a CPU: the same inputs at one intra-op thread give the same adapter to the
    # bit (with several threads torch splits float sums differently from run to run; docs/method.md).
    params = write_params(workspace / "params_repro.yaml", workspace / "backbone", epochs=1)
    env = {**mmp_env(workspace), "OMP_NUM_THREADS": "1"}
    for out in ("repro-a", "repro-b"):
        run_mmp(train_args(workspace, "attention", out, params), workspace, env=env)
    first, second = adapter_tensors(workspace / "repro-a"), adapter_tensors(workspace / "repro-b")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first), "two one-thread runs differ"
    summaries = [json.loads((workspace / out / "train_summary.json").read_text()) for out in ("repro-a", "repro-b")]
    assert summaries[0]["history"] == summaries[1]["history"]
    assert summaries[0]["training_fingerprint"] == summaries[1]["training_fingerprint"]


def test_stale_checkpoints_of_other_parameters_are_not_resumed(workspace):
    params = write_params(workspace / "params5.yaml", workspace / "backbone", epochs=1)
    stale = workspace / "fresh.ckpt"
    stale.mkdir()
    (stale / "run.json").write_text(json.dumps({"training_fingerprint": "something-else"}))
    (stale / "latest").write_text("step00000003")
    result = run_mmp(train_args(workspace, "baseline", "fresh", params), workspace)
    assert "made with other parameters or data" in result.stderr
    assert "starting fresh" in result.stderr


def test_bad_inputs_are_clear_errors(workspace):
    params = write_params(workspace / "bad.yaml", workspace / "backbone", batch_size=7)
    result = subprocess.run(
        [sys.executable, "-m", "mmp_core.cli", *train_args(workspace, "input", "bad", params)],
        cwd=workspace, env=mmp_env(workspace), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "effective_batch_size 16 must be a multiple of batch_size 7" in result.stderr
    assert "Traceback" not in result.stderr
    shutil.rmtree(workspace / "bad", ignore_errors=True)


def test_deepspeed_config_fills_batch_sizes_from_params():
    params = TrainParams(batch_size=8, effective_batch_size=64)
    config = deepspeed_config("infra/deepspeed/zero2.json", params.model_copy(update={"precision": "bf16"}), 2)
    assert config["train_micro_batch_size_per_gpu"] == 8
    assert config["gradient_accumulation_steps"] == 4
    assert config["train_batch_size"] == 64
    assert config["zero_optimization"]["stage"] == 2 and config["bf16"]["enabled"]
    assert config["data_types"] == {"grad_accum_dtype": "fp32"}, "bf16 accumulates gradients in fp32"
    stage0 = deepspeed_config("infra/deepspeed/zero0.json", params.model_copy(update={"precision": "bf16"}), 2)
    assert stage0["zero_optimization"]["stage"] == 1, "fp32 gradients under bf16 need DeepSpeed's ZeRO optimizer"
    fp32 = deepspeed_config("infra/deepspeed/zero0.json", params.model_copy(update={"precision": "fp32"}), 2)
    assert fp32["zero_optimization"]["stage"] == 0 and "data_types" not in fp32
    assert not any(key.startswith("_") for key in config)
    with pytest.raises(ValueError, match="not a multiple of batch_size x processes"):
        deepspeed_config("infra/deepspeed/zero0.json", TrainParams(batch_size=8, effective_batch_size=8), 2)
    with pytest.raises(FileNotFoundError, match="DeepSpeed config not found"):
        deepspeed_config("infra/deepspeed/nope.json", params, 1)


def test_parameter_groups_decay_weights_and_prompts_not_biases_or_norms():
    from mmp_core.model.backbone import load_backbone
    from mmp_core.model.prompts import MissingAwarePromptConfig

    model = MissingAwarePromptModel(load_backbone("small:tiny"), MissingAwarePromptConfig("multilabel", 5))
    decay, no_decay = parameter_groups(model, 0.02)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decayed == {"prompts", "pooler.dense.weight", "head.0.weight", "head.3.weight"}
    assert {names[id(p)] for p in no_decay["params"]} == {
        "pooler.dense.bias", "head.0.bias", "head.1.weight", "head.1.bias", "head.3.bias",
    }  # fmt: skip
    assert decay["weight_decay"] == 0.02 and no_decay["weight_decay"] == 0.0


def test_budget_is_in_steps_with_a_floor_and_a_cap():
    params = TrainParams(epochs=8, min_steps=1000, max_steps=5000)
    assert step_budget(10, params) == 1000, "a small dataset trains up to the floor"
    assert step_budget(200, params) == 1600, "a large one for its epochs"
    assert step_budget(1000, params) == 5000, "and never past the cap"
    assert step_budget(10, TrainParams(epochs=8, min_steps=1)) == 80, "min_steps 1: epochs alone, as in the paper"
    with pytest.raises(ValueError, match="max_steps 10 is below min_steps 2000"):
        TrainParams(max_steps=10)


def test_validations_per_epoch_but_at_most_fifty_in_all():
    assert validation_interval(23, 23 * 8, 5) == 5
    assert validation_interval(3, 1000, 2) == 20, "tiny epochs: 50 validations over the budget, not 666"


@pytest.mark.parametrize(("stage", "precision"), [("zero2", "bf16"), ("zero0", "bf16"), ("zero2", "fp32")])
def test_other_deepspeed_configs_train(workspace, stage, precision):
    name = f"{stage}-{precision}"
    params = write_params(
        workspace / f"{name}.yaml",
        workspace / "backbone",
        epochs=1,
        deepspeed_config=f"infra/deepspeed/{stage}.json",
        precision=precision,
    )
    run_mmp(train_args(workspace, "input", name, params), workspace)
    summary = json.loads((workspace / name / "train_summary.json").read_text())
    assert summary["steps"] == 6 and len(summary["history"]) == 2
    assert summary["precision"] == precision
    tensors = adapter_tensors(workspace / name)
    assert tensors["prompts"].dtype == torch.float32, "adapters are saved in fp32 whatever the training precision"
    assert all(torch.isfinite(t).all() for t in tensors.values())
    if precision == "bf16":
        # The optimizer's fp32 master weights, not the module's bf16 copy: updates of size lr x 1e-3 move
        # the masters by amounts a bf16 rounding would lose.
        head = tensors["head.0.weight"]
        assert not torch.equal(head, head.bfloat16().float()), "adapter holds bf16 roundings, not fp32 masters"


def test_single_process_training_compiles_no_deepspeed_op(workspace, tmp_path):
    """A first `mmp train` on a machine must not JIT-build DeepSpeed's shared-memory op (about a minute)."""
    extensions = tmp_path / "torch_extensions"
    params = write_params(workspace / "noop.yaml", workspace / "backbone", epochs=1)
    result = run_mmp(
        train_args(workspace, "baseline", "no-op-build", params),
        workspace,
        env={**mmp_env(workspace), "TORCH_EXTENSIONS_DIR": str(extensions)},
    )
    assert "built successfully" not in result.stdout + result.stderr
    assert not extensions.exists() or not any(extensions.rglob("*.so")), list(extensions.rglob("*"))


def test_precision_is_set_in_one_place():
    params = TrainParams(batch_size=8, effective_batch_size=8)
    assert deepspeed_config("infra/deepspeed/zero0.json", params.model_copy(update={"precision": "fp32"}), 1)[
        "bf16"
    ] == {"enabled": False}
    auto = deepspeed_config("infra/deepspeed/zero0.json", params, 1)["bf16"]["enabled"]
    assert auto == (resolve_precision("auto") == "bf16")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu", hidden_size=32) == "bf16"
    if bf16_native("cpu"):  # on a CPU bf16 pays from hidden size 512 (bench/bench_pipeline.py)
        assert resolve_precision("auto", "cpu", hidden_size=128) == "fp32"
        assert resolve_precision("auto", "cpu", hidden_size=768) == "bf16"
    else:
        assert resolve_precision("auto", "cpu", hidden_size=768) == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16")


def test_a_deepspeed_config_with_its_own_precision_is_refused(tmp_path):
    config = json.loads((REPO / "infra/deepspeed/zero0.json").read_text())
    config["bf16"] = {"enabled": True}
    (tmp_path / "mine.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"precision is train\.precision"):
        deepspeed_config(tmp_path / "mine.json", TrainParams(batch_size=8, effective_batch_size=8), 1)

"""DDP training (train/distributed.py): the sampler split, the launcher's checks, and a real
2-process gloo run on the CPU that reaches the single-process adapter weights."""

from __future__ import annotations

import json
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from edge_runtime.cli import main  # noqa: E402
from edge_runtime.errors import ConfigError  # noqa: E402
from tests.train.helpers import (  # noqa: E402
    ATOL,
    cli_subprocess,
    max_weight_diff,
    synth_data,
    train_argv,
    train_single_and_ddp,
)
from train.distributed import DistContext, epoch_sampler, launch_command, local_batch_size  # noqa: E402


@pytest.mark.parametrize("n, world, batch", [(8, 2, 4), (12, 3, 6), (16, 4, 8)])
def test_local_batches_of_all_ranks_make_the_single_process_batch(n, world, batch):
    data = list(range(n))
    for epoch in (1, 2):
        single = list(epoch_sampler(data, 7, epoch, DistContext()))
        per_rank = [list(epoch_sampler(data, 7, epoch, DistContext(world, r, r))) for r in range(world)]
        local = batch // world
        for k in range(n // batch):
            union = sorted(i for r in range(world) for i in per_rank[r][k * local : (k + 1) * local])
            assert union == sorted(single[k * batch : (k + 1) * batch])
    # and the order really depends on the epoch
    assert list(epoch_sampler(data, 7, 1, DistContext())) != list(epoch_sampler(data, 7, 2, DistContext()))


def test_global_batch_must_split_evenly():
    assert local_batch_size(8, DistContext(4, 0, 0)) == 2
    with pytest.raises(ConfigError, match="multiple of the 3 processes"):
        local_batch_size(8, DistContext(3, 0, 0))


def test_launch_command_is_torchrun_on_train_ddp():
    cmd = launch_command(8, ["--data", "d", "--out", "o"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=8" in cmd and cmd[cmd.index("-m", 3) :][:2] == ["-m", "train.ddp"]
    with pytest.raises(ConfigError):
        launch_command(0, [])


def test_worker_entry_refuses_to_run_outside_torchrun(monkeypatch, capsys):
    from train import ddp

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ddp.main(["--data", "x"]) == 2
    assert "torchrun" in capsys.readouterr().err


def test_nproc_that_does_not_split_the_batch_is_one_line(tiny_clip_dir, tmp_path, capsys):
    extra = ("--nproc", "3", "--set", "optim.batch_size=4", "--device", "cpu")
    rc = main(train_argv(tmp_path, tiny_clip_dir, tmp_path / "r", *extra, quick=False))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "multiple of the 3 processes" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_nproc_inside_torchrun_is_refused(tiny_clip_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    rc = main(train_argv(tmp_path, tiny_clip_dir, tmp_path / "r", "--nproc", "2", "--device", "cpu", quick=False))
    assert rc == 2 and "inside torchrun" in capsys.readouterr().err


@pytest.mark.slow
def test_two_gloo_processes_reach_the_single_process_weights(tiny_clip_dir, tmp_path):
    from safetensors.torch import load_file

    data = synth_data(tmp_path / "data")
    single, multi = train_single_and_ddp(data, tiny_clip_dir, tmp_path)
    for name in ("adapter_model.safetensors", "head.safetensors"):
        diff = max_weight_diff(single / "adapters/epoch_001", multi / "adapters/epoch_001", name)
        print(f"{name}: 1 vs 2 processes, max |diff| {diff:.3g}")
        assert diff <= ATOL, f"{name}: max |diff| {diff:.3g}"
    lora = load_file(str(single / "adapters/epoch_001/adapter_model.safetensors"))
    assert max(float(v.abs().max()) for k, v in lora.items() if "lora_B" in k) > 0  # it really trained
    m1 = json.loads((single / "metrics.jsonl").read_text())
    m2 = json.loads((multi / "metrics.jsonl").read_text())
    assert m2["images"] == m1["images"] == 8 and abs(m2["loss"] - m1["loss"]) <= 1e-5
    # rank 0 alone wrote the run folder: one metrics line, one log
    assert len((multi / "metrics.jsonl").read_text().splitlines()) == 1
    assert "DDP: 2 processes, backend gloo" in (multi / "train.log").read_text()

    # resumable: both continue to epoch 2 from their checkpoints and still agree
    assert main(["train", "--data", str(data), "--out", str(single), "--resume", "--epochs", "2", "--no-progress"]) == 0
    proc = cli_subprocess(
        "train", "--data", data, "--out", multi, "--resume", "--epochs", "2", "--no-progress", "--nproc", "2"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        max_weight_diff(single / "adapters/epoch_002", multi / "adapters/epoch_002", "adapter_model.safetensors")
        <= ATOL
    )
    assert max_weight_diff(multi / "adapters/epoch_001", multi / "adapters/epoch_002", "adapter_model.safetensors") > 0

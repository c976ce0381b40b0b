"""multi_gpu_train.json: DistributedDataParallel under torchrun, two CPU processes with gloo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_train_overrides, torchrun_train


@pytest.mark.parametrize("bundle, patience", [("medsegdiff", 10), ("segdiff", 0)])
def test_torchrun_two_processes_gloo(bundle: str, patience: int, tiny_datalist: str, tmp_path: Path) -> None:
    """Also with early stopping off: rank 0's checkpoint handlers must not wait on a collective call that
    rank 1 never makes (multi_gpu_train.json synchronises the ranks once after the process group starts)."""
    overrides = tiny_train_overrides(bundle, tiny_datalist, str(tmp_path))
    overrides.pop("device")  # multi_gpu_train.json picks the device per rank
    overrides["batch_size"] = 1
    overrides["patience"] = patience
    result = torchrun_train(bundle, overrides)
    assert result.returncode == 0, result.stderr[-4000:]
    # 3 training slices split over 2 ranks (DistributedSampler pads to 2 each): 2 iterations of batch 1
    final = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 2
    # saved from the DDP wrapper without its "module." prefix, so a plain network loads it
    assert not any(k.startswith("module.") for k in final["network"])
    model = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert set(model) == set(final["network"])
    # rank 0 writes the run bundle and the best-validated weights, without the DDP prefix either
    best = torch.load(tmp_path / "models" / "model_best.pt", weights_only=True)
    assert set(best) == set(model)
    assert (tmp_path / "configs" / "common.json").is_file() and (
        tmp_path / "configs" / "inference.json"
    ).is_file()
    # only rank 0 logs the loss and writes TensorBoard events
    assert result.stdout.count("Epoch: 1/1, Iter: 1/2") + result.stderr.count("Epoch: 1/1, Iter: 1/2") == 1
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # file names end in <host>.<pid>.<n>: the training and validation writers, both of one process
    assert events and len({e.name.split(".")[-2] for e in events}) == 1

"""Each segmentation bundle's train command (common.json + train.json) runs end to end on tiny data, saves what it promises and resumes after an interruption."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from tests.helpers import BUNDLE_NAMES, BUNDLES, layered, tiny_train_overrides


def _workflow(bundle: str, datalist: str, output_dir: Path, **extra) -> ConfigWorkflow:
    overrides = {**tiny_train_overrides(bundle, datalist, str(output_dir)), **extra}
    workflow = ConfigWorkflow(
        config_file=layered(bundle, "train"),
        meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **overrides,
    )
    workflow.initialize()
    return workflow


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_train_one_epoch_validates_and_saves(bundle: str, tiny_datalist: str, tmp_path: Path) -> None:
    workflow = _workflow(bundle, tiny_datalist, tmp_path)
    assert not workflow.check_properties(), "train.json misses MONAI's required train properties"
    trainer = workflow.parser.get_parsed_content("train#trainer")
    evaluator = workflow.parser.get_parsed_content("validate#evaluator")
    network = workflow.parser.get_parsed_content("network")
    before = _state(network)
    workflow.run()
    workflow.finalize()
    # 7 of the 8 synthetic slices are non-empty; at 2 mm that is 4 slices -> one batch of 4
    epoch_length = math.ceil(len(workflow.parser.get_parsed_content("train#dataset")) / 4)
    assert trainer.state.epoch == 1 and trainer.state.iteration == epoch_length
    assert any(not torch.equal(before[k], v) for k, v in network.state_dict().items())
    # validation ran with the ensemble inferer and produced a Dice in [0, 1]
    dice = evaluator.state.metrics["val_mean_dice"]
    assert 0.0 <= dice <= 1.0
    # the training checkpoint holds every resumable object; models/model.pt is the EMA weights as a plain state dict
    final = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    assert set(final) == {"network", "optimizer", "ema", "trainer"}
    model = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    ema = workflow.parser.get_parsed_content("ema_model")
    assert set(model) == set(network.state_dict())
    assert all(torch.equal(model[k], v) for k, v in ema.state_dict().items())
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("bundle", ["medsegdiff"])
def test_resume_after_interruption_continues_with_the_same_state(
    bundle: str, tiny_datalist: str, tmp_path: Path
) -> None:
    # batch 1: 3 iterations per epoch (3 non-empty slices at 2 mm); interrupt in the middle of epoch 2
    first = _workflow(bundle, tiny_datalist, tmp_path, batch_size=1, max_epochs=3, val_interval=10)
    trainer = first.parser.get_parsed_content("train#trainer")

    def interrupt(engine) -> None:
        raise KeyboardInterrupt

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=5), interrupt)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    epoch_ckpt = torch.load(tmp_path / "checkpoint_checkpoint_epoch=1.pt", weights_only=True)
    interrupted = torch.load(tmp_path / "checkpoint_final.pt", weights_only=True)
    assert epoch_ckpt["trainer"]["iteration"] == 3
    assert interrupted["trainer"]["iteration"] == 5  # ignite keeps the iteration; the epoch follows from it
    saved = {
        "network": _state(first.parser.get_parsed_content("network")),
        "ema": _state(first.parser.get_parsed_content("ema_model")),
        "optimizer": copy.deepcopy(first.parser.get_parsed_content("optimizer").state_dict()),
    }

    second = _workflow(bundle, tiny_datalist, tmp_path, batch_size=1, max_epochs=3, val_interval=10)
    trainer = second.parser.get_parsed_content("train#trainer")
    seen: dict = {}
    iterations: list[int] = []

    def snapshot(engine) -> None:  # runs after the CheckpointLoader (attached earlier, same event)
        seen["epoch"], seen["iteration"] = engine.state.epoch, engine.state.iteration
        seen["network"] = _state(second.parser.get_parsed_content("network"))
        seen["ema"] = _state(second.parser.get_parsed_content("ema_model"))
        seen["optimizer"] = copy.deepcopy(second.parser.get_parsed_content("optimizer").state_dict())

    trainer.add_event_handler(Events.STARTED, snapshot)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: iterations.append(e.state.iteration))
    second.run()
    assert (seen["epoch"], seen["iteration"]) == (1, 5)  # 1 epoch completed, 2 iterations into epoch 2
    for key in ("network", "ema"):
        assert all(torch.equal(seen[key][k], v) for k, v in saved[key].items()), key
    assert saved["optimizer"]["state"]  # Adam moments and step counts, restored exactly
    for pid, state in saved["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(seen["optimizer"]["state"][pid][name]), torch.as_tensor(value))
    # the resumed run finishes epoch 2 and runs epoch 3: iterations 6..9, not a restart from 1
    assert iterations == list(range(6, 10))
    assert trainer.state.epoch == 3


def test_no_resume_when_disabled(tiny_datalist: str, tmp_path: Path) -> None:
    _workflow("medsegdiff", tiny_datalist, tmp_path).run()
    again = _workflow("medsegdiff", tiny_datalist, tmp_path, resume=False)
    trainer = again.parser.get_parsed_content("train#trainer")
    starts: list[int] = []
    trainer.add_event_handler(Events.STARTED, lambda e: starts.append(e.state.iteration))
    again.run()
    assert starts == [0] and trainer.state.epoch == 1


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_distill_trains_a_few_step_student_from_the_teacher(
    bundle: str, tiny_datalist: str, tmp_path: Path
) -> None:
    teacher_run = _workflow(bundle, tiny_datalist, tmp_path / "teacher")
    teacher_run.run()
    teacher_run.finalize()
    teacher_ckpt = tmp_path / "teacher" / "models" / "model.pt"
    overrides = {
        **tiny_train_overrides(bundle, tiny_datalist, str(tmp_path / "student")),
        "teacher_ckpt": str(teacher_ckpt),
        "distilled_steps": 1,
    }
    del overrides["val_steps"]  # validation samples with the student's steps
    student_run = ConfigWorkflow(
        config_file=layered(bundle, "distill"),
        meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        **overrides,
    )
    student_run.initialize()
    parser = student_run.parser
    prepare = parser.get_parsed_content("train#prepare_batch")
    student, teacher = parser.get_parsed_content("network"), parser.get_parsed_content("teacher")
    assert student is not teacher
    # the student starts from the teacher's weights; the teacher is frozen and stays as it was
    saved = torch.load(teacher_ckpt, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in student.state_dict().items())
    assert prepare.distillation.student_grid == [parser["num_train_timesteps"] - 1]
    assert prepare.teacher is teacher
    assert parser.get_parsed_content("validate#inferer").options.steps == 1
    student_run.run()
    student_run.finalize()
    assert all(torch.equal(saved[k], v) for k, v in teacher.state_dict().items())
    distilled = torch.load(tmp_path / "student" / "models" / "model_distilled.pt", weights_only=True)
    assert any(not torch.equal(saved[k], v) for k, v in distilled.items())


def _with_marginals(datalist: str, root: Path) -> str:
    """The tiny datalist plus, per case, a (X, Y, Z, 3) class distribution: 0.6 on the label's class, 0.2 on each other."""
    import json

    import nibabel as nib
    import numpy as np

    source = Path(datalist)
    lists = json.loads(source.read_text())
    for split, entries in lists.items():
        for entry in entries:
            label_img = nib.load(source.parent / entry["label"])
            label = np.asarray(label_img.dataobj).astype(np.int64)
            marginal = np.full((*label.shape, 3), 0.2, np.float32)
            np.put_along_axis(marginal, label[..., None], 0.6, axis=-1)
            nib.save(nib.Nifti1Image(marginal, label_img.affine), root / f"{split}_marginal.nii.gz")
            entry.update({k: str(source.parent / entry[k]) for k in ("image", "label")})
            entry["marginal"] = str(root / f"{split}_marginal.nii.gz")
    path = root / "datalist_marginal.json"
    path.write_text(json.dumps(lists))
    return str(path)


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_marginal_key_trains_on_a_new_annotator_draw_at_every_read(
    bundle: str, tiny_datalist: str, tmp_path: Path
) -> None:
    datalist = _with_marginals(tiny_datalist, tmp_path)
    workflow = _workflow(bundle, datalist, tmp_path / "run", marginal_key="marginal", val_interval=0)
    dataset = workflow.parser.get_parsed_content("train#dataset")
    preprocessing = workflow.parser.get_parsed_content("train#preprocessing")
    item = dataset[0]
    assert item["marginal"].shape == (3, *item["label"].shape[1:])
    labels = torch.stack([preprocessing(dict(item))["label"] for _ in range(8)])
    # every read draws a label from the 0.6 / 0.2 / 0.2 distribution: reads differ from each other and from
    # the datalist's hard label, while each stays a valid label map of the same grid
    assert labels.shape[1:] == item["label"].shape and set(labels.unique().tolist()) <= {0, 1, 2}
    assert any(not torch.equal(labels[0], other) for other in labels[1:])
    assert not all(torch.equal(item["label"], label) for label in labels)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    workflow.run()
    workflow.finalize()
    assert trainer.state.iteration > 0 and (tmp_path / "run" / "models" / "model.pt").is_file()

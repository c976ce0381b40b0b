"""docs/own_data.md, command by command, on tiny data: a 2-class and a 4-class model trained with ``medseg
train`` segment with ``medseg segment --bundle <run folder>``, ``Segmenter.from_bundle(<run folder>)`` and the
run's own inference config (``python -m monai.bundle run`` with ``--bundle_root <run folder>``), which agree;
the shipped weights of every bundle are byte-identical afterwards.

The commands are read from the page (its ``bash``, ``json`` and ``python`` blocks), so the page and the test
cannot drift apart. Only what makes them run in seconds is added: tiny networks and short sampling as
``key=value`` overrides, one epoch.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.cli import main
from tests.helpers import BUNDLES, REPO, TINY_NETWORKS, digests

PAGE = REPO / "docs" / "own_data.md"
# what makes the documented train command run in seconds: a tiny network, one epoch, short validations
TINY_TRAINING = [
    "--max-epochs",
    "1",
    "--device",
    "cpu",
    "divisible_by=2",
    "val_ensemble=2",
    "val_steps=2",
    *(f"{key}={json.dumps(value)}" for key, value in TINY_NETWORKS["medsegdiff"].items()),
]
FOUR_CLASSES = "--num-classes 4"  # the count alone: the names default to background, class_1, ...


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), flags=re.S)


def _commands() -> list[list[str]]:
    """Every command of the page's bash blocks, continuation lines joined, in page order."""
    commands = []
    for block in _blocks("bash"):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip():
                commands.append(shlex.split(command))
    return commands


def _volume(seed: int, classes: int, shape=(24, 20, 8)) -> tuple[np.ndarray, np.ndarray]:
    """Nested ellipses, one ring per foreground class, intensity rising with the label."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    label = np.zeros(shape, np.uint8)
    for z in range(shape[2]):
        r = 0.6 + 0.2 * np.sin(z + seed)
        ellipse = (x / r) ** 2 + (y / (0.9 * r)) ** 2
        for c in range(1, classes):
            label[..., z][ellipse < 1.0 - 0.8 * (c - 1) / (classes - 1)] = c
    image = label.astype(np.float32) / (classes - 1) + rng.normal(0, 0.05, shape).astype(np.float32)
    return image, label


def _my_data(root: Path, classes: int) -> Path:
    """The folder of step 1: images/, labels/, new_scan.nii.gz and the page's dataset.json."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(1, 5):
        image, label = _volume(i, classes)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "images" / f"case{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labels" / f"case{i:02d}.nii.gz")
    nib.save(nib.Nifti1Image(_volume(9, classes)[0], np.eye(4)), root / "new_scan.nii.gz")
    (datalist,) = _blocks("json")
    json.loads(datalist)  # the page's datalist is valid JSON
    (root / "dataset.json").write_text(datalist)
    return root


_TRAIN_ALL = """
import os, sys
from medseg.cli import main
for cwd, *args in {runs!r}:
    os.chdir(cwd)
    print("exit", cwd, main(args), flush=True)
"""


def _train_all(runs: list[tuple[Path, list[str]]]) -> str:
    """``medseg train`` ARGS in each folder, one Python process for all (the imports cost more than the training)."""
    for _, command in runs:
        assert command[:2] == ["medseg", "train"]
    plan = [(str(cwd), *command[1:], *TINY_TRAINING) for cwd, command in runs]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", _TRAIN_ALL.format(runs=plan)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for cwd, _ in runs:
        assert f"exit {cwd} 0" in output, output[-3000:]
    return output


@pytest.fixture(scope="module")
def shipped() -> dict[str, str]:
    """Digests of every bundle's models/ before the page's commands run."""
    return {b.name: digests(b / "models") for b in sorted(BUNDLES.glob("*")) if (b / "models").is_dir()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shipped) -> dict[int, Path]:
    """The page's train command for 2 classes (as written) and 4 classes (the count alone)."""
    train = next(c for c in _commands() if c[:2] == ["medseg", "train"])
    text = " ".join(train)
    assert "--num-classes 2 --class-names background,lesion" in text
    four = shlex.split(text.replace("--num-classes 2 --class-names background,lesion", FOUR_CLASSES))
    folders = {}
    for classes in (2, 4):
        folders[classes] = tmp_path_factory.mktemp(f"classes{classes}")
        _my_data(folders[classes] / "my_data", classes)
    output = _train_all([(folders[2], train), (folders[4], four)])
    assert output.count("torch thread(s)") >= 2  # the thread count is said at the start of each run
    return folders


@pytest.mark.parametrize("classes", [2, 4])
def test_the_pages_commands_train_and_segment(
    runs: dict[int, Path], classes: int, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    cwd = runs[classes]
    run = cwd / "runs" / "my_model"
    monkeypatch.chdir(cwd)
    # the run folder describes the model: the recipe beside the weights
    common = json.loads((run / "configs" / "common.json").read_text())
    names = ["background", "lesion"] if classes == 2 else ["background", "class_1", "class_2", "class_3"]
    assert common["num_classes"] == classes and common["class_names"] == names
    assert common["network_def"]["channels"] == TINY_NETWORKS["medsegdiff"]["network_def#channels"]
    for name in ("model.pt", "model_best.pt", "model_best.json"):
        assert (run / "models" / name).is_file(), name
    meta = json.loads((run / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == classes
    assert meta["training"]["epochs"] == 1 and meta["training"]["best_validation"]["epoch"] == 1

    # every medseg segment command of the page, as written
    for command in (c for c in _commands() if c[:2] == ["medseg", "segment"]):
        assert main([*command[1:], "--quiet"]) == 0, command
    out = capsys.readouterr().out
    assert "ok new_scan" in out and "ok case04" in out and "torch thread(s)" in out
    mask = nib.load(cwd / "out" / "new_scan" / "mask.nii.gz").get_fdata()
    probability = nib.load(cwd / "out" / "new_scan" / "probability.nii.gz").get_fdata()
    assert mask.shape == (24, 20, 8) and probability.shape == (24, 20, 8, classes)
    assert set(np.unique(mask)) <= set(range(classes))
    if classes == 2:  # the page's rule: the lesion where its probability is above 0.5, background at 0.5
        clear = np.abs(probability[..., 1] - 0.5) > 1e-6
        np.testing.assert_array_equal((probability[..., 1] > 0.5)[clear], (mask == 1)[clear])
    summary = json.loads((cwd / "out" / "summary.json").read_text())
    (case,) = summary["cases"]
    assert (
        case["seconds"] > 0 and case["network_evaluations"] == 4 * 5 * 3
    )  # slices at 2 mm x members x steps
    scores = json.loads((cwd / "scores" / "case04" / "metrics.json").read_text())
    assert list(scores["classes"]) == names[1:]  # foreground classes are scored

    # the page's Python block gives the same mask for the same (default) seed
    (python,) = _blocks("python")
    scope: dict = {}
    exec(compile(python, str(PAGE), "exec"), scope)
    result = scope["result"]
    assert result.class_names == tuple(names)
    np.testing.assert_array_equal(np.asarray(result.mask[0]), mask)
    assert (cwd / "new_scan_overlay.png").is_file()

    # and so does MONAI's command on the run's own inference config, with --bundle_root the run folder
    if classes != 2:
        return
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[str(run / "configs" / "common.json"), str(run / "configs" / "inference.json")],
        meta_file=str(run / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        bundle_root=str(run),
        input=str(cwd / "my_data" / "new_scan.nii.gz"),
        output_dir=str(cwd / "monai_out"),
    )
    workflow.initialize()
    workflow.run()
    monai_mask = nib.load(cwd / "monai_out" / "new_scan" / "mask.nii.gz").get_fdata()
    np.testing.assert_array_equal(monai_mask, mask)


def test_segmenting_uses_the_best_weights_and_falls_back_to_the_last(runs: dict[int, Path]) -> None:
    from monai.bundle import ConfigParser

    from medseg.workflows import config_files

    run = runs[2] / "runs" / "my_model"
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(run, "inference")])
    parser["bundle_root"] = str(run)
    assert parser.get_parsed_content("ckpt_path") == str(run / "models" / "model_best.pt")
    best = torch.load(run / "models" / "model_best.pt", weights_only=True)
    assert set(best) == set(torch.load(run / "models" / "model.pt", weights_only=True))


def test_shipped_weights_are_untouched(runs: dict[int, Path], shipped: dict[str, str]) -> None:
    after = {b.name: digests(b / "models") for b in sorted(BUNDLES.glob("*")) if (b / "models").is_dir()}
    assert after == shipped

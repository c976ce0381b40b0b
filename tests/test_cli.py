"""The ``medseg`` command: segmenting a DICOM series folder and a batch, with exit codes a pipeline relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medseg.cli import main
from medseg.data import load_image, save_image
from medseg.networks import MedSegDiffUNet

OBLIQUE = Path(__file__).parent / "data" / "dicom_mr_oblique"
NETWORK = {
    "_target_": "medseg.networks.MedSegDiffUNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "channels": [8, 16],
    "num_res_blocks": 1,
    "norm_num_groups": 4,
    "num_head_channels": 8,
}


def _write_bundle(root: Path, weights: dict[str, dict], segmenter: dict | None = None, **config) -> Path:
    """A bundle folder with ``weights`` (file name -> state dict) in ``models/`` and a tiny segmenter config."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    for name, state in weights.items():
        torch.save(state, root / "models" / name)
    (root / "configs" / "metadata.json").write_text(json.dumps({"version": "0.0.1", "task": "test"}))
    inference = {
        "imports": ["$import medseg"],
        "bundle_root": ".",
        "device": "cpu",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "network_def": NETWORK,
        **config,
        "segmenter": {
            "_target_": "medseg.workflows.Segmenter",
            "network": "@network_def",
            "checkpoint": "@ckpt_path",
            "spacing": [8.0, 8.0, 8.0],
            "divisible_by": 4,
            "ensemble": 2,
            "steps": 2,
            "device": "@device",
            **(segmenter or {}),
        },
    }
    (root / "configs" / "inference.json").write_text(json.dumps(inference))
    return root


def _network_state() -> dict:
    kwargs = {k: v for k, v in NETWORK.items() if k != "_target_"}
    torch.manual_seed(0)
    return MedSegDiffUNet(**kwargs).state_dict()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle with a tiny untrained network: the CLI's plumbing, not the model's quality, is under test."""
    return _write_bundle(tmp_path_factory.mktemp("tiny_bundle") / "bundle", {"model.pt": _network_state()})


def test_dicom_series_folder_segments_with_exit_zero(bundle: Path, tmp_path: Path, capsys) -> None:
    code = main(["segment", str(OBLIQUE), str(tmp_path / "out"), "--bundle", str(bundle), "--quiet"])
    assert code == 0
    assert "ok dicom_mr_oblique" in capsys.readouterr().out
    mask = load_image(tmp_path / "out" / "dicom_mr_oblique" / "mask.nii.gz")
    dicom = load_image(OBLIQUE)
    assert mask.shape == dicom.shape
    np.testing.assert_allclose(mask.affine.numpy(), dicom.affine.numpy(), atol=1e-4)
    # the same command again keeps the outputs (exit 0: the case has its outputs), and --overwrite replaces them
    before = (tmp_path / "out" / "dicom_mr_oblique" / "mask.nii.gz").stat().st_mtime_ns
    assert main(["segment", str(OBLIQUE), str(tmp_path / "out"), "--bundle", str(bundle), "--quiet"]) == 0
    assert "kept dicom_mr_oblique" in capsys.readouterr().out
    assert (tmp_path / "out" / "dicom_mr_oblique" / "mask.nii.gz").stat().st_mtime_ns == before
    args = ["segment", str(OBLIQUE), str(tmp_path / "out"), "--bundle", str(bundle), "--quiet", "--overwrite"]
    assert main([*args, "--ensemble", "1", "--steps", "1"]) == 0


def test_batch_with_a_bad_case_exits_one_after_processing_the_rest(
    bundle: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    save_image(
        np.random.default_rng(0).random((1, 16, 16, 2)),
        folder / "good.nii.gz",
        reference=MetaTensor(torch.zeros(1, 16, 16, 2)),
    )
    (folder / "bad.nii.gz").write_bytes(b"truncated")
    code = main(["segment", str(folder), str(tmp_path / "out"), "--bundle", str(bundle), "--quiet"])
    assert code == 1
    streams = capsys.readouterr()
    assert "ok good" in streams.out
    (line,) = [ln for ln in streams.err.splitlines() if ln.startswith("failed")]
    assert "bad" in line
    assert (tmp_path / "out" / "good" / "mask.nii.gz").is_file()


def test_unusable_input_exits_two_with_one_line(bundle: Path, tmp_path: Path, capsys) -> None:
    assert (
        main(["segment", str(tmp_path / "missing.nii.gz"), str(tmp_path / "out"), "--bundle", str(bundle)])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.nii.gz" in err
    assert main(["segment", str(OBLIQUE), str(tmp_path / "out"), "--bundle", "no-such-bundle"]) == 2
    assert "no bundle" in capsys.readouterr().err
    # a bundle that is not a segmentation bundle: one clear line, not a traceback
    assert main(["segment", str(OBLIQUE), str(tmp_path / "out"), "--bundle", "palette"]) == 2
    assert "not a segmentation bundle" in capsys.readouterr().err


def test_distilled_flag_picks_the_weights_a_bundle_defaults_to_or_the_other(tmp_path: Path) -> None:
    """A bundle whose default is its distilled student: no flag and ``--distilled`` sample the student,
    ``--no-distilled`` the model it was distilled from (here a random network and an all-zero one)."""
    # perturbed, since MONAI zero-initialises the output convolution
    student = {k: v + 0.5 * torch.randn_like(v) for k, v in _network_state().items()}
    teacher = {k: torch.zeros_like(v) for k, v in student.items()}
    root = _write_bundle(
        tmp_path / "bundle",
        {"model_distilled.pt": student, "model.pt": teacher},
        segmenter={"prediction_type": "sample", "ensemble": 1, "steps": 1},
        distilled=True,
        ckpt_path="$@bundle_root + '/models/' + ('model_distilled.pt' if @distilled else 'model.pt')",
    )
    image = tmp_path / "scan.nii.gz"
    rng = np.random.default_rng(0)
    save_image(rng.random((1, 24, 24, 2)), image, reference=MetaTensor(torch.zeros(1, 24, 24, 2)))

    def probability(*flags: str) -> np.ndarray:
        out = tmp_path / "-".join(f.strip("-").replace("/", "_") for f in flags)
        assert (
            main(["segment", str(image), str(out), "--bundle", str(root), "--quiet", "--seed", "0", *flags])
            == 0
        )
        return np.asarray(load_image(out / "scan" / "probability.nii.gz"))

    default = probability()
    np.testing.assert_array_equal(default, probability("--distilled"))
    np.testing.assert_array_equal(
        default, probability("--weights", str(root / "models" / "model_distilled.pt"))
    )
    teacher = probability("--no-distilled")
    np.testing.assert_array_equal(teacher, probability("--weights", str(root / "models" / "model.pt")))
    assert not np.array_equal(default, teacher)

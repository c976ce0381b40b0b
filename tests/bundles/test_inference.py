"""Each segmentation bundle's inference and evaluate commands (common.json + inference.json [+ evaluate.json]) run
end to end with MONAI's runner; verify_net_in_out passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow, run, verify_net_in_out

from tests.helpers import (
    BUNDLE_NAMES,
    BUNDLES,
    TINY_NETWORKS,
    bundle_cli,
    layered,
    run_bundle,
    tiny_inference_overrides,
)


@pytest.fixture(scope="module", params=BUNDLE_NAMES)
def tiny_weights(request, tmp_path_factory) -> tuple[str, str]:
    """(bundle, path) of a tiny network's weights with non-trivial values (the zero-initialised outputs perturbed)."""
    bundle = request.param
    parser = ConfigWorkflow(
        config_file=layered(bundle, "inference"),
        logging_file=False,
        workflow_type="infer",
        **TINY_NETWORKS[bundle],
    ).parser
    network = parser.get_parsed_content("network_def")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp(f"{bundle}_weights") / "model.pt"
    torch.save(network.state_dict(), path)
    return bundle, str(path)


def test_inference_segments_the_test_list(tiny_weights, tiny_datalist: str, tmp_path: Path) -> None:
    bundle, ckpt = tiny_weights
    run(
        config_file=layered(bundle, "inference"),
        meta_file=str(BUNDLES / bundle / "configs" / "metadata.json"),
        logging_file=str(BUNDLES / bundle / "configs" / "logging.conf"),
        **tiny_inference_overrides(bundle, tiny_datalist, str(tmp_path), ckpt),
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["succeeded"] == 1 and summary["failed"] == 0
    case = summary["cases"][0]
    assert set(case["metrics"]["classes"]) == {"grey_matter", "white_matter"}  # foreground classes
    masks = list(tmp_path.rglob("*mask*.nii.gz"))
    assert masks, sorted(p.name for p in tmp_path.rglob("*"))
    import nibabel as nib

    test_image = Path(tiny_datalist).parent / "test_image.nii.gz"
    written, reference = nib.load(masks[0]), nib.load(test_image)
    # the mask lands on the input grid (the network ran at 2 mm)
    assert written.shape[:3] == reference.shape[:3]
    assert (abs(written.affine - reference.affine) < 1e-4).all()


def test_evaluate_writes_per_class_means(tiny_weights, tiny_datalist: str, tmp_path: Path) -> None:
    bundle, ckpt = tiny_weights
    configs = BUNDLES / bundle / "configs"
    workflow = ConfigWorkflow(
        config_file=layered(bundle, "evaluate"),
        meta_file=str(configs / "metadata.json"),
        logging_file=False,
        workflow_type="infer",
        **tiny_inference_overrides(bundle, tiny_datalist, str(tmp_path), ckpt),
    )
    workflow.initialize()
    workflow.run()
    result = json.loads((tmp_path / "class_summary.json").read_text())
    assert result["num_cases"] == 1
    case = json.loads((tmp_path / "summary.json").read_text())["cases"][0]["metrics"]["classes"]
    for name in ("grey_matter", "white_matter"):
        assert result["classes"][name]["dice"] == pytest.approx(case[name]["dice"])


def test_evaluate_refuses_an_unlabelled_list(tiny_weights, tiny_datalist: str, tmp_path: Path) -> None:
    bundle, ckpt = tiny_weights
    unlabelled = tmp_path / "unlabelled.json"
    data = json.loads(Path(tiny_datalist).read_text())
    folder = Path(tiny_datalist).parent
    unlabelled.write_text(json.dumps({"test": [{"image": str(folder / data["test"][0]["image"])}]}))
    workflow = ConfigWorkflow(
        config_file=layered(bundle, "evaluate"),
        logging_file=False,
        workflow_type="infer",
        **tiny_inference_overrides(bundle, str(unlabelled), str(tmp_path / "out"), ckpt),
    )
    workflow.initialize()
    with pytest.raises(RuntimeError) as err:  # MONAI wraps errors raised in config expressions
        workflow.run()
    assert isinstance(err.value.__cause__, ValueError) and "without a label" in str(err.value.__cause__)


def test_verify_net_in_out_with_the_single_input_model(tiny_weights) -> None:
    bundle, ckpt = tiny_weights
    configs = BUNDLES / bundle / "configs"
    overrides = {
        "ckpt_path": ckpt,
        "ensemble": 1,
        "steps": 2,
        **TINY_NETWORKS[bundle],
    }
    # metadata says 8*n; the tiny network downsamples by 2, so n = 2 gives 16 x 16
    verify_net_in_out(
        net_id="segmentation_model",
        meta_file=str(configs / "metadata.json"),
        config_file=layered(bundle, "inference"),
        device="cpu",
        n=2,
        **overrides,
    )
    # a wrong channel count in the metadata is caught
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(
            net_id="segmentation_model",
            meta_file=str(configs / "metadata.json"),
            config_file=layered(bundle, "inference"),
            device="cpu",
            n=2,
            **{"_meta_#network_data_format#outputs#pred#num_channels": 2},
            **overrides,
        )


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
def test_verify_net_in_out_command_on_the_shipped_weights(bundle: str) -> None:
    """The documented command, on the real config and the committed models/model.pt."""
    root = BUNDLES / bundle
    result = run_bundle(
        "verify_net_in_out",
        *bundle_cli(
            {
                "net_id": "segmentation_model",
                "meta_file": str(root / "configs" / "metadata.json"),
                "config_file": layered(bundle, "inference"),
                "bundle_root": str(root),
                "device": "cpu",
                "n": 4,
                "ensemble": 1,
                "steps": 1,
            }
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


@pytest.mark.parametrize("bundle", BUNDLE_NAMES)
@pytest.mark.parametrize("config", ["inference", "train"])
def test_num_threads_override_sets_torch_threads(bundle: str, config: str) -> None:
    """--num_threads 1 (advised on a shared CPU) reaches torch.set_num_threads. By default inference leaves it
    alone and training picks the count of medseg.engines.thread_plan (OMP_NUM_THREADS, else the free cores)."""
    from medseg.engines.threads import thread_plan

    before = torch.get_num_threads()
    default = 2 if config == "inference" else thread_plan(None)[0]
    try:
        for threads, expected in ((1, 1), (None, default)):  # inference: None leaves the 2 threads set before
            torch.set_num_threads(2)
            ConfigWorkflow(
                config_file=layered(bundle, config),
                logging_file=False,
                workflow_type="infer" if config == "inference" else "train",
                num_threads=threads,
            ).parser.get_parsed_content("initialize")
            assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)

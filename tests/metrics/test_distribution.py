"""GED, diversity, Hungarian-matched IoU, marginal error/calibration and uncertainty-error metrics by hand."""

from __future__ import annotations

import math

import pytest
import torch
from monai.metrics import compute_roc_auc

from medseg.metrics import (
    brier_score,
    distribution_metrics,
    empirical_marginal,
    error_map,
    expected_calibration_error,
    generalized_energy_distance,
    hungarian_matched_iou,
    marginal_absolute_error,
    marginal_calibration_error,
    marginal_scores,
    negative_log_likelihood,
    pairwise_iou,
    sample_diversity,
    uncertainty_error_auroc,
    uncertainty_error_overlap,
)


def _set(*rows: list[float]) -> torch.Tensor:
    """Binary masks from rows of voxel values: (N, 1, V)."""
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), 1, -1)


# Binary case, four voxels. Samples s1 = 1100, s2 = 1000; references y1 = 1100, y2 = 0000 (empty).
# IoU(s1, y1) = 2/2 = 1, IoU(s1, y2) = 0/2 = 0, IoU(s2, y1) = 1/2, IoU(s2, y2) = 0/1 = 0.
# d = 1 - IoU: cross distances 0, 1, 0.5, 1 -> E[d(S, Y)] = 2.5 / 4 = 0.625.
# Within samples (all 4 pairs, i == j included): 0, 0.5, 0.5, 0 -> diversity 0.25.
# Within references: d(y1, y2) = 1 twice, d(y2, y2) = 1 - 1 = 0 (empty/empty IoU = 1) -> 0.5.
# GED = 2 * 0.625 - 0.25 - 0.5 = 0.5.
SAMPLES = _set([1, 1, 0, 0], [1, 0, 0, 0])
REFERENCES = _set([1, 1, 0, 0], [0, 0, 0, 0])


def test_pairwise_iou_binary_and_empty_pair_by_hand() -> None:
    iou = pairwise_iou(SAMPLES, REFERENCES)
    torch.testing.assert_close(iou, torch.tensor([[1.0, 0.0], [0.5, 0.0]], dtype=torch.float64))
    assert pairwise_iou(REFERENCES[1:], REFERENCES[1:]).item() == 1.0  # empty vs empty


def test_ged_and_diversity_binary_by_hand() -> None:
    assert sample_diversity(SAMPLES).item() == pytest.approx(0.25)
    assert sample_diversity(REFERENCES).item() == pytest.approx(0.5)
    assert generalized_energy_distance(SAMPLES, REFERENCES).item() == pytest.approx(0.5)
    assert generalized_energy_distance(SAMPLES, SAMPLES).item() == pytest.approx(0.0)  # identical sets
    # One reference: GED = 2 E[d(S, y1)] - diversity = 2 * (0 + 0.5) / 2 - 0.25 = 0.25.
    assert generalized_energy_distance(SAMPLES, REFERENCES[:1]).item() == pytest.approx(0.25)


def test_multiclass_iou_averages_the_foreground_classes_by_hand() -> None:
    # Label maps (3 classes): a = 0122, b = 0110, c = 0000.
    # a vs b: class 1 {1} vs {1, 2} -> 1/2; class 2 {2, 3} vs {} -> 0; mean 0.25.
    # c vs b: class 1 {} vs {1, 2} -> 0; class 2 {} vs {} -> 1 (empty/empty); mean 0.5.
    a, b, c = (
        torch.tensor(v, dtype=torch.long).reshape(1, 1, 4) for v in ([0, 1, 2, 2], [0, 1, 1, 0], [0] * 4)
    )
    iou = pairwise_iou(torch.cat([a, c]), b, num_classes=3)
    torch.testing.assert_close(iou, torch.tensor([[0.25], [0.5]], dtype=torch.float64))
    onehot = torch.nn.functional.one_hot(torch.cat([a, c])[:, 0], 3).movedim(-1, 1).float()
    torch.testing.assert_close(
        pairwise_iou(onehot, torch.nn.functional.one_hot(b[:, 0], 3).movedim(-1, 1)), iou
    )
    with pytest.raises(ValueError, match="num_classes"):
        pairwise_iou(a, b)  # a label map with values > 1 needs num_classes


def test_hungarian_matched_iou_by_hand() -> None:
    # IoU matrix [[1, 0], [0.5, 0]]: matching s1-y1, s2-y2 gives 1 + 0, the other 0 + 0.5 -> mean 1 / 2.
    assert hungarian_matched_iou(SAMPLES, REFERENCES).item() == pytest.approx(0.5)
    # Two samples, one reference: the reference is replicated twice, IoUs 1 and 0.5 -> 0.75.
    assert hungarian_matched_iou(SAMPLES, REFERENCES[:1]).item() == pytest.approx(0.75)
    # Two samples against three references (lcm 6): s1 = y1 exactly, s2 = 1000 vs y1 1/2, y2 0, y3 = 1000 1.
    references = torch.cat([REFERENCES, _set([1, 0, 0, 0])])
    # IoU rows: s1 [1, 0, 1/2], s2 [1/2, 0, 1]; each sample 3 copies, each reference 2 copies. Best: s1 -> y1
    # twice + y2 once (1 + 1 + 0), s2 -> y3 twice + y2 once (1 + 1 + 0): total 4 over 6 pairs = 2/3.
    assert hungarian_matched_iou(SAMPLES, references).item() == pytest.approx(2 / 3)


def test_distribution_metrics_agree_with_the_single_functions() -> None:
    out = distribution_metrics(SAMPLES, REFERENCES)
    assert out["ged"].item() == pytest.approx(0.5)
    assert out["cross_distance"].item() == pytest.approx(0.625)
    assert out["sample_diversity"].item() == pytest.approx(0.25)
    assert out["reference_diversity"].item() == pytest.approx(0.5)
    assert out["hm_iou"].item() == pytest.approx(0.5)


def test_marginal_absolute_error_by_hand() -> None:
    # Binary: |0.2 - 0| + |0.8 - 1| + |0.5 - 0.5| + |1 - 0.9| = 0.5 over 4 voxels = 0.125; in the ROI of the
    # first two voxels 0.4 / 2 = 0.2.
    p = torch.tensor([0.2, 0.8, 0.5, 1.0]).reshape(1, 1, 4)
    m = torch.tensor([0.0, 1.0, 0.5, 0.9]).reshape(1, 1, 4)
    assert marginal_absolute_error(p, m).item() == pytest.approx(0.125)
    roi = torch.tensor([1, 1, 0, 0]).reshape(1, 1, 4)
    assert marginal_absolute_error(p, m, mask=roi).item() == pytest.approx(0.2)
    # Multi-class: one voxel p = (0.2, 0.5, 0.3), m = (0.2, 0.3, 0.5): foreground errors 0.2, 0.2 -> 0.2.
    p3 = torch.tensor([0.2, 0.5, 0.3]).reshape(1, 3, 1)
    m3 = torch.tensor([0.2, 0.3, 0.5]).reshape(1, 3, 1)
    assert marginal_absolute_error(p3, m3).item() == pytest.approx(0.2)


def test_marginal_calibration_error_by_hand_and_against_pooled_draws() -> None:
    # 15 bins: 0.1 falls in bin 1 [1/15, 2/15), 0.9 in bin 13 [13/15, 14/15).
    # Bin 1: mean p 0.1, mean marginal (0 + 0.4) / 2 = 0.2 -> gap 0.1; bin 13: p 0.9, m (1 + 0.6) / 2 = 0.8
    # -> gap 0.1. ECE = (2/4) 0.1 + (2/4) 0.1 = 0.1.
    p = torch.tensor([0.1, 0.1, 0.9, 0.9]).reshape(1, 1, 4)
    m = torch.tensor([0.0, 0.4, 1.0, 0.6]).reshape(1, 1, 4)
    assert marginal_calibration_error(p, m).item() == pytest.approx(0.1, abs=1e-6)
    assert marginal_calibration_error(m, m).item() == pytest.approx(0.0, abs=1e-6)
    # Five reference draws whose voxel frequencies are exactly m: 0/5, 2/5, 5/5, 3/5.
    draws = torch.tensor(
        [[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 1, 0]], dtype=torch.long
    ).reshape(5, 1, 4)
    freq = empirical_marginal(draws, num_classes=2)
    torch.testing.assert_close(freq[1:], m[0].double())
    assert marginal_calibration_error(p, freq[1:][None]).item() == pytest.approx(0.1, abs=1e-6)
    # The same number as MONAI's ECE of p scored against every draw, the 5 x 4 voxel-draw pairs pooled.
    pooled = expected_calibration_error(p.repeat(1, 1, 5), draws.reshape(1, 1, 20).float())
    assert pooled.item() == pytest.approx(0.1, abs=1e-6)


# Error detection case, binary, six voxels:
# p = 0.9 0.8 0.3 0.6 0.1 0.2 -> prediction (p > 0.5) 1 1 0 1 0 0; target 1 0 0 1 1 0 -> errors at v1, v4.
# u = 0.1 0.7 0.2 0.7 0.5 0.0. Positives (errors) u = 0.7, 0.5; negatives 0.1, 0.2, 0.7, 0.0.
# AUROC = P(u_err > u_ok) + 1/2 P(tie): 0.7 beats 0.1, 0.2, 0.0 and ties 0.7 -> 3.5; 0.5 beats 0.1, 0.2, 0.0
# -> 3. (3.5 + 3) / (2 * 4) = 0.8125.
# UEO: |E| = 2; U = {u > tau} grows as {v1, v3} (Dice 2 * 1 / 4 = 0.5), {v1, v3, v4} (2 * 2 / 5 = 0.8),
# + v2 (4 / 6), + v0 (4 / 7), all (4 / 8): the best is 0.8. At tau = 0.6, U = {v1, v3}: 0.5.
P6 = torch.tensor([0.9, 0.8, 0.3, 0.6, 0.1, 0.2]).reshape(1, 1, 6)
T6 = torch.tensor([1, 0, 0, 1, 1, 0]).reshape(1, 1, 6)
U6 = torch.tensor([0.1, 0.7, 0.2, 0.7, 0.5, 0.0]).reshape(1, 1, 6)


def test_error_map_binary_and_multiclass() -> None:
    assert error_map(P6, T6).flatten().tolist() == [False, True, False, False, True, False]
    assert not error_map(torch.full((1, 1, 2), 0.5), torch.zeros(1, 1, 2)).any()  # 0.5 is background
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.4, 0.4, 0.2]]).T.reshape(1, 3, 3)
    labels = torch.tensor([0, 1, 0]).reshape(1, 1, 3)  # predictions 0, 2, 0 (tie -> lowest index)
    assert error_map(probs, labels).flatten().tolist() == [False, True, False]


def test_uncertainty_error_auroc_by_hand_and_against_monai() -> None:
    assert uncertainty_error_auroc(U6, P6, T6).item() == pytest.approx(0.8125)
    # Only the first four voxels (one error, v1, with u 0.7; correct 0.1, 0.2, 0.7): (1 + 1 + 0.5) / 3.
    roi = torch.tensor([1, 1, 1, 1, 0, 0]).reshape(1, 1, 6)
    assert uncertainty_error_auroc(U6, P6, T6, mask=roi).item() == pytest.approx(2.5 / 3)
    assert math.isnan(uncertainty_error_auroc(U6, T6.float(), T6).item())  # no errors
    gen = torch.Generator().manual_seed(0)
    u = torch.randint(0, 6, (2, 1, 50), generator=gen).float() / 5  # many ties
    p, t = torch.rand(2, 1, 50, generator=gen), torch.randint(0, 2, (2, 1, 50), generator=gen)
    errors = error_map(p, t)
    ours = uncertainty_error_auroc(u, p, t)
    for b in range(2):
        assert ours[b].item() == pytest.approx(
            float(compute_roc_auc(u[b].flatten(), errors[b].flatten().long()))
        )


def test_uncertainty_error_overlap_by_hand() -> None:
    assert uncertainty_error_overlap(U6, P6, T6).item() == pytest.approx(0.8)
    assert uncertainty_error_overlap(U6, P6, T6, threshold=0.6).item() == pytest.approx(0.5)
    assert uncertainty_error_overlap(U6, P6, T6, threshold=1.0).item() == 0.0
    assert math.isnan(uncertainty_error_overlap(U6, T6.float(), T6).item())
    with pytest.raises(ValueError, match="uncertainty must be shaped"):
        uncertainty_error_overlap(U6[..., :3], P6, T6)


def test_marginal_scores_hand_computed_case():
    # one voxel, p = (0.5, 0.25, 0.25), the label is class 0 for sure: NLL = ln 2, Brier = 0.25 + 2 * 0.0625
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64).reshape(1, 3, 1, 1)
    m = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    scores = marginal_scores(p, m)
    assert scores["nll"].item() == pytest.approx(math.log(2))
    assert scores["brier"].item() == pytest.approx(0.375)


@pytest.mark.parametrize("channels", [1, 3])
def test_marginal_scores_equal_the_label_weighted_scores(channels):
    # the expectation over y ~ m, written out as the m-weighted mean of the one-label scores
    g = torch.Generator().manual_seed(0)
    if channels == 1:
        p, m = torch.rand(2, 1, 4, 5, generator=g), torch.rand(2, 1, 4, 5, generator=g)
        weights = [(1 - m, torch.zeros(2, 1, 4, 5)), (m, torch.ones(2, 1, 4, 5))]
    else:
        p = torch.rand(2, 3, 4, 5, generator=g).softmax(1)
        m = torch.rand(2, 3, 4, 5, generator=g).softmax(1)
        weights = [(m[:, c : c + 1], torch.full((2, 1, 4, 5), c)) for c in range(3)]
    expected_nll = torch.zeros(2, dtype=torch.float64)
    expected_brier = torch.zeros(2, dtype=torch.float64)
    for w, label in weights:
        # per-voxel scores of label maps made constant per voxel through one-voxel cases
        for i in range(4):
            for j in range(5):
                pv, lv, wv = p[:, :, i : i + 1, j : j + 1], label[:, :, i : i + 1, j : j + 1], w[:, 0, i, j]
                expected_nll += wv.double() * negative_log_likelihood(pv, lv) / 20
                expected_brier += wv.double() * brier_score(pv, lv) / 20
    scores = marginal_scores(p, m)
    assert torch.allclose(scores["nll"], expected_nll)
    assert torch.allclose(scores["brier"], expected_brier)
    assert bool((marginal_scores(m, m)["nll"] <= scores["nll"]).all())

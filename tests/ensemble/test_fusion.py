"""Mean fusion, majority vote, hard labels and the ``fuse`` dispatcher on hand-made ensembles."""

from __future__ import annotations

import pytest
import torch

from medseg.ensemble import FusionMethod, fuse, hard_labels, majority_vote, mean_fusion, staple


def _binary(*values: list[float]) -> torch.Tensor:
    """Members from rows of voxel values: returns (M, 1, 1, V)."""
    return torch.tensor(values, dtype=torch.float32).reshape(len(values), 1, 1, -1)


def test_hard_labels_threshold_is_strict_and_argmax_for_multiclass() -> None:
    members = _binary([0.49, 0.5, 0.51, 1.0])
    assert hard_labels(members).tolist() == [[[0, 0, 1, 1]]]  # 0.5 is background, as argmax([0.5, 0.5]) = 0
    two_channel = torch.cat([1 - members, members], dim=1)
    assert torch.equal(hard_labels(two_channel), hard_labels(members))
    multi = torch.tensor([[[0.2, 0.5], [0.7, 0.25], [0.1, 0.25]]]).reshape(1, 3, 1, 2)
    assert hard_labels(multi).tolist() == [[[1, 0]]]


def test_mean_fusion_binary_known_values() -> None:
    members = _binary([0.0, 0.2, 1.0], [1.0, 0.6, 1.0])
    expected = torch.tensor([0.5, 0.4, 1.0]).reshape(1, 1, 3)
    assert mean_fusion(members).shape == (1, 1, 3)
    torch.testing.assert_close(mean_fusion(members), expected)


def test_mean_fusion_renormalises_and_clamps_multiclass() -> None:
    # Member 0 sums to 2 over channels (renormalised to 0.5/0.5); member 1 has a value above 1 (clamped).
    members = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.5, 0.0]]).reshape(2, 3, 1, 1)
    fused = mean_fusion(members)
    torch.testing.assert_close(fused.flatten(), torch.tensor([0.25, 0.75, 0.0]))
    torch.testing.assert_close(fused.sum(dim=0), torch.ones(1, 1))


def test_majority_vote_binary_strict_majority_and_tie_to_background() -> None:
    members = _binary([1, 1, 0, 0.6], [1, 0, 0, 0.6], [0, 0, 0, 0.1])
    assert majority_vote(members).flatten().tolist() == [1.0, 0.0, 0.0, 1.0]
    tie = _binary([1.0, 0.0], [0.0, 1.0])
    assert majority_vote(tie).flatten().tolist() == [0.0, 0.0]


def test_majority_vote_multiclass_plurality_one_hot_and_lowest_index_tie() -> None:
    # Voxel 0: labels 2, 2, 1 -> 2. Voxel 1: labels 1, 2, 0 (three-way tie) -> 0. 3D spatial shape (1, 1, 2).
    labels = torch.tensor([[2, 1], [2, 2], [1, 0]])
    members = torch.nn.functional.one_hot(labels, 3).permute(0, 2, 1).reshape(3, 3, 1, 1, 2).float()
    vote = majority_vote(members)
    assert vote.shape == (3, 1, 1, 2)
    assert vote[:, 0, 0, 0].tolist() == [0.0, 0.0, 1.0]
    assert vote[:, 0, 0, 1].tolist() == [1.0, 0.0, 0.0]


def test_fuse_dispatches_to_each_method() -> None:
    members = _binary([0.9, 0.2, 0.6], [0.8, 0.1, 0.3], [0.7, 0.4, 0.2])
    torch.testing.assert_close(fuse(members, "mean"), mean_fusion(members))
    torch.testing.assert_close(fuse(members, FusionMethod.MAJORITY), majority_vote(members))
    torch.testing.assert_close(fuse(members, "staple"), staple(members))
    assert not torch.equal(fuse(members, "mean"), fuse(members, "majority"))


def test_fuse_rejects_unknown_method_and_bad_shapes() -> None:
    members = _binary([0.9, 0.2])
    with pytest.raises(ValueError, match="Unknown fusion method 'median'"):
        fuse(members, "median")
    with pytest.raises(ValueError, match=r"\(M, C, \*spatial\)"):
        mean_fusion(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        majority_vote([[0.1]])  # type: ignore[arg-type]

"""load_weights: unreadable files are one clear error that never advises unsafe loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.networks.weights import load_weights


class Payload:
    def __reduce__(self):  # would run code if the file were unpickled
        return (Path("/nonexistent").touch, ())


@pytest.mark.parametrize(
    ("name", "write", "cause"),
    [
        ("truncated.pt", lambda p: p.write_bytes(b"PK\x03\x04abc"), "truncated"),
        ("random.pt", lambda p: p.write_bytes(bytes(range(200))), "corrupt"),
        ("pickle.pt", lambda p: torch.save({"network": Payload()}, p), "never unpickles"),
    ],
)
def test_unreadable_weights_are_one_line_naming_the_file(
    tmp_path: Path, name: str, write, cause: str
) -> None:
    path = tmp_path / name
    write(path)
    with pytest.raises(ValueError, match=cause) as info:
        load_weights(torch.nn.Linear(2, 2), path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message and "weights_only" not in message

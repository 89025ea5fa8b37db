"""flip_average: raw (official code) and normalized modes, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abdnet.evaluation import flip_average


def test_flip_modes():
    f = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    g = torch.tensor([[0.0, 2.0], [0.0, 10.0]])
    torch.testing.assert_close(flip_average(f, g, "raw"), torch.tensor([[1.5, 3.0], [0.5, 5.0]]))
    # normalized: each L2-normalized first: [0.6, 0.8] & [0, 1] -> [0.3, 0.9]; [1, 0] & [0, 1] -> [0.5, 0.5]
    torch.testing.assert_close(
        flip_average(f, g, "normalized"), torch.tensor([[0.3, 0.9], [0.5, 0.5]])
    )
    out = flip_average(f.numpy(), g.numpy())
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [[1.5, 3.0], [0.5, 5.0]])


def test_flip_bad_inputs():
    with pytest.raises(ValueError, match="flip mode"):
        flip_average(torch.zeros(2, 3), torch.zeros(2, 3), "mean")
    with pytest.raises(ValueError, match="shape"):
        flip_average(torch.zeros(2, 3), torch.zeros(3, 3))

"""Channel |corr| (Fig. 6/7) against numpy.corrcoef and constructed correlations."""

import numpy as np
import pytest
import torch

from abdnet.viz.correlation import batch_correlation_stats, channel_correlation, correlation_stats


def _mixtures(rhos, n, rng):
    """Channel 0 = s0; channel i = rho_i s0 + sqrt(1 - rho_i^2) s_i with independent s."""
    s = rng.standard_normal((len(rhos) + 1, n))
    rows = [s[0]] + [r * s[0] + np.sqrt(1 - r * r) * s[i + 1] for i, r in enumerate(rhos)]
    return np.stack(rows)


def test_matches_numpy_corrcoef_and_known_coefficients():
    rng = np.random.default_rng(0)
    rhos = [0.9, -0.5, 0.0, 0.3]
    f = _mixtures(rhos, 200_000, rng)
    corr, valid = channel_correlation(f)
    np.testing.assert_allclose(corr, np.abs(np.corrcoef(f)), atol=1e-10)
    assert valid.all()
    # population coefficients with channel 0 (sample error ~ 1/sqrt(N))
    np.testing.assert_allclose(corr[0, 1:], np.abs(rhos), atol=0.01)
    # channels i, j >= 1 share only s0: corr = rho_i * rho_j
    assert corr[1, 2] == pytest.approx(abs(0.9 * -0.5), abs=0.01)


def test_mean_offdiag_and_histogram_from_feature_map():
    rng = np.random.default_rng(1)
    f = _mixtures([0.8, 0.6, -0.2], 12 * 8, rng).reshape(4, 12, 8)  # (C, H, W)
    st = correlation_stats(torch.tensor(f, dtype=torch.float64))
    ref = np.abs(np.corrcoef(f.reshape(4, -1)))
    iu = np.triu_indices(4, 1)
    assert st.mean_abs == pytest.approx(ref[iu].mean(), abs=1e-9)
    counts, _ = st.histogram(bins=10)
    assert counts.sum() == 6  # C (C - 1) / 2 pairs


def test_constant_channel_is_excluded_and_reported():
    rng = np.random.default_rng(2)
    f = rng.standard_normal((3, 50))
    f[1] = 0.0  # a dead ReLU channel
    st = correlation_stats(f)
    assert st.constant_channels == 1
    assert st.matrix[1, 0] == 0 and st.matrix[1, 1] == 1
    assert st.offdiag.size == 1
    assert st.mean_abs == pytest.approx(abs(np.corrcoef(f[[0, 2]])[0, 1]))


def test_batch_average_of_per_image_matrices():
    rng = np.random.default_rng(3)
    maps = rng.standard_normal((5, 6, 4, 3))
    st = batch_correlation_stats(maps)
    ref = np.mean([np.abs(np.corrcoef(m.reshape(6, -1))) for m in maps], axis=0)
    np.testing.assert_allclose(st.matrix, ref, atol=1e-10)
    assert st.num_images == 5


def test_bad_shape_is_an_error():
    with pytest.raises(ValueError, match="expected"):
        channel_correlation(np.zeros(5))

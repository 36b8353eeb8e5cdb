"""Tests of mtbc_lib.dedup.registration: SSIM equal to scikit-image's, transforms that compose
and convert, a similarity fit that ignores outlier matches, keypoints that follow a shift,
a Lucas-Kanade refinement that finds a scale and shift, blurs equal to scipy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from mtbc_lib.dedup import registration as reg


def test_ssim_pairs_equals_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)
    base[3] = np.clip(base[0].astype(int) + rng.integers(-20, 20, (32, 32)), 0, 255)  # a near copy
    i, j = np.triu_indices(6, 1)
    got = reg.ssim_pairs(base, i, j)
    want = [structural_similarity(base[a], base[b], data_range=255) for a, b in zip(i, j)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[list(zip(i, j)).index((0, 3))] > 0.8 > max(np.delete(got, list(zip(i, j)).index((0, 3))))


def test_blurs_are_scipys_without_scipy():
    """``blur`` gives scipy.ndimage.gaussian_filter's values within float32 rounding (also
    on an image narrower than the kernel, mirrored more than once; and every 2nd pixel),
    and the keypoints' scale-space operators equal successive gaussian_filter1d blurs of
    the identity."""
    rng = np.random.default_rng(8)
    for shape in [(100, 120), (17, 16), (3, 40)]:
        img = (rng.random(shape) * 255).astype(np.float32)
        for sigma in (0.7, 1.5):
            want = ndi.gaussian_filter(img, sigma)
            out = reg.blur(img, sigma)
            assert out.dtype == np.float32 and out.shape == shape
            np.testing.assert_allclose(out, want, rtol=0, atol=2e-4)
            np.testing.assert_allclose(reg.blur(img, sigma, step=2), want[::2, ::2], rtol=0, atol=2e-4)
    for n in (16, 57):
        cur, prev, want = np.eye(n), 0.0, []
        for s in reg.SIGMAS:
            cur = ndi.gaussian_filter1d(cur, float(np.sqrt(s * s - prev * prev)), axis=0, truncate=3.0)
            want.append(cur)
            prev = s
        np.testing.assert_allclose(reg._blur_operators(n), np.stack(want).astype(np.float32), rtol=0, atol=1e-7)


def test_transforms_compose_and_convert():
    p, q = (1.2, 0.9, 3.0, -4.0), (0.5, 2.0, 1.0, 7.0)
    pq = reg.compose(p, q)
    y = np.array([5.0, 11.0])
    assert pq[0] * y[0] + pq[2] == pytest.approx(p[0] * (q[0] * y[0] + q[2]) + p[2])
    assert reg.compose(p, reg.invert(p)) == pytest.approx((1, 1, 0, 0))
    back = reg.to_full(reg.to_det(p, (0.25, 0.3), (0.5, 0.1)), (0.25, 0.3), (0.5, 0.1))
    assert back == pytest.approx(p)


def test_fit_similarity_recovers_the_transform_despite_outliers():
    rng = np.random.default_rng(0)
    pb = rng.uniform(0, 100, (12, 2))
    pa = 1.5 * pb + np.array([4.0, -7.0])
    pa[:3] = rng.uniform(0, 100, (3, 2))  # three wrong matches
    n, (s, ty, tx) = reg.fit_similarity(pa, pb, np.full(12, np.log(1.5)))
    assert n == 9 and (s, ty, tx) == pytest.approx((1.5, 4.0, -7.0))
    assert reg.fit_similarity(pa[:1], pb[:1], np.zeros(1)) == (0, None)


def test_max_filter_equals_scipy():
    a = np.random.default_rng(6).uniform(0, 5, (5, 23, 31)).astype(np.float32)
    for sizes in [(3, 5, 5), (1, 5, 5), (1, 1, 3), (3, 1, 7)]:
        np.testing.assert_array_equal(reg._max_filter(a, sizes), ndi.maximum_filter(a, sizes, mode="constant"))


def test_keypoints_follow_a_shift_of_the_image():
    g = 100 * ndi.gaussian_filter(np.random.default_rng(1).normal(size=(96, 120)), 3).astype(np.float32)
    kp, desc = reg.keypoints(g, 16)
    kp2, desc2 = reg.keypoints(np.roll(g, (5, 8), axis=(0, 1)), 16)
    assert len(kp) > 4 and desc.shape == (len(kp), reg.DESC * reg.DESC)
    assert np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-4)
    # every blob away from the wrapped border reappears 5 px down, 8 px right, same descriptor
    inner = (kp[:, 0] > 20) & (kp[:, 0] < 60) & (kp[:, 1] > 20) & (kp[:, 1] < 90)
    assert inner.sum() >= 3
    for (y, x, s), d in zip(kp[inner], desc[inner]):
        k = np.argmin(np.abs(kp2[:, 0] - y - 5) + np.abs(kp2[:, 1] - x - 8) + np.abs(kp2[:, 2] - s))
        assert kp2[k, :2] == pytest.approx((y + 5, x + 8)) and d @ desc2[k] > 0.99


def test_separable_sampling_equals_warp():
    """refine samples b rows then columns; it must give warp's values (order-1
    map_coordinates, edges clamped), inside and outside the image."""
    b = np.random.default_rng(2).uniform(0, 255, (40, 52)).astype(np.float32)
    for p in [(1.0, 1.0, 0.0, 0.0), (1.13, 0.91, -3.4, 6.2), (0.8, 1.25, 7.7, -9.1)]:
        want, _, ys, xs = reg.warp(b, p, (46, 50))
        got = reg._sample(b[None], ys[:, 0], xs[0])[0]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


def test_mask_iou_equals_the_iou_of_the_warped_mask():
    """mask_iou samples mask j with two index vectors; it must give the IoU of ``warp``'s
    nearest-pixel sampling (order 0) over the valid region, for crops, rescales, shifts
    and the whole-image stretch alike."""
    rng = np.random.default_rng(3)
    for k in range(300):
        (h, w), (hj, wj) = rng.integers(20, 90, (2, 2))
        mi, mj = rng.random((h, w)) > 0.6, ndi.binary_dilation(rng.random((hj, wj)) > 0.9)
        p = reg.whole((h, w), (hj, wj)) if k % 3 == 0 else (*rng.uniform(0.5, 2, 2), *rng.uniform(-30, 30, 2))
        v, valid, _, _ = reg.warp(mj.astype(np.float32), p, (h, w), order=0)
        a, b = mi[valid], v[valid] > 0.5
        union = (a | b).sum()
        assert reg.mask_iou(mi, mj, p) == (1.0 if union == 0 else (a & b).sum() / union)


def test_refine_recovers_a_scale_and_shift():
    base = 100 * ndi.gaussian_filter(np.random.default_rng(4).normal(size=(90, 110)), 2.5).astype(np.float32)
    p_true = (1.04, 0.97, 2.5, -3.0)  # b -> a
    a, _, _, _ = reg.warp(base, p_true, base.shape)  # a(y, x) = base((y - ty) / sy, ...)
    p = reg.align(a, base, (1.0, 1.0, 0.0, 0.0))
    assert p[:2] == pytest.approx(p_true[:2], abs=0.005) and p[2:] == pytest.approx(p_true[2:], abs=0.05)


def test_refine_keeps_its_start_when_the_images_do_not_overlap():
    """A start that maps b wholly outside a leaves nothing to fit: refine returns it."""
    rng = np.random.default_rng(6)
    a, b = (rng.uniform(0, 255, (40, 50)).astype(np.float32) for _ in range(2))
    start = (1.0, 1.0, 300.0, -400.0)
    assert tuple(reg.align(a, b, start)) == start

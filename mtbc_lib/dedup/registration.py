"""Image geometry for the duplicate search (:mod:`mtbc_lib.dedup.search`): SSIM of thumbnail
pairs, scale-space keypoints with descriptors, and similarity transforms (fit from
keypoint matches, Lucas-Kanade refinement, warping, composition) with the common field
of view of two images.

Coordinates: a transform ``(sy, sx, ty, tx)`` maps pixel centres of image j to image i:
``y_i = sy * y_j + ty``, ``x_i = sx * x_j + tx``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["ssim_pairs", "blur", "keypoints", "fit_similarity", "warp", "align", "overlap_boxes", "mask_iou",
           "to_full", "to_det", "whole", "compose", "invert", "DESC"]

SIGMAS = tuple(1.6 * 2 ** (k / 3) for k in range(8))  # DoG scales, detection-image pixels
DESC = 8  # descriptor grid side (8x8 samples spanning +-4 sigma)


# ----------------------------------------------------------------------------- SSIM

def _window_sums(a: np.ndarray, win: int) -> np.ndarray:
    """Sums over every win x win window lying inside the last two axes (valid windows)."""
    c = np.cumsum(a, axis=-1)
    c = np.concatenate([np.zeros_like(c[..., :1]), c], axis=-1)
    a = c[..., win:] - c[..., :-win]
    c = np.cumsum(a, axis=-2)
    c = np.concatenate([np.zeros_like(c[..., :1, :]), c], axis=-2)
    return c[..., win:, :] - c[..., :-win, :]


def ssim_pairs(thumbs: np.ndarray, i, j, win: int = 7, data_range: float = 255.0,
               batch: int = 512) -> np.ndarray:
    """SSIM of thumbnail pairs as ``skimage.metrics.structural_similarity`` computes it
    with its defaults (uniform ``win`` x ``win`` window, sample covariance, K1 = 0.01,
    K2 = 0.03, mean over the windows inside the image), vectorised: window sums are exact
    integers (cumulative sums in int64), the rest float64.

    thumbs: (N, S, S) uint8; i, j: (P,) int indices. Returns (P,) float64."""
    i = np.asarray(i, dtype=np.int64).reshape(-1)
    j = np.asarray(j, dtype=np.int64).reshape(-1)
    used, inverse = np.unique(np.r_[i, j], return_inverse=True)  # window sums of the thumbnails in a pair only
    i, j = inverse[:len(i)], inverse[len(i):]
    x = np.asarray(thumbs)[used].astype(np.int64)
    n = win * win
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    norm = n / (n - 1.0)
    sx = _window_sums(x, win)
    mu = sx / n
    var = norm * (_window_sums(x * x, win) / n - mu * mu)
    out = np.empty(len(i), dtype=np.float64)
    for a in range(0, len(i), batch):
        ii, jj = i[a:a + batch], j[a:a + batch]
        mi, mj = mu[ii], mu[jj]
        cov = norm * (_window_sums(x[ii] * x[jj], win) / n - mi * mj)
        s = ((2 * mi * mj + c1) * (2 * cov + c2)) / ((mi * mi + mj * mj + c1) * (var[ii] + var[jj] + c2))
        out[a:a + batch] = s.mean(axis=(1, 2))
    return out


# ----------------------------------------------------------------------------- per image

def _max_filter(a: np.ndarray, sizes) -> np.ndarray:
    """Maximum over a centred box of ``sizes`` (odd, one per axis), the box cut at the
    border (for a >= 0 what ``scipy.ndimage.maximum_filter(a, sizes, mode="constant")``
    gives), as shifted in-place ``np.maximum`` passes (faster on these small stacks)."""
    for axis, size in enumerate(sizes):
        if size // 2 == 0:
            continue
        out = a.copy()
        for k in range(1, size // 2 + 1):
            lo = (slice(None),) * axis + (slice(None, -k),)
            hi = (slice(None),) * axis + (slice(k, None),)
            np.maximum(out[lo], a[hi], out=out[lo])
            np.maximum(out[hi], a[lo], out=out[hi])
        a = out
    return a


def _local_maxima(dog: np.ndarray, n: int, margin: np.ndarray, floor: float = 1.0):
    """(level, y, x) of the ``n`` strongest local maxima of ``dog`` (L, H, W; >= 0) over
    3x5x5 neighbourhoods, above ``floor``, on levels 1..L-2, at least ``margin[level]``
    pixels from the border; strongest first."""
    L, h, w = dog.shape
    inner = dog[1:-1]
    across = np.maximum(np.maximum(dog[:-2], inner), dog[2:])  # levels l - 1, l, l + 1
    peak = (inner == _max_filter(across, (1, 5, 5))) & (inner > floor)
    ls, ys, xs = np.unravel_index(np.flatnonzero(peak), peak.shape)  # (np.nonzero is 5x slower here)
    ls = ls + 1
    r = margin[ls]
    ok = (ys >= r) & (xs >= r) & (ys < h - 1 - r) & (xs < w - 1 - r)
    ls, ys, xs = ls[ok], ys[ok], xs[ok]
    order = np.lexsort((xs, ys, ls, -dog[ls, ys, xs]))[:n]
    return ls[order], ys[order], xs[order]


def _kernel(sigma: float, truncate: float) -> np.ndarray:
    """Sampled Gaussian of sd ``sigma``, cut at ``truncate`` sd and summing to 1 (the
    kernel ``scipy.ndimage.gaussian_filter1d`` uses, float64)."""
    r = int(truncate * float(sigma) + 0.5)
    x = np.arange(-r, r + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    return phi / phi.sum()


def _reflect_matrix(kernel: np.ndarray, n: int) -> np.ndarray:
    """(n, n) float64: the correlation of a signal of length n with ``kernel`` (odd
    length), the signal extended by mirroring (d c b a | a b c d | d c b a, scipy.ndimage's
    mode "reflect"), any distance out."""
    r = len(kernel) // 2
    i = np.arange(n)
    j = (i[:, None] + np.arange(-r, r + 1)) % (2 * n)
    j = np.where(j >= n, 2 * n - 1 - j, j)
    return np.bincount((i[:, None] * n + j).ravel(), np.broadcast_to(kernel, j.shape).ravel(), n * n).reshape(n, n)


@lru_cache(maxsize=None)
def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    return _reflect_matrix(_kernel(sigma, 4.0), n).astype(np.float32)


def blur(img: np.ndarray, sigma: float, step: int = 1) -> np.ndarray:
    """Gaussian blur of a 2-D image as float32, every ``step``-th row and column of it:
    scipy.ndimage.gaussian_filter's (mode "reflect", cut at 4 sd) within float32 rounding,
    as two matrix products (about 4x faster on the detection copies, and scipy's import
    would cost each process of the audit about 0.3 s)."""
    h, w = img.shape
    return _blur_matrix(h, sigma)[::step] @ img.astype(np.float32) @ _blur_matrix(w, sigma)[::step].T


@lru_cache(maxsize=None)
def _blur_operators(n: int) -> np.ndarray:
    """(len(SIGMAS), n, n) float32: row k blurs a signal of length n with a Gaussian of
    SIGMAS[k] (mode "reflect"), as successive blurs by sqrt(s_k^2 - s_{k-1}^2), each cut
    at 3 sd, would: one kernel, their convolution, per level."""
    out, kern, prev = [], np.ones(1), 0.0
    for s in SIGMAS:
        kern = np.convolve(kern, _kernel(np.sqrt(s * s - prev * prev), 3.0))
        out.append(_reflect_matrix(kern, n))
        prev = s
    return np.stack(out).astype(np.float32)


def keypoints(g: np.ndarray, n: int):
    """Difference-of-Gaussian blobs of a grey image: (K, 3) [y, x, sigma] and (K, 64)
    unit descriptors (band-pass samples on an 8x8 grid spanning +-4 sigma), K <= n.
    The Gaussian scale space is two matrix products (:func:`_blur_operators` of the
    height and the width)."""
    sig = np.asarray(SIGMAS, dtype=np.float32)
    h, w = g.shape
    rows = (_blur_operators(h).reshape(-1, h) @ g.astype(np.float32)).reshape(len(sig), h, w)
    stack = rows @ _blur_operators(w).transpose(0, 2, 1)
    dog = np.abs((stack[1:] - stack[:-1]) / (sig[1:] / sig[:-1] - 1)[:, None, None])
    ss, ys, xs = _local_maxima(dog, n, np.ceil(DESC / 2 * sig[:-1]).astype(np.int64))
    s = sig[ss]
    u = (np.arange(DESC, dtype=np.float32) - (DESC - 1) / 2) / ((DESC - 1) / 2) * (DESC / 2)
    yy = (ys[:, None, None] + u[None, :, None] * s[:, None, None]) * np.ones((1, 1, DESC), np.float32)
    xx = (xs[:, None, None] + u[None, None, :] * s[:, None, None]) * np.ones((1, DESC, 1), np.float32)
    # bilinear samples (what map_coordinates with order 1 gives; the margin keeps the grid
    # inside) of the blob's level less a level 5 steps coarser
    y, x = yy.reshape(len(ys), DESC * DESC).astype(np.float64), xx.reshape(len(ys), DESC * DESC).astype(np.float64)
    y0 = np.clip(np.floor(y).astype(np.intp), 0, h - 2)
    x0 = np.clip(np.floor(x).astype(np.intp), 0, w - 2)
    fy, fx = y - y0, x - x0
    flat, corner = stack.ravel(), y0 * w + x0

    def bilinear(level):
        at = corner + (level * h * w)[:, None]
        return ((flat[at] * (1 - fx) + flat[at + 1] * fx) * (1 - fy)
                + (flat[at + w] * (1 - fx) + flat[at + w + 1] * fx) * fy)

    d = bilinear(ss) - bilinear(np.minimum(ss + 5, len(sig) - 1))
    d = d - d.mean(axis=1, keepdims=True)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    return np.stack([ys, xs, s], 1).astype(np.float32), d.astype(np.float32)


# ----------------------------------------------------------------------------- alignment

def fit_similarity(pa: np.ndarray, pb: np.ndarray, log_ratio: np.ndarray, tol: float = 2.0):
    """Robust fit of pa = s * pb + t from point matches (each match proposes one
    hypothesis; the one with most inliers is refined by least squares).
    Returns (inlier count, (s, ty, tx)) or (0, None)."""
    if len(pa) < 2:
        return 0, None
    s_h = np.exp(log_ratio)
    t_h = pa - s_h[:, None] * pb                                # (M, 2) one hypothesis per match
    pred = s_h[:, None, None] * pb[None] + t_h[:, None, :]       # (M, M, 2)
    inl = (np.linalg.norm(pa[None] - pred, axis=2) < tol) & (np.abs(log_ratio[None] - log_ratio[:, None]) < 0.3)
    best = inl[np.argmax(inl.sum(1))]
    s, t = 1.0, np.zeros(2)
    for _ in range(3):
        if best.sum() < 2:
            return 0, None
        x, y = pb[best], pa[best]
        xm, ym = x.mean(0), y.mean(0)
        den = ((x - xm) ** 2).sum()
        if den < 1e-6:
            return 0, None
        s = float(((x - xm) * (y - ym)).sum() / den)
        t = ym - s * xm
        best = np.linalg.norm(pa - (s * pb + t), axis=1) < tol
    if not 0.2 < s < 5:
        return 0, None
    return int(best.sum()), (s, float(t[0]), float(t[1]))


def _grid(p, shape, step: int = 1):
    """Coordinates in image j of every ``step``-th pixel row and column of image i
    (``shape``) through p = (sy, sx, ty, tx), j -> i: (ys, xs), float32."""
    sy, sx, ty, tx = p
    return ((np.arange(0, shape[0], step, dtype=np.float32) - ty) / sy,
            (np.arange(0, shape[1], step, dtype=np.float32) - tx) / sx)


def _inside(yy, xx, shape) -> np.ndarray:
    """(len(yy), len(xx)) mask of the grid points that fall inside an image of ``shape``."""
    return ((yy >= 0) & (yy <= shape[0] - 1))[:, None] & ((xx >= 0) & (xx <= shape[1] - 1))[None, :]


def warp(img: np.ndarray, p, shape, order: int = 1, step: int = 1):
    """Sample ``img`` (image j) on the pixel grid of image i (``shape``, every ``step``-th
    pixel) through the transform p = (sy, sx, ty, tx) (j -> i).
    Returns (values, valid mask, ys, xs), each (ceil(H / step), ceil(W / step))."""
    from scipy import ndimage as ndi

    yy, xx = _grid(p, shape, step)
    valid = _inside(yy, xx, img.shape)
    ys, xs = np.meshgrid(yy, xx, indexing="ij")
    return ndi.map_coordinates(img, [ys, xs], order=order, mode="nearest"), valid, ys, xs


def _lerp(coords: np.ndarray, n: int):
    """Linear interpolation of a signal of length n at ``coords``, clamped to [0, n - 1]
    (``map_coordinates``' order 1 with mode "nearest"): the lower neighbour's index, the
    upper one's, and their float32 weights."""
    c = np.minimum(np.maximum(coords.astype(np.float64), 0), n - 1)  # np.clip: the same, slower
    lo = np.minimum(c.astype(np.int64), max(n - 2, 0))  # c = n - 1: lo = n - 2, weight 1 on n - 1
    f = c - lo
    return lo, np.minimum(lo + 1, n - 1), (1 - f).astype(np.float32), f.astype(np.float32)


def _span(v: np.ndarray, n: int) -> slice:
    """The indices of a monotonic ``v`` whose values lie in [0, n - 1], as a slice."""
    ok = np.flatnonzero((v >= 0) & (v <= n - 1))
    return slice(int(ok[0]), int(ok[-1]) + 1) if len(ok) else slice(0, 0)


def _sample(stack: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """``stack`` (k, H, W) sampled on the grid ``yy`` x ``xx`` by bilinear interpolation
    (``warp``'s values): a scale + translation maps the grid row by row and column by
    column, so rows then columns are each a weighted sum of two gathered neighbours."""
    lo, hi, w0, w1 = _lerp(yy, stack.shape[1])
    rows = stack[:, lo] * w0[:, None] + stack[:, hi] * w1[:, None]
    lo, hi, w0, w1 = _lerp(xx, stack.shape[2])
    return rows[:, :, lo] * w0 + rows[:, :, hi] * w1


def align(a: np.ndarray, b: np.ndarray, p, iters: int = 8, step: int = 2):
    """Lucas-Kanade (Gauss-Newton on zero-mean differences, on every ``step``-th pixel of
    a) refinement of p = (sy, sx, ty, tx), b -> a, two grey images (blurred as float32).
    Keeps the start if that correlates better.

    b and its gradients are sampled by :func:`_sample` (the values of ``warp``, with a
    fraction of its per-pixel cost)."""
    a = blur(a, 0.7, step)
    b = blur(b, 0.7)
    grads = np.stack([b, *np.gradient(b)]).astype(np.float32)  # values, d/dy, d/dx
    ry = np.arange(0, a.shape[0] * step, step, dtype=np.float32)
    rx = np.arange(0, a.shape[1] * step, step, dtype=np.float32)
    p0 = p = np.asarray(p, dtype=np.float64)

    def sample(q, with_grads: bool):  # on the grid points inside b: a block of rows and columns
        yy = (ry - np.float32(q[2])) / np.float32(q[0])
        xx = (rx - np.float32(q[3])) / np.float32(q[1])
        r, c = _span(yy, b.shape[0]), _span(xx, b.shape[1])
        return _sample(grads if with_grads else grads[:1], yy[r], xx[c]), a[r, c].ravel(), yy[r], xx[c]

    def corr(q):  # Pearson correlation of a and b sampled through q, over their overlap
        s, x, _, _ = sample(q, False)
        if len(x) <= 32:
            return -1.0
        x, y = x.astype(np.float64), s[0].ravel().astype(np.float64)
        x, y = x - x.mean(), y - y.mean()
        return float(x @ y / np.sqrt((x @ x) * (y @ y)))

    for _ in range(iters):
        (v, jy, jx), av, yy, xx = sample(p, True)
        if len(av) < 32:
            break
        jac = np.empty((4, len(av)))  # d(sampled b) / d(sy, sx, ty, tx), one row each
        jac[0] = (jy * yy[:, None]).ravel()
        jac[1] = (jx * xx[None, :]).ravel()
        jac[2], jac[3] = jy.ravel(), jx.ravel()
        jac *= (-1 / p[[0, 1, 0, 1]])[:, None]
        jac -= jac.mean(1, keepdims=True)
        vv = v.ravel()
        e = (av - av.mean()) - (vv - vv.mean())
        h = jac @ jac.T  # normal equations of the 4-parameter least squares
        w = np.linalg.eigvalsh(h)  # its condition number: h is symmetric, positive semi-definite
        dp = np.linalg.solve(h, jac @ e) if w[0] > 0 and w[-1] < 1e12 * w[0] else np.full(4, np.nan)
        if not np.all(np.isfinite(dp)) or np.abs(dp[:2]).max() > 0.1 or np.abs(dp[2:]).max() > 8:
            break
        p = p + dp
        if np.abs(dp[2:]).max() < 0.01:
            break
    return p if corr(p) >= corr(p0) else p0


def to_full(p_det, scale_i, scale_j):
    """Transform in detection-copy pixels -> full-resolution pixel centres."""
    sy, sx, ty, tx = p_det
    (fyi, fxi), (fyj, fxj) = scale_i, scale_j
    out = []
    for s, t, fi, fj in ((sy, ty, fyi, fyj), (sx, tx, fxi, fxj)):
        out.append((s * fj / fi, (s * (0.5 * fj - 0.5) + t + 0.5) / fi - 0.5))
    return (out[0][0], out[1][0], out[0][1], out[1][1])


def overlap_boxes(shape_i, shape_j, p):
    """Pillow boxes (left, top, right, bottom; pixel edges) of the common field of view
    in image i and in image j, or None if they hardly overlap."""
    sy, sx, ty, tx = p
    ey, ex = ty + 0.5 - 0.5 * sy, tx + 0.5 - 0.5 * sx  # the same map on pixel edges
    (hi, wi), (hj, wj) = shape_i, shape_j
    y0, y1 = max(0.0, ey), min(float(hi), sy * hj + ey)
    x0, x1 = max(0.0, ex), min(float(wi), sx * wj + ex)
    bi = (x0, y0, x1, y1)
    bj = (max(0.0, (x0 - ex) / sx), max(0.0, (y0 - ey) / sy), min(float(wj), (x1 - ex) / sx), min(float(hj), (y1 - ey) / sy))
    if min(bi[2] - bi[0], bi[3] - bi[1], bj[2] - bj[0], bj[3] - bj[1]) < 16:
        return None
    return bi, bj


def mask_iou(mask_i, mask_j, p_det) -> float:
    """IoU of two masks (detection copies) in i's frame over the common field of view;
    1.0 when both are empty there. Mask j is sampled at the nearest pixel (what ``warp``
    with order 0 gives: a scale + translation maps rows and columns separately, so two
    index vectors do it)."""
    yy, xx = _grid(p_det, mask_i.shape)
    valid = _inside(yy, xx, mask_j.shape)

    def nearest(c, n):
        return np.clip(np.floor(c.astype(np.float64) + 0.5), 0, n - 1).astype(np.intp)

    a, b = mask_i[valid], mask_j[np.ix_(nearest(yy, mask_j.shape[0]), nearest(xx, mask_j.shape[1]))][valid]
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def to_det(p, scale_i, scale_j):
    """Full-resolution transform -> detection-copy pixels (inverse of to_full)."""
    sy, sx, ty, tx = p
    (fyi, fxi), (fyj, fxj) = scale_i, scale_j
    out = []
    for s, t, fi, fj in ((sy, ty, fyi, fyj), (sx, tx, fxi, fxj)):
        out.append((s * fi / fj, (s * (0.5 / fj - 0.5) + t + 0.5) * fi - 0.5))
    return (out[0][0], out[1][0], out[0][1], out[1][1])


def whole(shape_i, shape_j):
    """The transform that stretches image j onto image i (what resizing both does)."""
    sy, sx = shape_i[0] / shape_j[0], shape_i[1] / shape_j[1]
    return (sy, sx, 0.5 * sy - 0.5, 0.5 * sx - 0.5)


def compose(p_ij, p_jk):
    """k -> j -> i."""
    return (p_ij[0] * p_jk[0], p_ij[1] * p_jk[1], p_ij[0] * p_jk[2] + p_ij[2], p_ij[1] * p_jk[3] + p_ij[3])


def invert(p):
    return (1 / p[0], 1 / p[1], -p[2] / p[0], -p[3] / p[1])

"""Tests of mtbc_lib.dedup.stages on hand-made inputs: connected components of an edge list,
the whole-image candidate filter, descriptor matching and the keypoint pairs it yields,
SSIM of thumbnail pairs, the common field of view of two images, the scores inside a group
(transforms composed along its edges, an earlier run's scores reused) and the lesion scores."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from mtbc_lib.dedup import DedupConfig, stages
from mtbc_lib.dedup import registration as reg
from mtbc_lib.dedup.decode import Workers


def _texture(seed: int, shape=(120, 120)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = 128 + 400 * ndi.gaussian_filter(rng.normal(size=shape), 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def _partition(labels) -> list[set[int]]:
    groups: dict[int, set[int]] = {}
    for k, g in enumerate(labels):
        groups.setdefault(int(g), set()).add(k)
    return sorted(groups.values(), key=min)


# ----------------------------------------------------------------------------- components

def test_components_of_an_edge_list():
    label = stages.components(7, [0, 2, 1, 6], [2, 4, 5, 6])  # a self-loop on 6
    assert _partition(label) == [{0, 2, 4}, {1, 5}, {3}, {6}]
    assert sorted(set(label.tolist())) == [0, 1, 2, 3] and label.shape == (7,)
    assert stages.components(4, [], []).tolist() == [0, 1, 2, 3]
    # a long chain, given in any order, is one component
    order = np.random.default_rng(0).permutation(999)
    assert set(stages.components(1000, order, order + 1).tolist()) == {0}


def test_numbered_components_number_groups_of_two_or_more_by_first_node():
    out = stages.numbered_components(8, [(5, 6), (1, 3), (3, 0), (7, 7)])
    assert out.tolist() == [1, 1, -1, 1, -1, 2, 2, -1]  # 7 with itself is no group
    assert stages.numbered_components(3, []).tolist() == [-1, -1, -1]


# ----------------------------------------------------------------------------- candidates

def test_plain_candidates_keep_correlated_thumbnails_or_every_pair_of_a_small_folder():
    rng = np.random.default_rng(1)
    small = rng.normal(size=(6, 256)).astype(np.float32) * 40 + 100
    small[1] = small[0] + 25  # the same thumbnail, brighter
    small[4] = small[2]
    i, j = stages.plain_candidates(small, DedupConfig(all_pairs_below=0))
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1), (2, 4)]
    # at most all_pairs_below pairs (here 15): every pair i < j, no filter
    i, j = stages.plain_candidates(small, DedupConfig(all_pairs_below=15))
    assert len(i) == 15 and (i < j).all() and len(set(zip(i.tolist(), j.tolist()))) == 15
    assert len(stages.plain_candidates(small, DedupConfig(all_pairs_below=14))[0]) == 2
    # a lower correlation threshold lets more pairs through, never fewer
    loose = stages.plain_candidates(small, DedupConfig(all_pairs_below=0, candidate_corr=-1.0))
    assert len(loose[0]) == 15


# ----------------------------------------------------------------------------- keypoints

def _keypoint_prep():
    """Three images' keypoints and unit descriptors: image 0's first five keypoints are
    image 1's mapped by y = 1.25 y1 - 3, x = 1.25 x1 + 4.5 (sigma x 1.25), with the same
    descriptors; image 2 shares three descriptors with each of them (too few to align).
    Returns them and the transform 1 -> 0."""
    rng = np.random.default_rng(2)

    def unit(n):
        d = rng.normal(size=(n, reg.DESC * reg.DESC))
        return (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)

    kp1 = np.c_[rng.uniform(5, 90, (6, 2)), rng.uniform(2, 5, 6)].astype(np.float32)
    d1 = unit(6)
    s, ty, tx = 1.25, -3.0, 4.5
    kp0 = np.r_[np.c_[s * kp1[:5, 0] + ty, s * kp1[:5, 1] + tx, s * kp1[:5, 2]],
                np.c_[rng.uniform(5, 90, (2, 2)), [3.0, 4.0]]].astype(np.float32)
    d0 = np.r_[d1[:5], unit(2)]
    kp2 = np.c_[rng.uniform(5, 90, (4, 2)), rng.uniform(2, 5, 4)].astype(np.float32)
    d2 = np.r_[d1[:3], unit(1)]
    return [{"kp": kp0, "desc": d0}, {"kp": kp1, "desc": d1}, {"kp": kp2, "desc": d2}], (s, s, ty, tx)


def test_matched_descriptors_give_the_aligned_pair_only():
    prep, p_10 = _keypoint_prep()
    cfg = DedupConfig()
    with Workers(1) as pool:
        found = stages.keypoint_pairs(prep, cfg, stages.match_descriptors(prep, cfg, pool))
    assert len(found) == 1  # image 2's three matches with each are too few
    i, j, n_in, p = found[0]
    assert (i, j, n_in) == (0, 1, 5)
    assert p == pytest.approx(p_10, abs=1e-4)  # j -> i
    # at least six matches: none now
    assert stages.keypoint_pairs(prep, DedupConfig(min_inliers=6),
                                 stages.match_descriptors(prep, cfg, Workers(1))) == []


def test_matching_in_blocks_of_rows_gives_the_same_matches(monkeypatch):
    prep, _ = _keypoint_prep()
    cfg = DedupConfig(min_desc_corr=0.99)

    def matches(block):
        monkeypatch.setattr(stages, "_BLOCK", block)
        starts, done = stages.match_descriptors(prep, cfg, Workers(1))
        rows = [(r + a, c + a) for (r, c, _), a in zip(done, starts) for r, c in zip(r, c)]
        return sorted((int(r), int(c)) for r, c in rows), len(starts)

    whole, n_blocks = matches(1024)
    # the shared descriptors: 5 between images 0 and 1, 3 between 0 and 2, 3 between 1 and 2
    assert n_blocks == 1 and len(whole) == 11
    assert all(r < c for r, c in whole)  # the upper triangle, no descriptor with itself
    assert (0, 7) in whole and (0, 13) in whole and (7, 13) in whole  # descriptor 0 of each image
    blocked, n_blocks = matches(3)
    assert n_blocks == 6 and blocked == whole  # 17 descriptors in blocks of 3


def test_no_keypoints_no_pairs():
    prep = [{"kp": np.zeros((0, 3), np.float32), "desc": np.zeros((0, reg.DESC * reg.DESC), np.float32)}] * 3
    cfg = DedupConfig()
    assert stages.keypoint_pairs(prep, cfg, stages.match_descriptors(prep, cfg, Workers(1))) == []


# ----------------------------------------------------------------------------- SSIM and overlap

def test_ssim_of_pairs_of_thumbnails():
    a, b = _texture(3, (32, 32)), _texture(4, (32, 32))
    out = stages.ssim_of([(a, a), (a, b), (b, a)])
    assert out.shape == (3,) and out[0] == pytest.approx(1.0) and out[1] < 0.5 and out[1] == pytest.approx(out[2])
    assert out[1] == pytest.approx(reg.ssim_pairs(np.stack([a, b]), [0], [1])[0])
    assert stages.ssim_of([]).shape == (0,)


def test_aligned_thumbs_cut_the_common_field_of_view():
    big = _texture(5)
    crop = big[10:60, 20:100]  # image j: a crop of image i, so j -> i is a shift by (10, 20)
    cfg = DedupConfig(size=32)
    ti, tj, cover = stages.aligned_thumbs(big, crop, (1.0, 1.0, 10.0, 20.0), cfg)
    assert ti.shape == tj.shape == (32, 32) and ti.dtype == np.uint8
    assert cover == pytest.approx(1.0)  # the crop lies inside the image
    assert stages.ssim_of([(ti, tj)])[0] > 0.99
    # the whole-image map compares other content
    assert stages.ssim_of([stages.aligned_thumbs(big, crop, reg.whole(big.shape, crop.shape), cfg)[:2]])[0] < 0.5
    assert stages.aligned_thumbs(big, crop, (1.0, 1.0, 10.0, 20.0), cfg, size=16)[0].shape == (16, 16)
    # half of the crop outside image i: half of it is covered
    assert stages.aligned_thumbs(big, crop, (1.0, 1.0, 10.0, 80.0), cfg)[2] == pytest.approx(0.5)
    assert stages.aligned_thumbs(big, crop, (1.0, 1.0, 500.0, 20.0), cfg) is None  # no overlap


# ----------------------------------------------------------------------------- a group and lesions

def _group():
    """Three crops of one texture with a disc-shaped mask: image 1 is shifted (10, 5) from
    image 0, image 2 (10, 10) from image 1; detection copies at full resolution."""
    base = _texture(6, (140, 140))
    yy, xx = np.mgrid[:140, :140]
    lesion = (yy - 70) ** 2 + (xx - 65) ** 2 < 20 ** 2
    cuts = [(0, 0), (10, 5), (20, 15)]
    images = [base[y: y + 100, x: x + 100] for y, x in cuts]
    masks = [lesion[y: y + 100, x: x + 100] for y, x in cuts]
    cfg = DedupConfig()
    prep = [{"shape": im.shape, "det": im, "det_mask": m, "scale": (1.0, 1.0)} for im, m in zip(images, masks)]
    thumbs = np.stack([np.asarray(Image.fromarray(im).resize((cfg.size, cfg.size), Image.Resampling.BILINEAR))
                       for im in images])
    return images, prep, thumbs, cfg


def test_complete_groups_composes_transforms_along_the_edges():
    images, prep, thumbs, cfg = _group()
    transforms = {(0, 1): (1.0, 1.0, 10.0, 5.0), (1, 2): (1.0, 1.0, 10.0, 10.0)}
    scored = {k: {"plain_ssim": 0.5, "aligned_ssim": 0.99, "overlap": 0.8, "sy": p[0], "sx": p[1], "ty": p[2],
                  "tx": p[3]} for k, p in transforms.items()}
    stages.complete_groups([[0, 1, 2]], sorted(transforms), scored, transforms, prep, images, thumbs, cfg)
    row = scored[(0, 2)]  # no direct alignment: image 2 -> 1 -> 0
    assert (row["sy"], row["sx"], row["ty"], row["tx"]) == pytest.approx((1.0, 1.0, 20.0, 15.0))
    assert row["aligned_ssim"] > 0.99 > 0.6 > row["plain_ssim"]
    assert row["overlap"] == pytest.approx(80 * 85 / 100 ** 2)
    assert row["mask_iou"] == pytest.approx(1.0)  # the same lesion, aligned
    assert scored[(0, 1)]["mask_iou"] == pytest.approx(1.0) and scored[(0, 1)]["plain_ssim"] == 0.5  # kept


def test_complete_groups_reuses_an_earlier_runs_scores_of_the_same_transform():
    images, prep, thumbs, cfg = _group()
    transforms = {(0, 1): (1.0, 1.0, 10.0, 5.0), (1, 2): (1.0, 1.0, 10.0, 10.0)}
    same = {"plain_ssim": 0.2, "aligned_ssim": 0.123, "overlap": 0.5, "mask_iou": 0.7,
            "sy": 1.0, "sx": 1.0, "ty": 20.0, "tx": 15.0}
    scored = {k: {"plain_ssim": 0.5} for k in transforms}
    stages.complete_groups([[0, 1, 2]], sorted(transforms), scored, transforms, prep, images, thumbs, cfg,
                           known={(0, 2): same})
    assert scored[(0, 2)] == same
    other = {**same, "tx": 14.0}  # aligned by an earlier run with another transform: scored again
    scored = {k: {"plain_ssim": 0.5} for k in transforms}
    stages.complete_groups([[0, 1, 2]], sorted(transforms), scored, transforms, prep, images, thumbs, cfg,
                           known={(0, 2): other})
    assert scored[(0, 2)]["plain_ssim"] == 0.2  # the whole-image SSIM does not depend on it
    assert scored[(0, 2)]["aligned_ssim"] > 0.99 and scored[(0, 2)]["mask_iou"] == pytest.approx(1.0)


def test_lesion_scores_skip_pairs_inside_a_group_and_reuse_known_scores():
    images, prep, _, cfg = _group()
    prep = prep + [{**prep[1], "det": images[1].copy()}]  # image 3: a copy of image 1
    scored = {(0, 1): {}, (0, 2): {"sy": 1.0, "sx": 1.0, "ty": 20.0, "tx": 15.0}, (1, 3): {}, (2, 3): {}}
    known = {(0, 2): {"lesion_ssim": 0.42, "sy": 1.0, "sx": 1.0, "ty": 20.0, "tx": 15.0},
             (2, 3): {"lesion_ssim": 0.42}}  # no transform then, none now: the same
    stages.lesion_scores(scored, np.array([1, 1, -1, -1]), prep, cfg, known)
    assert "lesion_ssim" not in scored[(0, 1)]  # one same-scan group
    assert scored[(0, 2)]["lesion_ssim"] == 0.42 and scored[(2, 3)]["lesion_ssim"] == 0.42
    assert scored[(1, 3)]["lesion_ssim"] == pytest.approx(1.0)  # a copy, whole-image map
    fresh = {(0, 2): {"sy": 1.0, "sx": 1.0, "ty": 20.0, "tx": 15.0}}
    stages.lesion_scores(fresh, np.array([1, 1, -1, -1]), prep, cfg)
    assert fresh[(0, 2)]["lesion_ssim"] > 0.9  # aligned, then compared at lesion_size


def test_align_many_returns_the_alignments_in_order():
    a = _texture(7, (60, 60)).astype(np.float32)
    jobs = [(a, a, (1.0, 1.0, 0.0, 0.0), 4, 0), (a, a, (1.0, 1.0, 0.5, -0.5), 4, 1.5)]
    out = list(stages.align_many(jobs, Workers(1)))
    assert len(out) == 2 and all(isinstance(p, tuple) and len(p) == 4 for p in out)
    assert out[0] == pytest.approx(tuple(reg.align(a, a, jobs[0][2], iters=4)))
    assert out[1] == pytest.approx(tuple(reg.align(reg.blur(a, 1.5), reg.blur(a, 1.5), jobs[1][2], iters=4)))
    assert out[1] == pytest.approx((1.0, 1.0, 0.0, 0.0), abs=0.05)  # back to the identity

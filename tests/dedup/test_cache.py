"""Tests of mtbc_lib.dedup.cache: the per-image features and the verified pairs written and
read back unchanged (damaged files read as nothing cached), the cache keys (the features'
key ignores search-only settings; both change when a file's size or mtime changes), the
keep-list key; and, through find_groups, a second search that decodes no PNG and a
keep-list searched once."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from synthetic import write_synthetic_lesions

from mtbc_lib import dedup
from mtbc_lib.data.busi import scan_busi
from mtbc_lib.dedup import cache
from mtbc_lib.dedup import registration as reg


def _features(k: int, n_kp: int, det_shape=(17, 23)) -> dict:
    """One image's features as dedup.decode.prepare returns them (random values)."""
    rng = np.random.default_rng(k)
    return {"shape": (40 + k, 50 + k), "thumb": rng.integers(0, 256, (8, 8), dtype=np.uint8),
            "small": rng.random(256, dtype=np.float32), "det": rng.integers(0, 256, det_shape, dtype=np.uint8),
            "det_mask": rng.random(det_shape) > 0.5, "scale": (det_shape[0] / (40 + k), det_shape[1] / (50 + k)),
            "kp": rng.random((n_kp, 3), dtype=np.float32), "desc": rng.random((n_kp, reg.DESC * reg.DESC),
                                                                               dtype=np.float32),
            "image": rng.integers(0, 256, (40 + k, 50 + k), dtype=np.uint8)}


def _bump_mtime(path, seconds: int = 10) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


# ----------------------------------------------------------------------------- features

def test_features_round_trip_without_the_full_images(tmp_path):
    """Images of different detection sizes and keypoint counts (none for one of them)
    come back equal, field by field and in order; the full image is not stored."""
    prep = [_features(0, 5), _features(1, 0, det_shape=(16, 31)), _features(2, 3, det_shape=(9, 9))]
    path = tmp_path / "f.npz"
    cache.save_features(path, prep)
    back = cache.load_features(path)
    assert len(back) == 3 and not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*"))
    for want, got in zip(prep, back):
        assert set(got) == set(want) - {"image"}
        assert got["shape"] == want["shape"] and got["scale"] == pytest.approx(want["scale"])
        for k in ("thumb", "small", "det", "det_mask", "kp", "desc"):
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
    assert back[1]["kp"].shape == (0, 3) and back[1]["desc"].shape == (0, reg.DESC * reg.DESC)


def test_missing_or_incomplete_features_read_as_none(tmp_path):
    assert cache.load_features(tmp_path / "absent.npz") is None
    (tmp_path / "text.npz").write_text("not an npz")
    assert cache.load_features(tmp_path / "text.npz") is None
    path = tmp_path / "partial.npz"
    np.savez(path, thumb=np.zeros((1, 8, 8), np.uint8))  # other arrays missing
    assert cache.load_features(path) is None


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_features_read_as_none(tmp_path, damage):
    """"A damaged cache file is recomputed": a truncated or empty features file reads as
    nothing cached (find_groups then decodes again) instead of failing the search."""
    path = tmp_path / "f.npz"
    cache.save_features(path, [_features(0, 5), _features(1, 2)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    assert cache.load_features(path) is None


# ----------------------------------------------------------------------------- pairs

def test_pairs_round_trip_drops_non_finite_scores(tmp_path):
    scored = {(2, 5): {"plain_ssim": 0.25, "aligned_ssim": 0.97, "sy": 1.25, "sx": 1.25, "ty": -3.0, "tx": 4.5,
                       "overlap": 0.8, "inliers": 6},
              (0, 1): {"plain_ssim": 0.99, "lesion_ssim": float("nan"), "mask_iou": float("inf")}}
    matches = [(2, 5, 6, (1.25, 1.25, -3.0, 4.5)), (3, 4, 4, (np.float32(0.5),) * 4)]
    path = tmp_path / "p.json"
    cache.save_pairs(path, scored, matches)
    pairs, back = cache.load_pairs(path)
    assert pairs == {(0, 1): {"plain_ssim": 0.99}, (2, 5): scored[(2, 5)]}
    assert list(pairs) == [(0, 1), (2, 5)] and all(type(a) is int for k in pairs for a in k)
    assert back == [(2, 5, 6, (1.25, 1.25, -3.0, 4.5)), (3, 4, 4, (0.5, 0.5, 0.5, 0.5))]
    assert json.loads(path.read_text())["pairs"][0] == [0, 1, {"plain_ssim": 0.99}]


def test_missing_or_damaged_pairs_read_as_nothing_cached(tmp_path):
    assert cache.load_pairs(tmp_path / "absent.json") == ({}, None)
    for text in ("{not json", json.dumps({"pairs": []}), json.dumps({"pairs": [[0]], "keypoint_pairs": []})):
        (tmp_path / "bad.json").write_text(text)
        assert cache.load_pairs(tmp_path / "bad.json") == ({}, None), text


# ----------------------------------------------------------------------------- keys

def test_cache_paths_follow_the_settings_and_the_files(make_busi, tmp_path):
    root = make_busi(n_per_class=1, size=(32, 40))
    index = scan_busi(root)
    cfg = dedup.DedupConfig()
    feat, pairs = cache.cache_paths(index, cfg)
    assert feat.parent == pairs.parent == tmp_path / "cache"  # core.cache_dir(): $MTBC_CACHE
    assert feat.name.startswith("audit_features_") and feat.suffix == ".npz"
    assert pairs.name.startswith("audit_pairs_") and pairs.suffix == ".json"
    assert cache.cache_paths(index, dedup.DedupConfig()) == (feat, pairs)
    # a setting of the search only: same features, other verified pairs
    f2, p2 = cache.cache_paths(index, dedup.DedupConfig(threshold=0.9))
    assert f2 == feat and p2 != pairs
    # a setting of the features: both change
    f3, p3 = cache.cache_paths(index, dedup.DedupConfig(size=32))
    assert f3 != feat and p3 != pairs
    # a file's mtime (a mask's too): both change
    _bump_mtime(root / "benign" / "benign (1)_mask.png")
    f4, p4 = cache.cache_paths(index, cfg)
    assert f4 != feat and p4 != pairs


def test_files_digest_reads_names_sizes_and_mtimes_not_contents(make_busi):
    root = make_busi(n_per_class=1, size=(32, 40))
    index = scan_busi(root)
    before = cache.files_digest(index).hexdigest()
    png = root / "normal" / "normal (1).png"
    st = png.stat()
    data = bytearray(png.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    png.write_bytes(bytes(data))
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.files_digest(index).hexdigest() == before
    _bump_mtime(png)
    assert cache.files_digest(index).hexdigest() != before


def test_data_key_changes_when_a_file_or_a_setting_changes(make_busi):
    root = make_busi(n_per_class=1, size=(32, 40))
    cfg = dedup.DedupConfig()
    key = cache.data_key(root, cfg)
    assert len(key) == 20 and key == cache.data_key(root, dedup.DedupConfig())
    assert cache.data_key(root, dedup.DedupConfig(lesion=False)) != key
    png = root / "malignant" / "malignant (1).png"
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(png)  # another image, another size
    changed = cache.data_key(root, cfg)
    assert changed != key
    _bump_mtime(png)
    assert cache.data_key(root, cfg) not in (key, changed)


# ----------------------------------------------------------------------------- through find_groups

def test_keep_list_is_cached(synthetic, monkeypatch, tmp_path):
    root, r = synthetic
    monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "c"))
    assert dedup.keep_list(root, "keep-one") == r.keep("keep-one")
    cached, = (tmp_path / "c").glob("dedup_*.json")
    assert json.loads(cached.read_text())["groups"][1] == [["normal", 3], ["normal", 4]]

    def boom(*a, **k):
        raise AssertionError("searched again")

    monkeypatch.setattr(dedup.search, "find_groups", boom)
    assert dedup.keep_list(root, "drop-all") == r.keep("drop-all")
    with pytest.raises(ValueError, match="unknown curation rule"):
        dedup.keep_list(root, "none")


def test_second_run_reads_no_png_matches_no_keypoint_and_finds_the_same(tmp_path, monkeypatch):
    import pandas as pd

    from mtbc_lib import data

    root = write_synthetic_lesions(tmp_path / "BUSI")
    first = dedup.find_groups(root, progress=False, workers=1)
    cached = sorted(p.name.split("_")[1] for p in (tmp_path / "cache").glob("audit_*"))
    assert cached == ["features", "pairs"]
    assert dedup.find_groups(root, progress=False, workers=1, cache=False).pairs.equals(first.pairs)

    def boom(*a, **k):
        raise AssertionError("decoded a PNG")

    with monkeypatch.context() as m:
        m.setattr(dedup.search, "decode_all", boom)
        m.setattr(data.busi, "read_image", boom)
        m.setattr(dedup.search, "match_descriptors", boom)  # the candidates are kept too
        m.setattr(dedup.search, "keypoint_pairs", boom)
        second = dedup.find_groups(root, progress=False, workers=1)
    pd.testing.assert_frame_equal(second.pairs, first.pairs)
    pd.testing.assert_frame_equal(second.groups, first.groups)
    pd.testing.assert_frame_equal(second.lesions, first.lesions)
    # a changed file is a new folder: decoded again
    png = root / "benign" / "benign (4).png"
    Image.fromarray(np.asarray(Image.open(png))[:, ::-1]).save(png)
    assert len(list((tmp_path / "cache").glob("audit_features_*"))) == 1
    dedup.find_groups(root, progress=False, workers=1)
    assert len(list((tmp_path / "cache").glob("audit_features_*"))) == 2

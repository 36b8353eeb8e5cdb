"""Tests of mtbc_lib.dedup.decode: what :func:`prepare` computes of one generated PNG (the
thumbnails, the detection copy at about ``det_pixels`` pixels, its mask, the keypoints), the
image written to shared memory, :class:`Workers` with one worker (in order, lazily, no pool),
:func:`decode_all` on a small folder, and :class:`Images`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from mtbc_lib.data.busi import DataError, read_image, scan_busi
from mtbc_lib.dedup import DedupConfig, decode
from mtbc_lib.dedup import registration as reg

FEATURES = {"shape", "thumb", "small", "det", "det_mask", "scale", "kp", "desc"}


def _write(tmp_path, shape=(60, 80), seed=0):
    """A textured PNG of ``shape`` (H, W) with a rectangular lesion mask; (image, [mask], array)."""
    h, w = shape
    rng = np.random.default_rng(seed)
    img = np.clip(128 + 500 * ndi.gaussian_filter(rng.normal(size=shape), 2), 0, 255).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[h // 4: h // 2, w // 4: w // 2] = 255
    path, mpath = tmp_path / f"img{seed}.png", tmp_path / f"img{seed}_mask.png"
    Image.fromarray(img).save(path)
    Image.fromarray(mask).convert("1").save(mpath)
    return path, [mpath], img


def test_prepare_returns_the_features_of_one_image(tmp_path):
    path, masks, img = _write(tmp_path)
    cfg = DedupConfig(size=32, keypoints=8)
    out = decode.prepare(path, masks, cfg)
    assert set(out) == FEATURES | {"image"} and out["shape"] == (60, 80)
    np.testing.assert_array_equal(out["image"], img)
    want = np.asarray(Image.fromarray(img).resize((32, 32), Image.Resampling.BILINEAR))
    assert out["thumb"].dtype == np.uint8 and out["thumb"].shape == (32, 32)
    np.testing.assert_array_equal(out["thumb"], want)
    small = np.asarray(Image.fromarray(want).resize((16, 16), Image.Resampling.BOX), np.float32).ravel()
    assert out["small"].dtype == np.float32 and out["small"].shape == (256,)
    np.testing.assert_array_equal(out["small"], small)
    # the detection copy: about det_pixels (12000) pixels, the image enlarged
    assert out["det"].shape == (95, 126) and out["det"].dtype == np.uint8
    assert out["scale"] == pytest.approx((95 / 60, 126 / 80))
    # its mask: the lesion rectangle (rows 15-29, columns 20-39) at that scale
    m = out["det_mask"]
    assert m.shape == (95, 126) and m.dtype == bool
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    assert abs(rows[0] - 15 * 95 / 60) <= 1 and abs(rows[-1] + 1 - 30 * 95 / 60) <= 1
    assert abs(cols[0] - 20 * 126 / 80) <= 1 and abs(cols[-1] + 1 - 40 * 126 / 80) <= 1
    # keypoints on the detection copy: at most ``keypoints``, one unit descriptor each
    kp, desc = out["kp"], out["desc"]
    assert 0 < len(kp) <= 8 and kp.shape[1] == 3 and desc.shape == (len(kp), reg.DESC * reg.DESC)
    assert kp.dtype == desc.dtype == np.float32
    assert (kp[:, 0] >= 0).all() and (kp[:, 0] < 95).all() and (kp[:, 1] >= 0).all() and (kp[:, 1] < 126).all()
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("shape, det_pixels, det_shape", [
    ((150, 200), 12000, (95, 126)),  # reduced
    ((60, 80), 12000, (95, 126)),    # enlarged
    ((60, 80), 100, (16, 16)),       # never below 16 px a side
])
def test_the_detection_copy_has_about_det_pixels(tmp_path, shape, det_pixels, det_shape):
    path, masks, _ = _write(tmp_path, shape)
    out = decode.prepare(path, masks, DedupConfig(det_pixels=det_pixels, extended=False))
    assert out["det"].shape == out["det_mask"].shape == det_shape
    assert out["scale"] == pytest.approx((det_shape[0] / shape[0], det_shape[1] / shape[1]))
    # no keypoint search without the extended search
    assert out["kp"].shape == (0, 3) and out["desc"].shape == (0, reg.DESC * reg.DESC)
    assert out["kp"].dtype == out["desc"].dtype == np.float32


def test_prepare_writes_the_image_to_shared_memory_at_its_slot(tmp_path):
    path, masks, img = _write(tmp_path)
    cfg = DedupConfig(extended=False)
    with decode.Workers(1) as pool:
        arena = pool.shared(img.size + 10)
        assert arena.dtype == np.uint8 and len(arena) == img.size + 10 and not arena.any()
        out = decode.prepare(path, masks, cfg, slot=(10, img.size))
        assert "image" not in out
        np.testing.assert_array_equal(arena[10:].reshape(img.shape), img)
        assert not arena[:10].any()
        # a slot of another size (the header said otherwise): the image comes back
        np.testing.assert_array_equal(decode.prepare(path, masks, cfg, slot=(0, 100))["image"], img)
    assert decode._SHARED is None  # released with the pool
    np.testing.assert_array_equal(decode.prepare(path, masks, cfg, slot=(10, img.size))["image"], img)


def test_one_worker_maps_in_order_lazily_in_this_process():
    calls = []

    def add(a, b):
        calls.append((a, b))
        return a + b

    with decode.Workers(1) as pool:
        done = pool.map(add, [1, 2, 3], (10, 20, 30))
        assert calls == []  # each call runs when the iterator reaches it
        assert list(done) == [11, 22, 33] and calls == [(1, 10), (2, 20), (3, 30)]
        assert list(pool.map(add, [], [])) == []
        assert pool._pool is None  # no process started
        assert len(pool.shared(0)) == 1


def test_decode_all_with_one_worker(make_busi):
    root = make_busi(n_per_class=2, size=(40, 50))
    index = scan_busi(root)
    events = []
    prepare = decode.prepare

    def spy(*args):
        events.append("prepare")
        return prepare(*args)

    cfg = DedupConfig(extended=False)
    with pytest.MonkeyPatch.context() as m, decode.Workers(1) as pool:
        m.setattr(decode, "prepare", spy)
        prep = decode.decode_all(index, cfg, pool, progress=False, meanwhile=lambda: events.append("meanwhile"))
        arena = decode._SHARED
        assert all(np.shares_memory(p["image"], arena) for p in prep)  # through the shared memory
    assert events == ["meanwhile"] + ["prepare"] * 6  # called once, before the decoding
    assert len(prep) == 6
    for p, path in zip(prep, index["image"]):
        assert set(p) == FEATURES | {"image"} and p["shape"] == (40, 50)
        np.testing.assert_array_equal(p["image"], read_image(path))
    assert not np.array_equal(prep[0]["image"], prep[1]["image"])  # each image at its own slot


def test_decode_all_names_a_broken_png(make_busi):
    root = make_busi(n_per_class=1, size=(40, 50))
    (root / "malignant" / "malignant (1).png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with decode.Workers(1) as pool, pytest.raises(DataError, match=r"malignant \(1\)\.png"):
        decode.decode_all(scan_busi(root), DedupConfig(extended=False), pool, progress=False)


def test_images_by_row_decoded_or_read_on_first_use(make_busi):
    root = make_busi(n_per_class=1, size=(40, 50))
    index = scan_busi(root)
    prep = [{"image": np.full((2, 2), k, np.uint8)} if k != 1 else {} for k in range(3)]
    images = decode.Images(index, prep)
    assert all("image" not in p for p in prep)  # taken over
    assert images[0].tolist() == [[0, 0], [0, 0]] and images[2].tolist() == [[2, 2], [2, 2]]
    np.testing.assert_array_equal(images[1], read_image(index["image"][1]))  # read from its file
    assert images[1] is images[1]  # once

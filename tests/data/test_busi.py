"""Tests of mtbc_lib.data.busi: indexing, PNG modes, masks, resizing, the array cache, bad input
and keep-list files. Tiny generated PNGs in tmp_path; real-data checks behind @pytest.mark.data."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png
from PIL import Image

from mtbc_lib import data
from mtbc_lib.data import busi as busi_io
from mtbc_lib.data.busi import DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch, request):
    """Keep tiny-data caches out of the user's cache (real-data tests use the real one)."""
    if request.node.get_closest_marker("data") is None:
        monkeypatch.setenv("MTBC_CACHE", str(tmp_path / "cache"))


def _npz_files() -> list[Path]:
    return sorted(Path(os.environ["MTBC_CACHE"]).glob("*.npz")) if Path(os.environ["MTBC_CACHE"]).exists() else []


# ----------------------------------------------------------------------------- indexing


def test_index_sorted_with_all_mask_files(make_busi):
    root = make_busi(n_per_class=2)
    # a benign image with id 10 (numeric order: 1, 2, 10) and two extra lesion masks
    write_png(root / "benign" / "benign (10).png", np.full((64, 64), 90, np.uint8), "L")
    for suffix in ("_mask", "_mask_1", "_mask_2"):
        write_png(root / "benign" / f"benign (10){suffix}.png", np.zeros((64, 64), bool))
    (root / "SOURCE.md").write_text("ignored: not a class folder")
    (root / "benign" / ".DS_Store").write_text("ignored: hidden")

    df = data.index_busi(root)
    assert list(df.columns) == ["class", "id", "label", "name", "image", "masks"]
    assert list(zip(df["class"], df["id"])) == [
        ("benign", 1), ("benign", 2), ("benign", 10), ("malignant", 1), ("malignant", 2),
        ("normal", 1), ("normal", 2)]
    assert list(df["label"]) == [0, 0, 0, 1, 1, 2, 2]
    row = df.iloc[2]
    assert row["name"] == "benign (10)" and row["image"] == root / "benign" / "benign (10).png"
    assert [p.name for p in row["masks"]] == ["benign (10)_mask.png", "benign (10)_mask_1.png",
                                              "benign (10)_mask_2.png"]
    assert all(len(m) == 1 for m in df["masks"].drop(index=2))


# ----------------------------------------------------------------------------- PNG modes

@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_read_image_grey_roundtrip_every_mode(tmp_path, mode):
    grey = np.random.default_rng(0).integers(0, 256, (48, 64), dtype=np.uint8)
    p = write_png(tmp_path / "x.png", grey, mode)
    assert Image.open(p).mode == mode
    out = data.read_image(p)
    assert out.dtype == np.uint8 and out.shape == (48, 64)
    np.testing.assert_array_equal(out, grey)


def test_read_image_mode_1_and_colour_luma(tmp_path):
    bits = np.zeros((8, 8), bool)
    bits[2:5, 3:7] = True
    p = write_png(tmp_path / "bits.png", bits)
    assert Image.open(p).mode == "1"
    np.testing.assert_array_equal(data.read_image(p), bits.astype(np.uint8) * 255)
    # colour pixels: ITU-R 601-2 luma, not the channel mean (red: 76, mean would be 85)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    rgb[0, 0] = (0, 0, 255)
    out = data.read_image(write_png(tmp_path / "red.png", rgb, "RGB"))
    assert out[1, 1] == 76 and out[0, 0] == 29


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "RGBA"])
def test_read_mask_every_mode(tmp_path, mode):
    m = np.zeros((40, 30), bool)
    m[5:20, 10:25] = True
    arr = m.astype(np.uint8) * 255
    if mode in ("RGB", "RGBA"):
        arr = np.stack([arr] * 3, -1)
    p = write_png(tmp_path / "m.png", arr, mode)
    assert Image.open(p).mode == mode
    out = data.read_mask(p)
    assert out.dtype == bool and set(np.unique(out.view(np.uint8))) == {0, 1}
    np.testing.assert_array_equal(out, m)


def test_read_mask_l_with_values_0_1_and_transparent_rgba(tmp_path):
    m = np.zeros((10, 10), np.uint8)
    m[2:4, 2:4] = 1  # 0/1-valued L mask is still a lesion
    np.testing.assert_array_equal(data.read_mask(write_png(tmp_path / "a.png", m, "L")), m > 0)
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[5:, :, 3] = 255  # top half fully transparent: background
    np.testing.assert_array_equal(data.read_mask(write_png(tmp_path / "b.png", rgba, "RGBA")),
                                  np.arange(10)[:, None].repeat(10, 1) >= 5)


def test_mask_union_of_two_files(tmp_path):
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[2:6, 2:6] = True
    b[10:15, 12:18] = True
    pa = write_png(tmp_path / "x_mask.png", a)
    pb = write_png(tmp_path / "x_mask_1.png", np.stack([b.astype(np.uint8) * 255] * 4, -1), "RGBA")
    out = data.read_mask([pa, pb])
    np.testing.assert_array_equal(out, a | b)
    assert out.sum() == a.sum() + b.sum()


def _raw_png(path: Path, arr: np.ndarray, depth: int, colour_type: int, trns: bytes = b"") -> Path:
    """A PNG of any bit depth (1-16) and colour type (0 grey, 2 RGB, 6 RGBA), no filtering,
    with an optional tRNS chunk: the variants Pillow cannot write."""
    h, w = arr.shape[:2]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    if depth == 16:
        rows = arr.astype(">u2").reshape(h, -1).view(np.uint8)
    elif depth < 8:  # pack 8 // depth samples a byte, most significant first
        per = 8 // depth
        a = np.pad(arr.astype(np.uint8), ((0, 0), (0, -w % per))).reshape(h, -1, per)
        rows = np.bitwise_or.reduce(a << (8 - depth * np.arange(1, per + 1)).astype(np.uint8), axis=2)
    else:
        rows = arr.reshape(h, -1).astype(np.uint8)
    raw = b"".join(b"\0" + r.tobytes() for r in rows)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
                     + (chunk(b"tRNS", trns) if trns else b"") + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("depth,colour_type,channels,trns", [
    (1, 0, 0, b""), (2, 0, 0, b""), (4, 0, 0, b""), (8, 0, 0, b""), (8, 0, 0, struct.pack(">H", 7)),
    (8, 2, 3, b""), (8, 2, 3, struct.pack(">HHH", 1, 2, 3)), (16, 2, 3, b""), (8, 6, 4, b""), (16, 6, 4, b"")])
@pytest.mark.parametrize("wuffs", [True, False], ids=["wuffs-if-installed", "pillow-only"])
def test_decoding_gives_pillows_pixels(tmp_path, monkeypatch, depth, colour_type, channels, trns, wuffs):
    """Images and masks decode to the pixels Pillow gives (its convert("L"); any channel
    set, alpha > 0) for every bit depth and colour type of the accepted modes, whichever
    decoder reads them: with the optional Wuffs decoder and without it."""
    if not wuffs:
        monkeypatch.setattr(busi_io, "_HAS_WUFFS", False)
    rng = np.random.default_rng(depth + colour_type)
    shape = (9, 13, channels) if channels else (9, 13)
    arr = rng.integers(0, 2 ** depth, shape) * (rng.random(shape[:2]) < 0.6).reshape(shape[:2] + (1,) * bool(channels))
    if trns:  # some pixels of the transparent colour (ignored: Pillow keeps it as info in modes L, RGB)
        arr[:3, :3] = np.frombuffer(trns, ">u2").reshape((1, 1, -1) if channels else (1, 1))
    p = _raw_png(tmp_path / "x.png", arr, depth, colour_type, trns)
    pil = Image.open(p)
    np.testing.assert_array_equal(data.read_image(p), np.asarray(pil.convert("L")))
    a = np.asarray(pil)
    want = a.view(np.uint8) > 0 if pil.mode == "1" else (a > 0 if a.ndim == 2 else (a[..., :3] > 0).any(axis=2))
    if pil.mode == "RGBA":
        want &= a[..., 3] > 0
    np.testing.assert_array_equal(data.read_mask(p), want)


@pytest.mark.parametrize("depth,mode", [(8, "L"), (1, "1")])
@pytest.mark.parametrize("wuffs", [True, False], ids=["wuffs-if-installed", "pillow-only"])
def test_corrupt_png_data_is_an_error(tmp_path, monkeypatch, depth, mode, wuffs):
    """A changed byte inside the compressed pixels is reported (checksums are verified),
    by both decoders (8-bit grey, 1-bit)."""
    if not wuffs:
        monkeypatch.setattr(busi_io, "_HAS_WUFFS", False)
    arr = np.random.default_rng(3).integers(0, 2 ** depth, (40, 40))
    p = _raw_png(tmp_path / "y.png", arr, depth, 0)
    assert Image.open(p).mode == mode
    b = bytearray(p.read_bytes())
    start = b.index(b"IDAT") + 4
    b[start + (b.index(b"IEND") - 8 - start) // 2] ^= 0x10
    p.write_bytes(bytes(b))
    for read in (data.read_image, data.read_mask):
        with pytest.raises(DataError, match=r"y\.png: PNG (image|mask) cannot be decoded, truncated or corrupt"):
            read(p)


def test_mask_sampled_at_a_size_equals_the_full_mask_resized(tmp_path):
    """read_mask(..., size=) samples each file before its channels are combined: the same
    pixels as the full-resolution union resized by nearest pixel, for every mode and a union."""
    rng = np.random.default_rng(5)
    a, b = rng.random((37, 53)) > 0.7, rng.random((37, 53)) > 0.8
    pa = write_png(tmp_path / "y_mask.png", a)
    pb = write_png(tmp_path / "y_mask_1.png", np.stack([b.astype(np.uint8) * 255] * 3, -1), "RGB")
    for size in [(16, 12), (53, 37), (70, 90)]:
        want = np.asarray(Image.fromarray(a | b).resize(size, Image.Resampling.NEAREST))
        got = data.read_mask([pa, pb], (37, 53), size)
        assert got.shape == (size[1], size[0])
        np.testing.assert_array_equal(got, want)
    with pytest.raises(data.DataError, match=r"y_mask.png: mask is 53x37 px but its image is 50x37"):
        data.read_mask([pa, pb], (37, 50))


def test_nearest_sampling_is_pillows_at_every_size():
    """The sampled rows and columns are those of Pillow's NEAREST resize, also where a
    sample falls exactly between two pixels (8 -> 7: Pillow takes 3, not 4, for the 4th)."""
    for n_in in range(1, 41):
        ramp = Image.fromarray(np.arange(n_in, dtype=np.int32)[None], mode="I")
        for n_out in range(1, 41):
            want = np.asarray(ramp.resize((n_out, 1), Image.Resampling.NEAREST))[0]
            np.testing.assert_array_equal(busi_io._nearest(n_in, n_out), want, err_msg=f"{n_in} -> {n_out}")
    assert busi_io._nearest(8, 7)[3] == 3


# ----------------------------------------------------------------------------- loading

def test_load_busi_resizes_area_for_images_nearest_for_masks(make_busi):
    root = make_busi(n_per_class=1, size=(64, 64))
    # benign (1): checkerboard image, left-half mask; area averaging gives ~127.5 everywhere,
    # nearest would keep 0/255
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    write_png(root / "benign" / "benign (1).png", checker, "L")
    half = np.zeros((64, 64), bool)
    half[:, :32] = True
    write_png(root / "benign" / "benign (1)_mask.png", half)

    a = data.load_busi(root, size=32, progress=False, workers=1)
    assert a.images.shape == (3, 32, 32) and a.images.dtype == np.uint8
    assert a.masks.shape == (3, 32, 32) and a.masks.dtype == bool
    assert np.all(np.abs(a.images[0].astype(int) - 127.5) <= 1)
    expected = np.zeros((32, 32), bool)
    expected[:, :16] = True
    np.testing.assert_array_equal(a.masks[0], expected)
    assert list(a.labels) == [0, 1, 2] and a.labels.dtype == np.int64
    assert list(a.classes) == ["benign", "malignant", "normal"] and list(a.ids) == [1, 1, 1]
    assert a.names == ["benign (1)", "malignant (1)", "normal (1)"]
    assert a.orig_sizes.tolist() == [[64, 64]] * 3
    assert a.masks[1].any() and not a.masks[2].any()


def test_load_busi_non_square_masks_stay_binary(make_busi):
    root = make_busi(n_per_class=2, size=(48, 80))
    # an L mask with values 0/255: resized with nearest neighbour, then thresholded
    m = np.zeros((48, 80), np.uint8)
    m[10:30, 5:60] = 255
    write_png(root / "malignant" / "malignant (2)_mask.png", m, "L")
    a = data.load_busi(root, size=16, progress=False, workers=1)
    raw = data.read_mask(root / "malignant" / "malignant (2)_mask.png")
    nearest = np.asarray(Image.fromarray(raw.astype(np.uint8) * 255).resize((16, 16), Image.NEAREST)) > 0
    np.testing.assert_array_equal(a.masks[3], nearest)
    assert set(np.unique(a.masks.view(np.uint8))) <= {0, 1}
    assert a.orig_sizes[0].tolist() == [48, 80]


def test_process_pool_matches_serial(make_busi):
    root = make_busi(n_per_class=3)
    serial = data.load_busi(root, size=32, progress=False, cache=False, workers=1)
    pooled = data.load_busi(root, size=32, progress=False, cache=False, workers=2)
    np.testing.assert_array_equal(serial.images, pooled.images)
    np.testing.assert_array_equal(serial.masks, pooled.masks)
    assert _npz_files() == []  # cache=False writes nothing


def test_cache_hit_reads_no_png(make_busi, monkeypatch):
    root = make_busi(n_per_class=2)
    first = data.load_busi(root, size=32, progress=False, workers=1)
    files = _npz_files()
    assert len(files) == 1 and files[0] == data.cache_path(root, size=32)
    assert "32px" in files[0].name

    def no_decoding(*args, **kwargs):
        raise AssertionError("a PNG was decoded although the cache is valid")

    monkeypatch.setattr(busi_io, "_load_one", no_decoding)
    monkeypatch.setattr(busi_io, "read_image", no_decoding)
    second = data.load_busi(root, size=32, progress=False, workers=1)
    for name in ("images", "masks", "labels", "classes", "ids", "orig_sizes"):
        a, b = getattr(first, name), getattr(second, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b)
    assert first.names == second.names

    # another size or a changed file has another key: must decode again
    with pytest.raises(AssertionError, match="decoded"):
        data.load_busi(root, size=16, progress=False, workers=1)
    p = root / "normal" / "normal (1).png"
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded"):
        data.load_busi(root, size=32, progress=False, workers=1)


def test_corrupt_cache_is_rebuilt(make_busi):
    root = make_busi(n_per_class=1)
    first = data.load_busi(root, size=16, progress=False, workers=1)
    path = data.cache_path(root, size=16)
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        again = data.load_busi(root, size=16, progress=False, workers=1)
    np.testing.assert_array_equal(first.images, again.images)
    assert np.load(path)["images"].shape == (3, 16, 16)


def test_subset(make_busi):
    a = data.load_busi(make_busi(n_per_class=2), size=16, progress=False, workers=1)
    s = a.subset([4, 0])
    assert s.names == ["normal (1)", "benign (1)"] and list(s.labels) == [2, 0]
    np.testing.assert_array_equal(s.images[1], a.images[0])
    b = a.subset(a.labels == 1)
    assert len(b) == 2 and set(b.classes) == {"malignant"}
    s.images[:] = 0  # a copy, not a view
    assert a.images[0].any()
    with pytest.raises(ValueError, match="boolean mask"):
        a.subset(np.ones(3, bool))


# ----------------------------------------------------------------------------- bad input

def _fails(root, *needles, workers=1):
    """load_busi must raise one one-line DataError containing every needle, and write no cache."""
    with pytest.raises(DataError) as info:
        data.load_busi(root, size=16, progress=False, workers=workers)
    msg = str(info.value)
    assert "\n" not in msg
    for n in needles:
        assert str(n) in msg, msg
    assert _npz_files() == []
    return msg


def test_missing_data_folder(tmp_path):
    _fails(tmp_path / "nowhere", tmp_path / "nowhere")


def test_empty_class_folder(make_busi):
    root = make_busi(n_per_class=1)
    for f in (root / "malignant").iterdir():
        f.unlink()
    _fails(root, root / "malignant", "no 'malignant (N).png'")


def test_missing_class_folder(make_busi):
    root = make_busi(n_per_class=1)
    for f in (root / "normal").iterdir():
        f.unlink()
    (root / "normal").rmdir()
    _fails(root, root / "normal", "missing")


def test_image_without_mask(make_busi):
    root = make_busi(n_per_class=2)
    (root / "benign" / "benign (2)_mask.png").unlink()
    _fails(root, root / "benign" / "benign (2).png", "without a mask", "benign (2)_mask.png")


def test_mask_without_image(make_busi):
    root = make_busi(n_per_class=2)
    (root / "normal" / "normal (2).png").unlink()
    _fails(root, "normal (2)_mask.png", "mask without an image")


@pytest.mark.parametrize("workers", [1, 2])
def test_mask_of_another_size(make_busi, workers):
    root = make_busi(n_per_class=2)
    write_png(root / "malignant" / "malignant (2)_mask.png", np.ones((60, 64), bool))
    _fails(root, root / "malignant" / "malignant (2)_mask.png", "64x60", "64x64", "same size", workers=workers)


def test_extra_masks_of_different_sizes(make_busi):
    root = make_busi(n_per_class=1)
    write_png(root / "benign" / "benign (1)_mask_1.png", np.ones((32, 32), bool))
    _fails(root, root / "benign" / "benign (1)_mask_1.png", "same size")


def test_not_a_png(make_busi):
    root = make_busi(n_per_class=1)
    (root / "normal" / "normal (1).png").write_bytes(b"\xff\xd8\xff\xe0 this is a JPEG header")
    _fails(root, root / "normal" / "normal (1).png", "not a PNG")


@pytest.mark.parametrize("workers", [1, 2])
def test_truncated_png(make_busi, workers):
    root = make_busi(n_per_class=1)
    p = root / "benign" / "benign (1).png"
    write_png(p, np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8), "L")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    _fails(root, p, "truncated", workers=workers)


def test_unknown_class_folder(make_busi):
    root = make_busi(n_per_class=1)
    write_png(root / "cyst" / "cyst (1).png", np.zeros((64, 64), np.uint8), "L")
    _fails(root, root / "cyst", "unknown class folder", "benign/, malignant/, normal/")


def test_unexpected_file_name(make_busi):
    root = make_busi(n_per_class=1)
    (root / "benign" / "benign (1) copy.png").write_bytes(b"")
    _fails(root, root / "benign" / "benign (1) copy.png", "unexpected file")


def test_two_images_with_one_id(make_busi):
    root = make_busi(n_per_class=1)
    write_png(root / "normal" / "normal (01).png", np.zeros((64, 64), np.uint8), "L")
    _fails(root, "normal (1).png", "one image per id")


def test_weird_mask_mode(make_busi):
    root = make_busi(n_per_class=1)
    p = write_png(root / "benign" / "benign (1)_mask.png", np.zeros((64, 64), np.uint8), "P")
    assert Image.open(p).mode == "P"
    _fails(root, p, "'P'", "1, L, RGB, RGBA")


def test_weird_image_mode(make_busi):
    root = make_busi(n_per_class=1)
    p = write_png(root / "malignant" / "malignant (1).png", np.full((64, 64), 1000, np.uint16))
    assert Image.open(p).mode.startswith("I")
    _fails(root, p, "PNG mode", "expected one of 1, L, RGB, RGBA")


@pytest.mark.parametrize("workers", [1, 2])
def test_load_busi_with_a_progress_bar(make_busi, workers, capsys, monkeypatch):
    """The bar (tqdm, whose update() returns True when it redraws: here at every step)
    changes nothing."""
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    root = make_busi(n_per_class=3)
    quiet = data.load_busi(root, size=16, cache=False, progress=False, workers=workers)
    shown = data.load_busi(root, size=16, cache=False, progress=True, workers=workers)
    assert "decoding BUSI PNGs (16px)" in capsys.readouterr().err
    np.testing.assert_array_equal(shown.images, quiet.images)
    np.testing.assert_array_equal(shown.masks, quiet.masks)


def test_bad_size_argument(make_busi):
    with pytest.raises(ValueError, match="size"):
        data.load_busi(make_busi(n_per_class=1), size=0)


# ----------------------------------------------------------------------------- keep-lists



@pytest.mark.data
def test_real_index(data_dir):
    df = data.index_busi(data_dir)
    assert len(df) == 780
    assert df["class"].value_counts().to_dict() == data.RELEASE_COUNTS == {"benign": 437, "malignant": 210, "normal": 133}
    n_masks = df["masks"].map(len)
    assert int((n_masks - 1).sum()) == 18
    assert n_masks.max() == 3
    assert df.loc[n_masks == 3, "name"].tolist() == ["benign (195)"]
    assert df.loc[(n_masks > 1) & (df["class"] == "malignant"), "name"].tolist() == ["malignant (53)"]
    assert (n_masks[df["class"] == "benign"] > 1).sum() == 16
    # both grey (re-encoded) and colour images and every mask mode occur
    modes = {Image.open(p).mode for p in df["image"]}
    assert {"L", "RGB"} <= modes
    mask_modes = {Image.open(p).mode for ms in df["masks"] for p in ms}
    assert mask_modes == {"1", "RGB", "RGBA"}


@pytest.mark.data
def test_real_load(busi):
    assert len(busi) == 780 and busi.images.shape == (780, 128, 128)
    assert np.bincount(busi.labels).tolist() == [437, 210, 133]
    lesion = busi.masks.reshape(780, -1).any(axis=1)
    assert lesion[busi.labels != 2].all()
    assert not lesion[busi.labels == 2].any()
    assert busi.orig_sizes[:, 1].min() == 190 and busi.orig_sizes[:, 1].max() == 1048
    # the byte-identical cross-class pair decodes to identical arrays
    i, j = busi.names.index("benign (433)"), busi.names.index("malignant (145)")
    np.testing.assert_array_equal(busi.images[i], busi.images[j])
    # benign (195): the ground truth is the union of its three mask files
    k = busi.names.index("benign (195)")
    df = data.index_busi()
    files = df.loc[df["name"] == "benign (195)", "masks"].item()
    parts = [data.read_mask(p) for p in files]
    union = np.logical_or.reduce(parts)
    assert union.sum() > max(p.sum() for p in parts)
    assert busi.masks[k].any()

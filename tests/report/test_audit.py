"""Tests of mtbc_lib.report.audit: the tables and figures read off a duplicate search, on the
small generated folder of tests/synthetic.py (group 1: four images, benign + malignant; group 2:
two normal images; four unrelated scans)."""

from __future__ import annotations

import numpy as np
import pytest

from mtbc_lib import dedup
from mtbc_lib.report import audit


@pytest.fixture(scope="module")
def result(synthetic_busi):
    return dedup.find_groups(synthetic_busi, progress=False, workers=1)


def test_compare_published_lists_only_the_images_decided_differently(result):
    keep = result.keep("drop-all") | {("normal", 3)}  # a list that keeps one member of group 2
    diff = audit.compare_published(result, keep)
    assert diff[["name", "ours", "published", "group"]].values.tolist() == [["normal (3)", "removed", "kept", 2]]
    assert diff["partners"].iloc[0] == "normal (4)" and "aligned SSIM" in diff["evidence"].iloc[0]
    assert audit.compare_published(result, result.keep("drop-all")).empty


def test_class_counts_per_keep_list(result):
    counts = audit.class_counts(result, {"drop-all": result.keep("drop-all"), "keep-one": result.keep("keep-one")})
    assert counts.loc["total"].tolist() == [10, 4, 5]
    assert counts.loc["normal"].tolist() == [4, 2, 3]
    assert audit.class_counts_figure(counts).axes[0].get_legend() is not None


def test_calibration_finds_the_threshold_that_reproduces_a_keep_list(result):
    t = audit.calibration_table(result, result.keep("drop-all"), thresholds=[0.5, 0.94, 0.999])
    fov = t[t["method"] == "common field of view"].set_index("threshold")
    assert fov.at[0.94, "disagreements"] == 0 and fov.at[0.94, "quadruplets"] == 1
    assert fov.at[0.999, "missed"] > 0  # too strict: copies not grouped
    whole = t[t["method"] == "whole images"].set_index("threshold")
    assert whole.at[0.94, "missed"] > 0  # crops need the common field of view
    assert len(audit.calibration_figure(t).data) == 2
    text = audit.calibration_summary(result, t)
    lowest = result.pairs.loc[result.pairs["duplicate"], "plain_ssim"].min()
    assert f"copies of one scan score as low as {lowest:.2f}" in text
    assert "On the common field of view, every threshold from 0.500 to 0.940 decides only 0 images" in text
    assert text.endswith("its groups hold every image the keep-list removes.")
    kept = audit.calibration_summary(result, audit.calibration_table(result, result.keep("drop-all") | {("normal", 3)},
                                                                      thresholds=[0.5, 0.94, 0.999]))
    assert kept.endswith("decides only 1 image differently: its groups hold every image the keep-list removes, "
                         "plus 1 image it keeps (below).")


def test_conflicts_margin_and_group_lookup(result):
    conflicts = audit.conflict_table(result)
    assert conflicts["group"].tolist() == [1] and conflicts["classes"].iloc[0] == "benign+malignant"
    assert audit.conflict_table(result, max_iou=0.5).empty  # the copies' masks agree
    m = audit.threshold_margin(result, k=2)
    assert len(m) == 4 and m["score"].is_monotonic_decreasing
    assert audit.find_group(result, "normal (4)") == 2 and audit.find_group(result, "normal (1)") == -1
    with pytest.raises(ValueError, match="no image named 'normal 4'"):
        audit.find_group(result, "normal 4")


def test_audit_figures(result):
    img = np.full((40, 60), 100, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:40] = True
    rgb = audit.mask_overlay(img, mask, height=20)
    assert rgb.shape == (20, 30, 3) and (rgb == (255, 60, 60)).all(axis=2).any()
    assert (rgb[0, 0] == 100).all()
    fig = audit.group_slider(result, height=32)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["1", "2"] and len(fig.data) == 4  # one image trace per slot
    assert steps[1].args[0]["visible"] == [True, True, False, False]
    assert steps[0].args[0]["source"][0] == fig.data[0].source
    assert fig.data[0].source.startswith(("data:image/webp;base64,", "data:image/jpeg;base64,"))
    assert "label conflict" in steps[0].args[1]["title.text"] and "normal (4)" in steps[1].args[1]["title.text"]
    hist = audit.ssim_distribution(result.pairs, 0.94)
    assert len(hist.data) == 2 and hist.layout.shapes[0].x0 == 0.94
    gal = audit.group_gallery(result, [1, 2], height=40)
    assert len(gal.axes) == 8
    with pytest.raises(ValueError, match="no such duplicate group"):
        audit.group_gallery(result, [9])


# ----------------------------------------------------------------------------- second level: same lesion

@pytest.fixture(scope="module")
def lesion_result(synthetic_lesions):
    return dedup.find_groups(synthetic_lesions, progress=False, workers=1)


def test_lesion_tables(lesion_result):
    r = lesion_result
    add = audit.lesion_additions(r)
    assert add[["lesion_group", "members", "added", "copy_groups"]].values.tolist() == [
        [1, "benign (1), benign (2) [1], benign (3) [1]", 1, "1"]]
    m = audit.lesion_margin(r, k=2)
    weakest = m[m["kind"] == "weakest lesion links"]
    assert len(weakest) == 2 and weakest["same_lesion"].all() and weakest["lesion_ssim"].min() >= 0.805
    apart = m[m["kind"] == "strongest unlinked, same class"]
    assert len(apart) == 2 and apart["lesion_ssim"].max() < 0.6  # benign 1-3 are linked: only benign 4 is apart
    other = m[m["kind"] == "strongest, different classes"]
    assert other["name_j"].iloc[0] == "malignant (1)" and not other["same_lesion"].any()
    t = audit.lesion_threshold_table(r, thresholds=[0.5, 0.805, 0.99]).set_index("threshold")
    assert t.loc[0.805, ["lesion_groups", "images_in_groups", "added_images", "added_benign"]].tolist() == [1, 3, 1, 1]
    assert t.at[0.99, "added_images"] == 0 and t.at[0.99, "lesion_groups"] == 1  # the copies alone
    assert t.at[0.5, "added_images"] >= 1 and t.at[0.5, "largest"] >= 3
    fig = audit.lesion_threshold_figure(t.reset_index(), 0.805)
    assert len(fig.data) == 3 and list(fig.data[0].y) == t["added_images"].tolist()


def test_lesion_figures(lesion_result):
    r = lesion_result
    hist = audit.lesion_distribution(r)
    assert [d.name.split(" (")[0] for d in hist.data] == ["same class", "different classes"]
    assert hist.layout.shapes[0].x0 == r.config.lesion_threshold
    gal = audit.group_gallery(r, [1], height=40, level="lesion", max_cols=2)
    assert len(gal.axes) == 4  # three members wrapped after two: two rows of two slots
    assert any("copies: group 1" in ax.get_title() for ax in gal.axes)
    sl = audit.group_slider(r, height=32, level="lesion")
    assert [s.label for s in sl.layout.sliders[0].steps] == ["1"] and len(sl.data) == 3
    assert "lesion group 1" in sl.layout.title.text and "same-scan groups: 1" in sl.layout.title.text
    pg = audit.pair_gallery(r, audit.lesion_margin(r, k=1), height=32, cols=2)
    titles = [ax.get_title(loc="left") for ax in pg.axes]
    assert len(pg.axes) == 8 and "benign (1)" in titles[0] and "linked)" in titles[0]
    assert sum("apart)" in t for t in titles) == 2
    with pytest.raises(ValueError, match="no pair given"):
        audit.pair_gallery(r, r.pairs.iloc[:0])
    with pytest.raises(ValueError, match="no such lesion group"):
        audit.group_gallery(r, [5], level="lesion")
    with pytest.raises(ValueError, match="level='frame'"):
        audit.group_slider(r, level="frame")

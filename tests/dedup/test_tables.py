"""Tests of mtbc_lib.dedup.tables: the group and lesion tables, duplicates.csv (same-scan
groups, then images that share only their lesion), the written files, the summary lines."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from mtbc_lib import dedup
from mtbc_lib.data.busi import read_keep_list
from mtbc_lib.dedup import tables

# ----------------------------------------------------------------------------- files

def test_duplicates_csv_holds_lesion_only_images(lesions, tmp_path):
    import pandas as pd

    _, r = lesions
    paths = dedup.write_audit(r, tmp_path / "out")
    dup = pd.read_csv(paths["duplicates"], dtype={"group": "Int64", "lesion_group": "Int64"})
    assert list(dup.columns) == dedup.DUPLICATE_COLUMNS
    assert dup[["class", "id", "group", "lesion_group"]].astype(object).values.tolist() == [
        ["benign", 2, 1, 1], ["benign", 3, 1, 1], ["benign", 1, pd.NA, 1]]
    assert dup["size"].tolist() == [2, 2, 1]
    # curation is unchanged: only the copies are dropped
    assert r.keep("drop-all") == {(c, int(i)) for c, i in zip(r.index["class"], r.index["id"])} - {
        ("benign", 2), ("benign", 3)}
    pairs = pd.read_csv(paths["pairs"])
    assert {"lesion_ssim", "same_lesion", "lesion_group"} <= set(pairs.columns)


def test_write_audit_files(synthetic, tmp_path):
    _, r = synthetic
    paths = dedup.write_audit(r, tmp_path / "out", curation="keep-one")
    import pandas as pd

    dup = pd.read_csv(paths["duplicates"])
    assert list(dup.columns) == dedup.DUPLICATE_COLUMNS
    assert list(dup["file"])[:2] == ["benign/benign (1).png", "benign/benign (2).png"]
    assert read_keep_list(paths["curated"]) == r.keep("keep-one")
    assert paths["curated"].read_bytes().startswith(b"class;id\r\nbenign;3\r\n")
    assert len(pd.read_csv(paths["pairs"])) == len(r.pairs)
    assert not list((tmp_path / "out").glob("*.tmp"))


# ----------------------------------------------------------------------------- a constructed result

NAN = float("nan")
#: rows of the index: (class, id, height, width)
IMAGES = [("benign", 1, 100, 100), ("benign", 2, 120, 100), ("benign", 3, 60, 80), ("malignant", 1, 50, 50),
          ("normal", 1, 90, 90), ("normal", 2, 90, 90), ("normal", 3, 70, 70)]
GROUPS = [[0, 1, 3], [4, 5]]  # benign 1, benign 2, malignant 1 (a label conflict); normal 1 and 2 (same size)
GROUP_OF = np.array([1, 1, -1, 1, 2, 2, -1])
LESION_OF = np.array([1, 1, 1, 1, 2, 2, -1])  # benign 3: the same lesion as benign 1, no copy


def _pair(i, j, plain, aligned=NAN, mask_iou=NAN, lesion_ssim=NAN, same_lesion=False):
    score = np.nanmax([plain, aligned])
    dup = score >= 0.94
    return {"i": i, "j": j, "plain_ssim": plain, "aligned_ssim": aligned, "score": score,
            "method": "whole-image" if plain >= 0.94 else "extended" if dup else "", "duplicate": dup,
            "sy": NAN, "sx": NAN, "ty": NAN, "tx": NAN, "overlap": NAN, "inliers": 0, "mask_iou": mask_iou,
            "group": int(GROUP_OF[i]) if GROUP_OF[i] == GROUP_OF[j] else -1, "lesion_ssim": lesion_ssim,
            "same_lesion": same_lesion, "lesion_group": int(LESION_OF[i]) if LESION_OF[i] == LESION_OF[j] else -1}


def _result(tmp_path, lesion: bool = True):
    """An AuditResult as find_groups would return it for IMAGES, GROUPS and LESION_OF."""
    root = tmp_path / "BUSI"
    index = pd.DataFrame({"class": [c for c, *_ in IMAGES], "id": [i for _, i, *_ in IMAGES],
                          "name": [f"{c} ({i})" for c, i, *_ in IMAGES],
                          "image": [root / c / f"{c} ({i}).png" for c, i, *_ in IMAGES],
                          "height": [h for *_, h, _ in IMAGES], "width": [w for *_, w in IMAGES]})
    rows = [_pair(0, 1, 0.97, mask_iou=0.9),                   # a whole-image edge
            _pair(0, 2, 0.2, lesion_ssim=0.85, same_lesion=True),  # the same lesion
            _pair(0, 3, 0.4, 0.5, mask_iou=0.3),              # inside group 1, no edge
            _pair(1, 3, 0.3, 0.95, mask_iou=0.8),             # an edge of the aligned overlap only
            _pair(2, 6, 0.1, lesion_ssim=0.3),
            _pair(4, 5, 0.99)]                                # no mask IoU
    pairs = pd.DataFrame(rows)
    pairs.insert(2, "name_i", index["name"][pairs["i"]].to_numpy())
    pairs.insert(3, "name_j", index["name"][pairs["j"]].to_numpy())
    pairs = pairs[dedup.PAIR_COLUMNS]
    groups = tables.group_table(index, pairs, GROUPS, root)
    groups.insert(len(dedup.DUPLICATE_COLUMNS) - 1, "lesion_group", LESION_OF[groups["row"].to_numpy()])
    lesions = tables.lesion_table(index, pairs, LESION_OF, GROUP_OF, root)
    return dedup.AuditResult(index=index, pairs=pairs, groups=groups, config=dedup.DedupConfig(lesion=lesion),
                             data_dir=root, timings={"total": 1.5}, counts={"images": len(IMAGES)},
                             lesions=lesions)


def test_group_table_methods_links_scores_and_the_member_kept(tmp_path):
    g = _result(tmp_path).groups
    assert list(g.columns) == dedup.DUPLICATE_COLUMNS + ["row"]
    assert g["row"].tolist() == [0, 1, 3, 4, 5] and g["group"].tolist() == [1, 1, 1, 2, 2]
    assert g["file"].tolist()[:2] == ["benign/benign (1).png", "benign/benign (2).png"]
    assert g["size"].tolist() == [3, 3, 3, 2, 2]
    # group 1: whole-image edges alone do not connect malignant 1; group 2: they do
    assert g["method"].tolist() == ["extended"] * 3 + ["whole-image"] * 2
    assert g["linked_by"].tolist() == ["whole-image", "whole-image", "extended", "whole-image", "whole-image"]
    assert g["label_conflict"].tolist() == [True] * 3 + [False] * 2
    assert g["classes"].tolist() == ["benign+malignant"] * 3 + ["normal"] * 2
    # min/max over the same-scan pairs only (not the 0.5 pair inside the group); IoU over every pair
    assert g["min_ssim"].tolist() == [0.95] * 3 + [0.99] * 2 and g["max_ssim"].tolist() == [0.97] * 3 + [0.99] * 2
    assert g["mask_iou_min"].iloc[:3].tolist() == [0.3] * 3 and g["mask_iou_min"].iloc[3:].isna().all()
    # keep-one: none of a conflicting group; of two images of one size, the smaller id
    assert g["keep_one"].tolist() == [False, False, False, True, False]
    assert g[["height", "width"]].values.tolist()[0] == [100, 100]


def test_keep_one_keeps_the_largest_image(tmp_path):
    r = _result(tmp_path)
    index = r.index.assign(height=[100, 100, 60, 50, 90, 95, 70])  # normal 2 now the larger one
    g = tables.group_table(index, r.pairs, GROUPS, tmp_path / "BUSI")
    assert g.loc[g["group"] == 2, "keep_one"].tolist() == [False, True]


def test_lesion_table_weakest_edge_and_same_scan_group(tmp_path):
    les = _result(tmp_path).lesions
    assert list(les.columns) == dedup.LESION_COLUMNS
    assert les["row"].tolist() == [0, 1, 2, 3, 4, 5] and les["lesion_group"].tolist() == [1, 1, 1, 1, 2, 2]
    assert les["group"].tolist() == [1, 1, -1, 1, 2, 2] and les["lesion_size"].tolist() == [4, 4, 4, 4, 2, 2]
    assert les["classes"].tolist() == ["benign+malignant"] * 4 + ["normal"] * 2
    # the weakest same-lesion edge; NaN where copies alone connect the lesion group
    assert les["min_lesion_ssim"].iloc[:4].tolist() == [0.85] * 4 and les["min_lesion_ssim"].iloc[4:].isna().all()


def test_duplicates_table_appends_the_images_sharing_only_their_lesion(tmp_path):
    r = _result(tmp_path)
    dup = tables.duplicates_table(r)
    assert list(dup.columns) == dedup.DUPLICATE_COLUMNS
    assert [f"{c} ({i})" for c, i in zip(dup["class"], dup["id"])] == [
        "benign (1)", "benign (2)", "malignant (1)", "normal (1)", "normal (2)", "benign (3)"]
    last = dup.iloc[-1]
    assert pd.isna(last["group"]) and last["size"] == 1 and last["lesion_group"] == 1
    assert (last["height"], last["width"], last["file"]) == (60, 80, "benign/benign (3).png")
    assert pd.isna(last["method"]) and pd.isna(last["keep_one"])
    assert {str(dup[c].dtype) for c in ("group", "size", "lesion_group")} == {"Int64"}
    assert dup["lesion_group"].tolist() == [1, 1, 1, 2, 2, 1]
    # without lesion groups: the same-scan rows alone
    alone = tables.duplicates_table(dataclasses.replace(r, lesions=None))
    assert len(alone) == 5 and str(alone["lesion_group"].dtype) == "Int64" and "row" not in alone


def test_write_audit_files_of_a_constructed_result(tmp_path):
    r = _result(tmp_path)
    paths = tables.write_audit(r, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["curated.csv", "duplicates.csv", "pairs.csv"]
    pairs = pd.read_csv(paths["pairs"])
    assert list(pairs.columns) == ["image_i", "image_j"] + dedup.PAIR_COLUMNS[4:]
    assert pairs[["image_i", "image_j"]].values.tolist()[0] == ["benign (1)", "benign (2)"]
    assert read_keep_list(paths["curated"]) == {("benign", 3), ("normal", 3)}  # drop-all
    assert len(pd.read_csv(paths["duplicates"])) == 6
    with pytest.raises(ValueError, match="unknown curation rule 'keep-none'"):
        tables.write_audit(r, tmp_path / "other", curation="keep-none")
    assert not (tmp_path / "other").exists()  # refused before writing


def test_summary_lines(tmp_path):
    r = _result(tmp_path)
    assert tables.summary(r).splitlines() == [
        "7 images: 2 groups (1 triplets, 1 duplets) holding 5 images",
        "  whole-image SSIM alone connects 1 groups; 1 need the aligned overlap (crops/rescales)",
        "  label conflicts: 1 groups (3 images)",
        "  keep-list 'drop-all': 2 images; 'keep-one': 3",
        "  same lesion (coarse aligned SSIM >= 0.805, same class): 2 lesion groups holding 6 images; "
        "1 of them in no same-scan group (1 benign), in 1 lesion groups",
        "  setting: 64x64 bilinear grey, SSIM >= 0.94; 1.5 s",
    ]
    # the lesion line only when the lesion search ran
    assert "same lesion" not in tables.summary(_result(tmp_path, lesion=False))

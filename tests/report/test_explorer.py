"""Tests of mtbc_lib.report.explorer.DuplicateExplorer, driven from Python (filters, stepping,
marking, export), on the small generated folders of tests/synthetic.py."""

from __future__ import annotations

import pytest

from mtbc_lib import dedup
from mtbc_lib.data.busi import read_keep_list
from mtbc_lib.report.explorer import DuplicateExplorer

OUTSIDE = {("benign", 3), ("malignant", 3), ("normal", 1), ("normal", 2)}


@pytest.fixture(scope="module")
def result(synthetic_busi):
    return dedup.find_groups(synthetic_busi, progress=False, workers=1)


def test_filters_and_stepping(result):
    ex = DuplicateExplorer(result, height=64)
    assert ex.visible_groups == [1, 2] and ex.current == 1
    assert "group <b>1</b>" in ex.position.value and "label conflict" in ex.position.value
    assert len(ex.members.children) == 4 and "mask IoU" in ex.scores.value
    assert ex.next() == 2 and len(ex.members.children) == 2
    assert ex.next() == 1 and ex.previous() == 2  # wraps around
    ex.next_button.click()
    assert ex.current == 1
    ex.set_filters(size=2)
    assert ex.visible_groups == [2] and ex.current == 2
    ex.set_filters(cls="malignant")
    assert ex.visible_groups == [1]
    ex.set_filters(conflict=False)
    assert ex.visible_groups == [2]
    ex.set_filters(size=4, conflict=True)
    assert ex.visible_groups == [1]
    ex.conflict_filter.value = "labels agree only"  # the widget itself
    assert ex.visible_groups == [] and ex.current is None and "no group" in ex.position.value
    assert ex.next() is None
    with pytest.raises(ValueError, match="cls"):
        ex.set_filters(cls="cyst")


def test_mark_and_export(result, tmp_path):
    ex = DuplicateExplorer(result, height=64)
    # initial marks follow the keep-one suggestion
    assert ex.keep_set() == result.keep("keep-one") == OUTSIDE | {("normal", 3)}
    ex.mark("benign", 1, True)
    ex.mark("normal", 3, False)
    ex.mark("normal", 4, True)
    path = ex.export(tmp_path / "mine.csv")
    assert read_keep_list(path) == OUTSIDE | {("benign", 1), ("normal", 4)}
    assert path.read_bytes().startswith(b"class;id\r\n")
    with pytest.raises(ValueError, match="in no duplicate group"):
        ex.mark("normal", 1, False)
    # the toggles and the export button do the same
    ex.go_to(2)
    toggle = {p.children[1].value.split("<b>")[1].split("</b>")[0]: p.children[2] for p in ex.members.children}
    toggle["normal (3)"].value = "keep"
    toggle["normal (4)"].value = "drop"
    ex.export_path.value = str(tmp_path / "button.csv")
    ex.export_button.click()
    assert read_keep_list(tmp_path / "button.csv") == OUTSIDE | {("benign", 1), ("normal", 3)}
    assert "wrote 6 images" in ex.status.value
    ex.export_path.value = str(tmp_path / "no" / "such" / "dir" / "\0bad.csv")
    ex.export_button.click()
    assert "color:#c53030" in ex.status.value


def test_drop_all_initial_marks_drop_every_member(result):
    ex = DuplicateExplorer(result, initial="drop-all")
    assert ex.keep_set() == result.keep("drop-all") == OUTSIDE
    with pytest.raises(ValueError, match="initial"):
        DuplicateExplorer(result, initial="none")


def test_position_names_the_lesion_group(synthetic_lesions):
    r = dedup.find_groups(synthetic_lesions, progress=False, workers=1)
    ex = DuplicateExplorer(r, height=48)
    assert ex.visible_groups == [1]
    assert "lesion group 1 (other frames: benign (1))" in ex.position.value

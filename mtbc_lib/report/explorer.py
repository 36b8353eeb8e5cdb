"""Interactive duplicate explorer (ipywidgets) for the groups ``dedup.find_groups`` found.

``DuplicateExplorer(result)`` shows one group at a time: its members side by side with
their mask outlines, the pairwise scores, its lesion group (and the other frames of that
lesion, which are not copies), and a keep/drop toggle per image; filters by
group size, class and label conflict; next/previous; and exports the resulting keep-list
in the published ``class;id`` format. Everything the buttons do is also a method, so
the explorer can be driven (and tested) from Python.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

from mtbc_lib.core import CLASSES

__all__ = ["DuplicateExplorer"]

_CONFLICT = {"all groups": None, "label conflicts only": True, "labels agree only": False}


class DuplicateExplorer:
    """Browse, judge and export duplicate groups.

    result: a ``dedup.AuditResult``; height: pixel height of the member images;
    initial: "keep-one" (the suggested representative of each group whose labels agree
    is marked keep, the rest drop) or "drop-all" (every member marked drop).
    Images outside every group are always kept. ``widget`` is the ipywidgets box."""

    def __init__(self, result, height: int = 220, initial: str = "keep-one"):
        import ipywidgets as W

        if initial not in ("keep-one", "drop-all"):
            raise ValueError(f"initial={initial!r}; expected 'keep-one' or 'drop-all'")
        self.result = result
        self.height = height
        table = result.groups
        self._keep = {(c, int(i)): bool(k) and initial == "keep-one"
                      for c, i, k in zip(table["class"], table["id"], table["keep_one"])}
        self._png: dict[int, bytes] = {}
        self._visible: list[int] = sorted(table["group"].unique().tolist())
        self._pos = 0
        sizes = sorted(table["size"].unique().tolist())
        self.size_filter = W.Dropdown(options=[("any size", 0)] + [(f"{s} images", int(s)) for s in sizes],
                                      value=0, description="size")
        self.class_filter = W.Dropdown(options=["any class", *CLASSES], value="any class", description="class")
        self.conflict_filter = W.Dropdown(options=list(_CONFLICT), value="all groups", description="labels")
        self.previous_button = W.Button(description="previous", icon="arrow-left")
        self.next_button = W.Button(description="next", icon="arrow-right")
        self.position = W.HTML()
        self.members = W.HBox()
        self.scores = W.HTML()
        self.export_path = W.Text(value="curated_keep.csv", description="keep-list")
        self.export_button = W.Button(description="export", icon="download")
        self.status = W.HTML()
        for w in (self.size_filter, self.class_filter, self.conflict_filter):
            w.observe(lambda _change: self._apply_filters(), names="value")
        self.previous_button.on_click(lambda _b: self.previous())
        self.next_button.on_click(lambda _b: self.next())
        self.export_button.on_click(lambda _b: self._export_clicked())
        self.widget = W.VBox([
            W.HBox([self.size_filter, self.class_filter, self.conflict_filter]),
            W.HBox([self.previous_button, self.next_button, self.position]),
            self.members, self.scores,
            W.HBox([self.export_path, self.export_button, self.status]),
        ])
        self._render()

    # ------------------------------------------------------------------ state
    @property
    def visible_groups(self) -> list[int]:
        """Group numbers passing the filters, in order."""
        return list(self._visible)

    @property
    def current(self) -> int | None:
        """The group shown (None when no group passes the filters)."""
        return self._visible[self._pos] if self._visible else None

    def set_filters(self, size: int | None = None, cls: str | None = None, conflict: bool | None = None) -> None:
        """Show only groups of ``size`` images, holding an image of class ``cls``, with
        (True) or without (False) a label conflict; None = no condition."""
        if cls is not None and cls not in CLASSES:
            raise ValueError(f"cls={cls!r}; expected one of {', '.join(CLASSES)} or None")
        labels = {v: k for k, v in _CONFLICT.items()}
        if conflict not in labels:
            raise ValueError(f"conflict={conflict!r}; expected True, False or None")
        # setting the widgets fires _apply_filters once per change; hold it until the end
        self._holding = True
        try:
            self.size_filter.value = int(size or 0)
            self.class_filter.value = cls or "any class"
            self.conflict_filter.value = labels[conflict]
        finally:
            self._holding = False
        self._apply_filters()

    def next(self) -> int | None:
        """Show the next visible group (wraps around); returns it."""
        if self._visible:
            self._pos = (self._pos + 1) % len(self._visible)
        self._render()
        return self.current

    def previous(self) -> int | None:
        """Show the previous visible group (wraps around); returns it."""
        if self._visible:
            self._pos = (self._pos - 1) % len(self._visible)
        self._render()
        return self.current

    def go_to(self, group: int) -> None:
        """Show group ``group`` (it must pass the filters)."""
        if group not in self._visible:
            raise ValueError(f"group {group} is not among the visible groups {self._visible[:10]}...")
        self._pos = self._visible.index(group)
        self._render()

    def mark(self, cls: str, id: int, keep: bool) -> None:
        """Mark the group member ``cls`` ``id`` keep (True) or drop (False)."""
        key = (cls, int(id))
        if key not in self._keep:
            raise ValueError(f"{cls} ({id}) is in no duplicate group; images outside groups are always kept")
        self._keep[key] = bool(keep)
        if self.current is not None and key in self._members(self.current):
            self._render()

    def keep_set(self) -> set[tuple[str, int]]:
        """The keep-list: every image outside the groups plus the members marked keep."""
        idx = self.result.index
        return {(c, int(i)) for c, i in zip(idx["class"], idx["id"]) if self._keep.get((c, int(i)), True)}

    def export(self, path=None) -> Path:
        """Write ``keep_set()`` in the published ``class;id`` format (atomically)."""
        from mtbc_lib.data.busi import write_keep_list

        path = Path(path if path is not None else self.export_path.value).expanduser()
        write_keep_list(self.keep_set(), path)
        self.status.value = html.escape(f"wrote {len(self.keep_set())} images to {path}")
        return path

    # ------------------------------------------------------------------ internals
    def _members(self, group: int) -> list[tuple[str, int]]:
        g = self.result.groups[self.result.groups["group"] == group]
        return [(c, int(i)) for c, i in zip(g["class"], g["id"])]

    def _apply_filters(self) -> None:
        if getattr(self, "_holding", False):
            return
        t = self.result.groups
        keep = t["group"].notna()
        if self.size_filter.value:
            keep &= t["size"] == self.size_filter.value
        if self.class_filter.value in CLASSES:
            keep &= t["group"].isin(t.loc[t["class"] == self.class_filter.value, "group"])
        conflict = _CONFLICT[self.conflict_filter.value]
        if conflict is not None:
            keep &= t["label_conflict"] == conflict
        current = self.current
        self._visible = sorted(t.loc[keep, "group"].unique().tolist())
        self._pos = self._visible.index(current) if current in self._visible else 0
        self._render()

    def _export_clicked(self) -> None:
        try:
            self.export()
        except (OSError, ValueError) as exc:
            self.status.value = f"<span style='color:#c53030'>{html.escape(str(exc))}</span>"

    def _image_png(self, row: int) -> bytes:
        if row not in self._png:
            from PIL import Image

            from mtbc_lib.data.busi import read_image, read_mask
            from mtbc_lib.report.audit import mask_overlay

            r = self.result.index.loc[row]
            buf = io.BytesIO()
            Image.fromarray(mask_overlay(read_image(r["image"]), read_mask(r["masks"]), self.height)).save(buf, "PNG")
            self._png[row] = buf.getvalue()
        return self._png[row]

    def _render(self) -> None:
        import ipywidgets as W

        n = len(self._visible)
        if not n:
            self.position.value = "no group matches the filters"
            self.members.children = ()
            self.scores.value = ""
            return
        g = self.current
        t = self.result.groups[self.result.groups["group"] == g]
        info = t.iloc[0]
        conflict = " <b style='color:#c53030'>label conflict</b>" if info["label_conflict"] else ""
        lesion = ""
        if "lesion_group" in t and self.result.lesions is not None:
            lg = int(info["lesion_group"])
            m = self.result.lesions[self.result.lesions["lesion_group"] == lg]
            others = ", ".join(self.result.index.loc[m.loc[m["group"] != g, "row"], "name"])
            lesion = f"; lesion group {lg}" + (f" (other frames: {html.escape(others)})" if others else "")
        self.position.value = (f"group <b>{g}</b> ({self._pos + 1} of {n} shown): {info['size']} images, "
                               f"{info['classes']}, {info['method']}{conflict}{lesion}")
        panels = []
        for _, r in t.iterrows():
            key = (r["class"], int(r["id"]))
            toggle = W.ToggleButtons(options=["keep", "drop"], value="keep" if self._keep[key] else "drop")
            toggle.observe(lambda ch, key=key: self._toggle(key, ch["new"]), names="value")
            caption = W.HTML(f"<b>{html.escape(self.result.index.at[int(r['row']), 'name'])}</b><br>"
                             f"{r['width']}x{r['height']} px{' (suggested)' if r['keep_one'] else ''}")
            panels.append(W.VBox([W.Image(value=self._image_png(int(r["row"])), format="png"), caption, toggle]))
        self.members.children = tuple(panels)
        p = self.result.pairs
        p = p[p["group"] == g]
        rows = "".join(
            f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{s:.3f}</td><td>{al:.3f}</td>"
            f"<td>{sc:.3f}</td><td>{iou:.2f}</td></tr>"
            for a, b, s, al, sc, iou in zip(p["name_i"], p["name_j"], p["plain_ssim"], p["aligned_ssim"],
                                            p["score"], p["mask_iou"]))
        self.scores.value = ("<table><tr><th>image</th><th>image</th><th>SSIM whole</th><th>SSIM aligned</th>"
                             f"<th>score</th><th>mask IoU</th></tr>{rows}</table>")

    def _toggle(self, key, value) -> None:
        self._keep[key] = value == "keep"

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

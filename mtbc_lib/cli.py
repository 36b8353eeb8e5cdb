"""The ``mtbc`` command: one sub-command per task (``mtbc audit ...``).

Add a sub-command by writing ``_add_<name>(subparsers)`` (a parser whose defaults hold
``func``, the function run with the parsed arguments and returning the exit code) and
listing it in ``SUBCOMMANDS``. Bad input (a missing folder, a corrupt PNG, an unwritable
output folder) ends with one line ``mtbc: error: <message>`` on stderr and exit code 2.

Also runs as ``python -m mtbc_lib.cli``.
"""

from __future__ import annotations

import argparse
import sys

from mtbc_lib import __version__


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``mtbc: error: ...``) and exit code 2."""

    def error(self, message):
        self.exit(2, f"mtbc: error: {self.prog.split(' ', 1)[-1] + ': ' if ' ' in self.prog else ''}{message}\n")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ----------------------------------------------------------------------------- audit

def _threshold(text: str) -> float:
    v = float(text)
    if not -1 <= v <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not an SSIM value in [-1, 1]")
    return v


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return v


def _add_audit(sub) -> None:
    from mtbc_lib.dedup import RESAMPLE, RULES, DedupConfig

    d = DedupConfig()
    p = sub.add_parser(
        "audit", help="find the groups of duplicate images (and of frames of one lesion) in a BUSI folder",
        description="Find every group of BUSI images that show the same scan (SSIM on the whole "
                    "images and, for crops and rescales, on their aligned overlap) and every group of "
                    "images of one lesion (other frames: coarse SSIM of the aligned overlap, same class); "
                    "write DIR/duplicates.csv (one row per image of a same-scan group, then one per image "
                    "that shares only its lesion; column lesion_group), DIR/pairs.csv (every scored pair) "
                    "and DIR/curated.csv (the keep-list, published 'class;id' format; lesion groups do not "
                    "change it).")
    p.add_argument("data_dir", metavar="DATA_DIR", help="BUSI folder holding benign/, malignant/, normal/")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--curation", choices=RULES, default="drop-all",
                   help="keep-list rule: drop-all = drop every group member (as Curated BUSI does), "
                        "keep-one = keep the largest image of each group whose labels agree "
                        "(default: %(default)s)")
    p.add_argument("--threshold", type=_threshold, default=d.threshold,
                   help="SSIM at or above which two images are the same scan (default: %(default)s)")
    p.add_argument("--size", type=_positive, default=d.size,
                   help="side of the square thumbnails SSIM compares (default: %(default)s)")
    p.add_argument("--resample", choices=list(RESAMPLE), default=d.resample,
                   help="resize filter of the thumbnails (default: %(default)s)")
    p.add_argument("--no-extended", dest="extended", action="store_false",
                   help="whole-image SSIM only: skip the search for crops and rescales")
    p.add_argument("--lesion-threshold", type=_threshold, default=d.lesion_threshold,
                   help="coarse aligned SSIM at or above which two images of one class show the same lesion "
                        "(default: %(default)s)")
    p.add_argument("--no-lesion", dest="lesion", action="store_false",
                   help="skip the second level (frames of one lesion): lesion groups are the same-scan groups")
    p.add_argument("--workers", type=_positive, default=2, help="decoding processes (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    p.set_defaults(func=_run_audit)


def _run_audit(args) -> int:
    from mtbc_lib import dedup

    if args.size > 1024:
        raise ValueError(f"--size {args.size}: expected at most 1024")
    cfg = dedup.DedupConfig(size=args.size, resample=args.resample, threshold=args.threshold,
                            extended=args.extended, lesion=args.lesion, lesion_threshold=args.lesion_threshold)
    result = dedup.find_groups(args.data_dir, cfg, progress=not args.quiet, workers=args.workers)
    paths = dedup.write_audit(result, args.out, curation=args.curation)
    if not args.quiet:
        print(dedup.summary(result))
        print(f"wrote {paths['duplicates']}, {paths['pairs']}, {paths['curated']} "
              f"({len(result.keep(args.curation))} images kept, rule {args.curation!r})")
    return 0


# ------------------------------------------------------------------------------ grid

def _add_grid(sub) -> None:
    # names are checked when the grid runs (one-line errors listing the valid ones), so that
    # building the parser imports no training code: `mtbc audit` starts without torch
    p = sub.add_parser(
        "grid", help="train the ablation grid (papermill, one notebook per setting) and write ablation.csv",
        description="Execute notebooks/train.ipynb once per setting of the paper's ablation into "
                    "book/runs/<backbone>-<setting>-<profile>.ipynb, skipping settings whose results "
                    "are complete (unfinished ones resume from their checkpoints), then write "
                    "results/ablation.csv (Table 5: ten rows per backbone from six trainings).")
    p.add_argument("--backbone", default="unetplusplus", metavar="NAME",
                   help="network, a name of mtbc_lib.models.BACKBONES (default: %(default)s)")
    p.add_argument("--profile", default="fast", metavar="NAME",
                   help="training profile, a name of mtbc_lib.trainconfig.PROFILES (default: %(default)s)")
    p.add_argument("--settings", nargs="+", default=None, metavar="SETTING",
                   help="settings to train, names of mtbc_lib.ablation.SETTINGS (default: all six)")
    p.add_argument("--data", metavar="DIR", default="", help="BUSI folder (default: $MTBC_DATA)")
    p.add_argument("--out", metavar="DIR", default="results", help="results folder (default: %(default)s)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                   help="address of a running dask.distributed scheduler: run each setting on the cluster "
                        "(workers must see this repository and the data at the same paths)")
    p.set_defaults(func=_run_grid)


def _run_grid(args) -> int:
    from mtbc_lib import grid

    done = grid.run_grid(args.backbone, args.profile, settings=args.settings, scheduler=args.scheduler,
                         out_dir=args.out, data_dir=args.data or None)
    print(f"trained {len(done)} setting(s): {', '.join(done) or 'none (all complete)'}; "
          f"wrote {args.out}/ablation.csv")
    return 0


#: Sub-commands: name -> function adding its parser.
SUBCOMMANDS = {"audit": _add_audit, "grid": _add_grid}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mtbc", description="Companion of Aumente-Maestro et al. (2025): BUSI / "
                                              "Curated BUSI tools.")
    parser.add_argument("--version", action="version", version=f"mtbc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mtbc`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    from mtbc_lib.data import DataError

    try:
        return int(args.func(args) or 0)
    except (DataError, OSError, ValueError) as exc:
        print(f"mtbc: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtbc: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

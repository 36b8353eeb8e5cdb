"""The ``mtbc`` command: one sub-command per workflow step, in the order of the work —
``audit`` (the duplicate search), ``train`` (one setting), ``grid`` (the ablation grid),
``gpu`` (the grids and the leakage study on a GPU, many trainings at once),
``recipe`` (the recipe study), ``leakage`` (the leakage study), ``claims`` (the paper's
claims tested per image), ``book`` (build the book, or its table of contents), ``stamp``
(record the machine in executed notebooks) and ``provenance`` (what executed them).

Add a sub-command by writing ``_add_<name>(subparsers)`` (a parser whose defaults hold
``func``, the function run with the parsed arguments and returning the exit code) and
listing it in ``SUBCOMMANDS``. Building the parser imports no training code, so that
``mtbc audit`` starts without torch. Bad input (a missing folder, a corrupt PNG, an unknown
parameter, an unwritable output folder) ends with one line ``mtbc: error: <message>`` on
stderr and exit code 2.
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
    from mtbc_lib.dedup.search import RESAMPLE, RULES, DedupConfig

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
                   help="network, a name of mtbc_lib.networks.BACKBONES (default: %(default)s)")
    p.add_argument("--profile", default="fast", metavar="NAME",
                   help="training profile, a name of mtbc_lib.engine.config.PROFILES (default: %(default)s)")
    p.add_argument("--settings", nargs="+", default=None, metavar="SETTING",
                   help="settings to train, names of mtbc_lib.studies.ablation.SETTINGS (default: all six)")
    p.add_argument("--data", metavar="DIR", default="", help="BUSI folder (default: $MTBC_DATA)")
    p.add_argument("--out", metavar="DIR", default="results", help="results folder (default: %(default)s)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                   help="address of a running dask.distributed scheduler: run each setting on the cluster "
                        "(workers must see this repository and the data at the same paths)")
    p.add_argument("--set", dest="fields", type=_assignment, action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field that does not change the numbers, e.g. --set num_threads=1")
    p.add_argument("--engine", choices=("auto", "serial", "batched"), default="auto",
                   help="serial: one training at a time; batched: every training of the grid together on one "
                        "device (mtbc_lib.engine.batched); auto: batched on a CUDA GPU (default: %(default)s)")
    p.set_defaults(func=_run_grid)


def _run_grid(args) -> int:
    from mtbc_lib.studies import grid

    done = grid.run_grid(args.backbone, args.profile, settings=args.settings, scheduler=args.scheduler,
                         out_dir=args.out, data_dir=args.data or None, extra=_engine_fields(args.fields) or None,
                         engine=args.engine)
    print(f"trained {len(done)} setting(s): {', '.join(done) or 'none (all complete)'}; "
          f"wrote {args.out}/ablation.csv")
    return 0


# ----------------------------------------------------------------------------- train

def _assignment(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value as a Python literal, else the text)."""
    import ast

    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. epochs=14)")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _engine_fields(fields: list[tuple[str, object]]) -> dict:
    """``--set`` of a study whose settings are fixed: only fields that do not change the numbers."""
    from mtbc_lib.engine.config import NON_RESULT_FIELDS

    changing = sorted(set(dict(fields)) - NON_RESULT_FIELDS)
    if changing:
        raise ValueError(f"--set {', '.join(changing)}: a study's settings are fixed; only fields that do not change "
                         f"the numbers may be set ({', '.join(sorted(NON_RESULT_FIELDS))})")
    return dict(fields)


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="train and evaluate one setting (notebooks/train.ipynb through papermill)",
        description="Execute notebooks/train.ipynb for one setting, as `mtbc grid` does for each: it trains "
                    "(or resumes) every fold asked for, writes results/<run name>/ and the executed notebook "
                    "(book/runs/<run name>.ipynb for a run of all folds in results/, else beside its results). "
                    "Any other field of the run's configuration is given with --set.")
    p.add_argument("--backbone", default="unetplusplus", metavar="NAME",
                   help="network, a name of mtbc_lib.networks.BACKBONES (default: %(default)s)")
    p.add_argument("--task", default="mt", metavar="TASK", help="seg, cls or mt (default: %(default)s)")
    p.add_argument("--do", dest="oversampling", action="store_true", help="deterministic oversampling (DO)")
    p.add_argument("--profile", default="paper", metavar="NAME",
                   help="training profile, a name of mtbc_lib.engine.config.PROFILES (default: %(default)s)")
    p.add_argument("--folds", default="", metavar="K,K", help="folds to train, e.g. 0,2 (default: all)")
    p.add_argument("--data", metavar="DIR", default="", help="BUSI folder (default: $MTBC_DATA)")
    p.add_argument("--out", metavar="DIR", default="results", help="results folder (default: %(default)s)")
    p.add_argument("--set", dest="fields", type=_assignment, action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainConfig field, e.g. --set epochs=14 --set num_threads=1 (repeatable)")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from mtbc_lib.studies import grid

    name = grid.train_setting({"backbone": args.backbone, "task": args.task, "oversampling": args.oversampling,
                               "profile": args.profile, "folds": args.folds, "out_dir": args.out,
                               "data_dir": args.data, **dict(args.fields)})
    print(f"trained {name}")
    return 0


# ----------------------------------------------------------------------------- studies

def _add_recipe(sub) -> None:
    p = sub.add_parser("recipe", help="train the recipe study's candidates (fold 0, validation only)",
                       description="Train the recipe study's candidates one after the other (finished ones are "
                                   "skipped), each on fold 0, judged on the validation split only.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="candidates to run (default: all; see mtbc_lib.studies.recipe.CANDIDATES and "
                        "CLASSIFIER_PROBE)")
    p.add_argument("--data", metavar="DIR", default="", help="BUSI folder (default: $MTBC_DATA)")
    p.set_defaults(func=_run_recipe)


def _run_recipe(args) -> int:
    from mtbc_lib.studies import recipe

    recipe.train_candidates(args.names or None, data_dir=args.data)
    return 0


def _add_leakage(sub) -> None:
    p = sub.add_parser("leakage", help="train the leakage study (image- against scan-level folds on raw BUSI)",
                       description="Train the leakage study's designs (resumable), write results/leakage.csv "
                                   "and the runs' pages (book/runs/).")
    p.add_argument("designs", nargs="*", metavar="DESIGN", help="designs to train (default: all)")
    p.add_argument("--backbone", default=None, metavar="NAME",
                   help="network (default: the study's first one, unetplusplus-r34; the replica study: unetplusplus)")
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="training profile (default: cpu; the replica study: replica)")
    p.add_argument("--data", metavar="DIR", default="", help="BUSI folder (default: $MTBC_DATA)")
    p.add_argument("--set", dest="fields", type=_assignment, action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainConfig field that does not change the numbers, e.g. --set num_threads=1")
    p.set_defaults(func=_run_leakage)


def _run_leakage(args) -> int:
    from mtbc_lib.studies import leakage

    study = {k: v for k, v in (("backbone", args.backbone), ("profile", args.profile)) if v}
    leakage.train_designs(args.designs or None, data_dir=args.data, **study, **_engine_fields(args.fields))
    print("run pages:", ", ".join(leakage.run_pages(args.designs or None, args.data, **study)))
    print(leakage.write_leakage_csv(data_dir=args.data))
    return 0


def _add_claims(sub) -> None:
    p = sub.add_parser("claims", help="test the paper's claims per image on finished grids (claims.csv, "
                                      "consistency.csv)",
                       description="Test each claim of the paper on the per-image test outputs of finished grids "
                                   "and measure how often their labels and masks disagree; write RESULTS/claims.csv "
                                   "and RESULTS/consistency.csv with the rows of every complete grid named.")
    p.add_argument("grids", nargs="+", metavar="BACKBONE PROFILE",
                   help="one or more grids, each a backbone and a profile, e.g. unetplusplus cpu nnunet cpu")
    p.add_argument("--results", metavar="DIR", default="results", help="results folder (default: %(default)s)")
    p.set_defaults(func=_run_claims)


def _run_claims(args) -> int:
    from mtbc_lib.studies import claims, consistency
    from mtbc_lib.studies.ablation import grid_list

    if len(args.grids) % 2:
        raise ValueError(f"grids {' '.join(args.grids)}: expected pairs BACKBONE PROFILE, e.g. unetplusplus cpu")
    grids = grid_list("grids", [f"{b}/{p}" for b, p in zip(args.grids[::2], args.grids[1::2])])
    print(claims.write_claims_csv(grids, args.results))
    print(consistency.write_consistency_csv(grids, args.results))
    return 0


def _add_gpu(sub) -> None:
    from pathlib import Path

    p = sub.add_parser("gpu", help="the grids and the leakage study on a GPU, many trainings at once (batched)",
                       description="Export the arrays where the BUSI folder is (--export); on a GPU machine, train "
                                   "as many whole trainings of the U-Net++ grid, the nnU-Net grid and the leakage "
                                   "study as fit a wall-clock budget, batched, and pack the finished runs into one "
                                   "tar per study (--arrays, --out); or time one step (--bench).")
    p.add_argument("--export", type=Path, metavar="NPZ", help="write the arrays here (where the BUSI folder is)")
    p.add_argument("--size", type=int, default=128, help="--export: image size in px (the profile's: 128, replica 64)")
    p.add_argument("--data", default=None, help="--export: BUSI folder (default: $MTBC_DATA or ../shared/data/BUSI)")
    p.add_argument("--arrays", type=Path, help="the exported .npz (training)")
    p.add_argument("--out", type=Path, help="where the tars of finished runs go (training)")
    p.add_argument("--have", type=Path, help="tars of an earlier call: their finished folds are not trained again")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of this call (default: %(default)s)")
    p.add_argument("--reserve-minutes", type=float, default=1.0, help="of it, kept for the last epoch, tests, tars")
    p.add_argument("--studies", default="unetplusplus,nnunet,leakage", help="which, in order (default: %(default)s)")
    p.add_argument("--profile", default="paper", help="training profile (paper; replica for a dry run on a CPU)")
    p.add_argument("--epochs", type=int, default=0, help="maximum epochs instead of the profile's (0: the profile's)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images of each class (0: all; dry runs)")
    p.add_argument("--results", default="results", help="results folder, relative to the repository (default: %(default)s)")
    p.add_argument("--unpack", type=Path, metavar="TARS", help="extract the tars of a GPU call (a .tar or its folder) here")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    p.add_argument("--max-members", type=int, default=0, help="at most this many trainings per stack (0: no limit)")
    p.add_argument("--compile", default="", help="torch.compile mode of the stacked forward (GPU; '' none)")
    p.add_argument("--bench", action="store_true", help="time one training step instead of training")
    p.add_argument("--members", default="1,6,24", help="--bench: numbers of stacked networks")
    p.add_argument("--backbone", default="unetplusplus", help="--bench: network")
    p.add_argument("--width", type=float, default=1.0, help="--bench: width factor of the network")
    p.add_argument("--steps", type=int, default=5, help="--bench: timed steps per row")
    p.set_defaults(func=_run_gpu)


def _run_gpu(args) -> int:
    from mtbc_lib.studies import gpu

    return gpu.run(args)


# ----------------------------------------------------------------------------- the book

def _add_book(sub) -> None:
    p = sub.add_parser("book", help="build the HTML book (strict, offline), or rewrite its table of contents",
                       description="build: the HTML book into _build/html (warnings are errors; the stored "
                                   "notebooks are shown, not executed). toc: group the stored run notebooks "
                                   "under their backbone in _toc.yml.")
    p.add_argument("action", choices=("build", "toc"), nargs="?", default="build")
    p.add_argument("--all", action="store_true", help="build: re-build every page, not only changed ones")
    p.set_defaults(func=_run_book)


def _run_book(args) -> int:
    from mtbc_lib.report import book

    if args.action == "toc":
        print("_toc.yml " + ("updated" if book.sync_toc() else "already up to date"))
        return 0
    return book.build(rebuild_all=args.all).returncode


def _add_stamp(sub) -> None:
    p = sub.add_parser("stamp", help="record this machine's hardware and packages in executed notebooks",
                       description="Record this machine's hardware and package versions in the metadata of "
                                   "notebooks papermill has just executed (the book's provenance page reads it).")
    p.add_argument("notebooks", nargs="+", metavar="NOTEBOOK")
    p.set_defaults(func=_run_stamp)


def _run_stamp(args) -> int:
    from mtbc_lib import provenance

    env = provenance.environment()
    for path in args.notebooks:
        provenance.stamp(path, env)
        print(f"stamped {path}")
    return 0


def _add_provenance(sub) -> None:
    p = sub.add_parser("provenance", help="list the stored notebooks: when, how long and on what they ran")
    p.add_argument("book_dir", nargs="?", default="book", metavar="BOOK_DIR",
                   help="folder of the stored notebooks (default: %(default)s)")
    p.set_defaults(func=_run_provenance)


def _run_provenance(args) -> int:
    from mtbc_lib import provenance

    table = provenance.runs_table(args.book_dir)
    print(table.drop(columns="duration_s").to_string(index=False) if len(table) else "no stored notebooks")
    return 0


#: Sub-commands, in the order of the work: name -> function adding its parser.
SUBCOMMANDS = {"audit": _add_audit, "train": _add_train, "grid": _add_grid, "gpu": _add_gpu, "recipe": _add_recipe,
               "leakage": _add_leakage, "claims": _add_claims, "book": _add_book, "stamp": _add_stamp,
               "provenance": _add_provenance}


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
    from mtbc_lib.data.busi import DataError

    try:
        return int(args.func(args) or 0)
    except (DataError, OSError, ValueError, RuntimeError) as exc:
        print(f"mtbc: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a notebook that failed: papermill names the cell's exception
        if type(exc).__name__ != "PapermillExecutionError":
            raise
        print(f"mtbc: error: {exc.ename}: {_one_line(exc.evalue)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtbc: error: interrupted", file=sys.stderr)
        return 130


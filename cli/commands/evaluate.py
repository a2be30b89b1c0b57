"""`deepfake evaluate`: the command line of training/evaluate.py (which scores a manifest and builds the
report); here only flags, settings, model and detector loading, and where the report goes.

WHY apart from training/evaluate.py: the CLI sits on top of training, so training imports nothing of it
(tests/test_import_graph.py: no cycle between packages).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cli.commands import common
from cli.commands.common import SetupError, UsageError
from training.evaluate import (
    Item,
    Scored,
    build_report,
    filter_items,
    format_markdown,
    format_table,
    plot_roc,
    read_manifest,
    read_scores,
    score_crops,
    score_videos,
    write_scores,
)

HELP = "Score a labelled manifest of crops/videos: ROC AUC, AP, EER, accuracy, log loss per source."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "manifest", type=Path, help="MANIFEST.tsv (path, label, kind; optional split, dataset, method)"
    )
    parser.add_argument("--root", type=Path, help="folder the paths are relative to (default: manifest's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument(
        "--markdown", action="store_true", help="print Markdown tables (per dataset and method) instead"
    )
    parser.add_argument("--out", type=Path, help="also write report.json, scores.tsv and roc.png into DIR")
    parser.add_argument(
        "--kind", action="append", choices=["crop", "video"], help="only this kind (repeatable)"
    )
    parser.add_argument("--split", action="append", help="only this split, e.g. val or dev (repeatable)")
    parser.add_argument("--dataset", action="append", help="only this dataset value (repeatable)")
    parser.add_argument("--limit", type=int, help="only the first N matching rows (quick checks)")
    parser.add_argument("--batch-size", type=int, default=32, help="crops per inference batch (default 32)")
    parser.add_argument(
        "--inconclusive-score",
        type=float,
        default=0.5,
        help="score of a video the pipeline calls inconclusive or cannot analyse (default 0.5)",
    )
    parser.add_argument(
        "--from-scores",
        action="store_true",
        help="MANIFEST is a scores.tsv from an earlier --out: recompute the report without scoring again",
    )
    parser.add_argument("--threshold", type=float, help="decision threshold (default: the model's own)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    common.add_pipeline_arguments(parser)  # the flags `detect` takes: --model, --detector, --frames, ...


def run(args: argparse.Namespace) -> int:
    try:
        if not 0.0 <= args.inconclusive_score <= 1.0:
            raise UsageError("--inconclusive-score must be a probability in [0, 1]")
        if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
            raise UsageError("--batch-size and --limit must be at least 1")
        if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
            raise UsageError("--threshold must be a probability in [0, 1]")
        settings = common.settings_from_args(args)
        if args.from_scores:
            return _rescore(args, settings)
        try:
            items = read_manifest(args.manifest)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
        root = args.root or args.manifest.parent
        items = filter_items(items, args.kind, args.split, args.dataset, args.limit)
        if not items:
            raise UsageError(f"no rows of {args.manifest} match the filters")
        missing = [it.path for it in items if not (root / it.path).is_file()]
        if missing:
            raise UsageError(
                f"{len(missing)} manifest file(s) not found under {root} (first: {missing[0]}); "
                "pass --root DIR if the paths are relative to another folder"
            )
        common.set_threads(settings.threads)
        backend = common.load_backend(settings)
        videos = [it for it in items if it.kind == "video"]
        detector = common.load_detector(settings) if videos else None
    except (UsageError, SetupError) as exc:
        return common.report_error(exc)

    start = time.monotonic()
    crops = [it for it in items if it.kind == "crop"]
    ordered = crops + videos
    parts: list[Scored] = []
    if crops:
        try:
            parts.append(score_crops(crops, root, backend, args.batch_size, args.quiet))
        except ValueError as exc:  # an unreadable image or a crop the model refuses: say which, no traceback
            print(f"deepfake: error: {exc}", file=sys.stderr)
            return 1
    if videos:
        from preprocessor.pipeline import Pipeline

        pipeline = Pipeline(settings, backend, detector)
        parts.append(score_videos(videos, root, pipeline.analyze, args.inconclusive_score, args.quiet))
    backend.close()
    scored = Scored(
        scores=np.concatenate([p.scores for p in parts]),
        inconclusive=np.concatenate([p.inconclusive for p in parts]),
        failures=[f for p in parts for f in p.failures],
    )
    meta = {
        "name": backend.info.name,
        "version": backend.info.version,
        "sha256": backend.info.sha256,
        "path": str(settings.model_path),
        "temperature": backend.meta.temperature,
        "crop": backend.meta.crop.model_dump(),
        "clip_len": backend.meta.clip_len,
    }
    threshold = backend.meta.threshold if args.threshold is None else args.threshold
    report = build_report(ordered, scored, threshold, meta)
    report["seconds"] = round(time.monotonic() - start, 1)
    return _finish(args, ordered, scored, report)


def _rescore(args: argparse.Namespace, settings: Any) -> int:
    """``--from-scores``: the report from a saved scores.tsv (filters by kind/dataset still apply)."""
    try:
        try:
            items, scored = read_scores(args.manifest)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
        keep = [
            i
            for i, it in enumerate(items)
            if (not args.kind or it.kind in args.kind)
            and (not args.split or it.split in args.split)
            and (not args.dataset or it.dataset in args.dataset)
        ][: args.limit or None]
        if not keep:
            raise UsageError(f"no rows of {args.manifest} match the filters")
        meta: dict[str, Any] = {"scores_from": str(args.manifest)}
        threshold = args.threshold
        if threshold is None:
            backend = common.load_backend(settings)  # only for its shipped threshold
            threshold = backend.meta.threshold
            meta.update(name=backend.info.name, version=backend.info.version, sha256=backend.info.sha256)
            backend.close()
    except (UsageError, SetupError) as exc:
        return common.report_error(exc)
    items = [items[i] for i in keep]
    scored = Scored(scored.scores[keep], scored.inconclusive[keep])
    return _finish(args, items, scored, build_report(items, scored, threshold, meta))


def _finish(args: argparse.Namespace, ordered: list[Item], scored: Scored, report: dict[str, Any]) -> int:
    """Write the --out files and print the report in the chosen format."""
    meta = report["model"]
    report["inconclusive_score"] = args.inconclusive_score
    report["manifest"] = str(args.manifest)
    report["filters"] = {"kind": args.kind, "split": args.split, "dataset": args.dataset, "limit": args.limit}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_scores(args.out / "scores.tsv", ordered, scored)
        (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        name = f"{meta.get('name', 'model')} v{meta.get('version', '?')}"
        title = f"{name}: {args.manifest.name} ({len(ordered)} items)"
        plot_roc(args.out / "roc.png", ordered, scored, title)
        if not args.quiet:
            print(f"[evaluate] wrote {args.out}/report.json, scores.tsv, roc.png", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    elif args.markdown:
        print(format_markdown(report, ("dataset", "method")))
    else:
        print(format_table(report))
    return 0

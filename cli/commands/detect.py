"""``deepfake detect PATH...``: analyse videos, print a summary table or JSON Lines.

Each input is independent: a bad file yields a FileError record (path + error code and message) and the
others still run; the exit status is 1 if any input failed, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.commands.common import (
    VIDEO_SUFFIXES,
    SetupError,
    UsageError,
    add_audio_arguments,
    add_pipeline_arguments,
    load_backend,
    load_detector,
    load_sync_model,
    report_error,
    set_threads,
    settings_from_args,
)
from deepfake.contracts.schemas import DetectionResult, ErrorDetail, FileError
from deepfake.evidence_files import externalise

HELP = "Analyse videos: verdict, calibrated score, face tracks and a timeline of scores."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="video files or folders of videos"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per input per line")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    parser.add_argument(
        "--evidence",
        type=Path,
        metavar="DIR",
        help="write each face's thumbnail, heatmap and frame strip to DIR/<video name>/ (listed in the "
        "result's tracks[].evidence)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="write a self-contained report: FILE for one video (PDF when FILE ends in .pdf, else HTML), "
        "FILE/<video name>.html for several",
    )
    add_pipeline_arguments(parser)
    add_audio_arguments(parser)


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given (missing ones too: they get a file_not_found record); folders -> the videos inside,
    recursively, sorted."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            )
        else:
            out.append(path)
    return out


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        videos = expand_paths(args.paths)
        if not videos:
            raise UsageError(
                f"no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) in {', '.join(map(str, args.paths))}"
            )
        set_threads(settings.threads)
        backend = load_backend(settings)
        sync_model = load_sync_model(settings)
        detector = load_detector(settings)
    except (UsageError, SetupError) as exc:
        return report_error(exc)

    from tqdm import tqdm

    from preprocessor.errors import VideoError
    from preprocessor.pipeline import Pipeline

    pipeline = Pipeline(settings, backend, detector, sync_model=sync_model)
    disable = True if args.no_progress else None  # tqdm: None = only on a terminal
    rows: list[DetectionResult | FileError] = []
    failed = 0
    videos_bar = tqdm(videos, desc="videos", unit="video", file=sys.stderr, disable=disable, position=0)
    names = output_names(videos)
    for index, path in enumerate(videos_bar):
        stage_bar = tqdm(
            total=100, desc="probe", unit="%", file=sys.stderr, disable=disable, position=1, leave=False
        )

        def progress(stage: str, fraction: float, bar: tqdm = stage_bar) -> None:
            bar.set_description(stage, refresh=False)
            bar.n = int(round(fraction * 100))
            bar.refresh()

        try:
            result = pipeline.analyze(path, progress, evidence=bool(args.evidence or args.report))
            row: DetectionResult | FileError = result
            name = names[index]
            write_outputs(result, name, args.evidence, report_path(args.report, name, len(videos)))
        except VideoError as exc:
            row = FileError(path=str(path), error=exc.to_error_detail())
            failed += 1
        except Exception as exc:  # one broken input must not stop the batch; say it is our fault
            row = FileError(
                path=str(path),
                error=ErrorDetail(
                    code="internal_error",
                    message=f"analysis failed unexpectedly ({type(exc).__name__}: {exc}); please report it",
                ),
            )
            failed += 1
        finally:
            stage_bar.close()
        rows.append(row)
        if args.json:
            print(row.model_dump_json(), flush=True)
    videos_bar.close()
    backend.close()
    if sync_model is not None:
        sync_model.close()
    if not args.json:
        print(summary_table(rows))
    return 1 if failed else 0


def output_names(videos: list[Path]) -> list[str]:
    """A file-system name per input for its evidence folder and report: the file's stem, with -2, -3, ...
    added when inputs share one (a/clip.mp4 and b/clip.mp4), so no input overwrites another's."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for video in videos:
        seen[video.stem] = seen.get(video.stem, 0) + 1
        names.append(video.stem if seen[video.stem] == 1 else f"{video.stem}-{seen[video.stem]}")
    return names


def report_path(report: Path | None, name: str, n_videos: int) -> Path | None:
    """Where the report of the input called ``name`` goes: ``--report`` itself for one video, a file in it
    for several."""
    if report is None:
        return None
    return report if n_videos == 1 else report / f"{name}.html"


def write_outputs(result: DetectionResult, name: str, evidence_dir: Path | None, report: Path | None) -> None:
    """The report (images inlined) and the evidence files; the result then lists the files' paths, or no
    evidence at all when only a report was asked for (its images live in the report)."""
    from deepfake.report import render_pdf, render_report

    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        html = render_report(result)
        if report.suffix.lower() == ".pdf":
            report.write_bytes(render_pdf(html))
        else:
            report.write_text(html, encoding="utf-8")
    if evidence_dir is None:
        for track in result.tracks:
            track.evidence = None
        return
    folder = evidence_dir / name

    def save(name: str, jpeg: bytes) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jpeg)
        return str(folder / name)

    externalise(result, save)


def summary_table(rows: list[DetectionResult | FileError]) -> str:
    """A plain-text table: verdict, score, faces, seconds, and the first warning or the error."""
    header = ("path", "verdict", "score", "faces", "seconds", "note")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        if isinstance(row, FileError):
            lines.append((row.path, "error", "-", "-", "-", f"{row.error.code}: {row.error.message}"))
            continue
        score = "-" if row.score is None else f"{row.score:.3f}"
        faces = sum(1 for t in row.tracks if t.used_for_verdict)
        note = row.warnings[0] if row.warnings else ""
        seconds = f"{row.timings_ms.get('total', 0.0) / 1000:.2f}"
        lines.append((row.path or "", row.verdict, score, str(faces), seconds, note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in lines
    ).rstrip()

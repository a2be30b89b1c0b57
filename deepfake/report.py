"""The self-contained HTML report of one analysis (``GET /v1/jobs/{id}/report``, ``detect --report``).

WHY self-contained: a report is forwarded, attached to a ticket or archived; it must open anywhere, years
later, without the API key or the service. So images are inlined as data URIs (``deepfake.evidence_files
.inline``), the timeline is inline SVG and the style sheet is in the page; nothing is fetched.
``render_pdf`` prints the same page to PDF with WeasyPrint (PyPI; needs the system's Pango), where a PDF
is what a case file takes.
"""

from __future__ import annotations

from html import escape

from deepfake.contracts.schemas import DetectionResult, TimelinePoint, Track

LIMITS = (
    "Limits of the method. The verdict is a statistical estimate from a machine-learning model that "
    "looks at the faces in a sample of frames; it is a triage signal, not proof. It judges faces only: "
    "manipulated voices, lip-sync edits, edited backgrounds and videos without a visible face are not "
    "assessed. Heavy compression, low resolution, small or turned faces, and kinds of manipulation or "
    "sources the model was not trained on lower its accuracy, and a real video can be called fake. The "
    "heatmap shows where the model's blending head responded, not a proven edit. Weigh the result with "
    "other evidence: the source of the video, its history, and a human look at the frames."
)


def threshold_sentence(result: DetectionResult) -> str:
    """What the score and the threshold mean, with the model's measured error rates when it has them."""
    text = (
        "The score is the model's calibrated probability that a face was manipulated; a video is called "
        f"fake when its most suspicious deciding face scores {result.threshold:.2f} or more."
    )
    model = result.model
    if model.reals_called_fake is not None and model.fakes_caught is not None:
        text += (
            f" At this threshold, on videos from sources it was not trained on, the model called "
            f"{model.reals_called_fake:.0%} of real videos fake and caught {model.fakes_caught:.0%} of fakes."
        )
    return text


def verdict_line(result: DetectionResult) -> str:
    if result.score is None:
        return "Inconclusive: no usable face was found, so the video cannot be judged."
    word = {"fake": "Likely manipulated", "real": "No manipulation found"}[result.verdict]
    return f"{word} (score {result.score:.2f}, threshold {result.threshold:.2f})"


def timeline_svg(points: list[TimelinePoint], threshold: float, duration: float) -> str:
    """Scores over time as an inline SVG line chart (gaps where no face was seen), threshold dashed."""
    width, height, pad = 640, 160, 28
    span = max(duration, max((p.t for p in points), default=0.0), 1e-6)

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * t / span

    def y(score: float) -> float:
        return height - pad - (height - 2 * pad) * score

    segments: list[list[str]] = [[]]
    for point in points:
        if point.score is None:
            segments.append([])
        else:
            segments[-1].append(f"{x(point.t):.1f},{y(point.score):.1f}")
    lines = "".join(
        f'<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="{" ".join(seg)}"/>'
        for seg in segments
        if seg
    )
    dots = "".join(
        f'<circle cx="{x(p.t):.1f}" cy="{y(p.score):.1f}" r="2.5" fill="#1f5fbf"/>'
        for p in points
        if p.score is not None
    )
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="Most suspicious face score over time">'
        f'<rect x="{pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" fill="#f6f6f6"/>'
        f'<line x1="{pad}" x2="{width - pad}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
        f'stroke="#b00" stroke-dasharray="5,4"/>'
        f'<text x="{width - pad}" y="{y(threshold) - 4:.1f}" font-size="11" text-anchor="end" '
        f'fill="#b00">threshold {threshold:.2f}</text>'
        f'<text x="{pad}" y="{height - 8}" font-size="11">0 s</text>'
        f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end">{span:.1f} s</text>'
        f'<text x="4" y="{y(1.0) + 4:.1f}" font-size="11">1</text>'
        f'<text x="4" y="{y(0.0) + 4:.1f}" font-size="11">0</text>'
        f"{lines}{dots}</svg>"
    )


def _img(src: str | None, alt: str) -> str:
    return f'<img src="{escape(src)}" alt="{escape(alt)}">' if src else ""


def deciding_track(result: DetectionResult) -> int | None:
    """The id of the face whose score is the video's: the first counted track with the top score."""
    for track in result.tracks:
        if track.used_for_verdict and track.score is not None and track.score == result.score:
            return track.id
    return None


def role_of(track: Track, deciding: int | None) -> str:
    """In words, what the face did for the verdict (the web app says the same)."""
    if track.id == deciding:
        return "decided the verdict: the most suspicious face that counts"
    if track.used_for_verdict:
        return "counted, but another face scored higher"
    return "not counted: too small or seen too briefly"


def _face(track: Track, deciding: int | None) -> str:
    score = "no score" if track.score is None else f"{track.score:.2f}"
    decided = role_of(track, deciding)
    evidence = track.evidence
    pictures = ""
    if evidence is not None:
        at = f"most suspicious frame at {evidence.frame_t:.2f} s"
        pictures = (
            f'<div class="pics">{_img(evidence.thumbnail, f"face {track.id}, {at}")}'
            f"{_img(evidence.heatmap, f'blend-map heatmap of face {track.id}')}</div>"
            f"<p class=small>{escape(at)}; left: the face the model saw, right: where its blending head "
            "responded (red: strong)</p>"
            f'<div class="strip">{_img(evidence.strip, f"sampled frames of face {track.id}")}</div>'
        )
    return (
        f'<section class="face"><h3>Face {track.id}: {escape(track.verdict)}, score {score}</h3>'
        f"<p>Seen from {track.start_s:.2f} s to {track.end_s:.2f} s in {len(track.frames)} sampled frames, "
        f"about {track.mean_face_px:.0f} px; {decided}.</p><p>{escape(signals_line(track))}</p>"
        f"{pictures}</section>"
    )


def signals_line(track: Track) -> str:
    """The face's two signals in words: its visual score and its lips against the voice (README
    "Audio-visual signal"; the web app says the same)."""
    visual = (
        ""
        if track.signals is None or track.signals.visual is None
        else f"visual {track.signals.visual:.2f}; "
    )
    av = track.audio_visual
    if av is None:
        return f"{visual}lips against the voice: not analysed"
    if av.score is None:
        return f"{visual}lips against the voice: no score ({av.reason.replace('_', ' ')})"
    offset = "" if av.offset_s is None else f", best audio offset {av.offset_s:.2f} s"
    return f"{visual}lips against the voice: {av.score:.2f} out of sync{offset} (fused into the score)"


def render_report(result: DetectionResult, title: str | None = None) -> str:
    """The report as one HTML document; ``result``'s evidence references should be data URIs
    (``evidence_files.inline``) for the report to be self-contained."""
    video, model = result.video, result.model
    name = title or result.path or "uploaded video"
    analysed = result.analyzed_at.isoformat(timespec="seconds") if result.analyzed_at else "unknown"
    rows = [
        ("File", name),
        ("SHA-256", video.sha256 or "not recorded"),
        ("Size", f"{video.size_bytes:,} bytes"),
        ("Duration", f"{video.duration_s:.2f} s"),
        ("Video", f"{video.width}x{video.height}, {video.codec} in {video.container}, {video.fps:.2f} fps"),
        ("Frames analysed", str(video.frames_sampled)),
        ("Model", f"{model.name} {model.version} ({model.backend})"),
        ("Model SHA-256", model.sha256 or "not recorded"),
        (
            "Sync model",
            "off"
            if result.sync_model is None
            else f"{result.sync_model.name} {result.sync_model.version} "
            f"({result.sync_model.backend}), SHA-256 {result.sync_model.sha256 or 'not recorded'}",
        ),
        ("Analysed at", analysed),
    ]
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    warnings = "".join(f"<li>{escape(w)}</li>" for w in result.warnings) or "<li>none</li>"
    deciding = deciding_track(result)
    faces = "".join(_face(t, deciding) for t in result.tracks) or "<p>No face was tracked.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Deepfake analysis report: {escape(name)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
@page{{size:A4;margin:1.5cm}}
body{{font-family:system-ui,sans-serif;max-width:50rem;margin:1.5rem auto;padding:0 1rem;color:#1b1b1b}}
.verdict{{padding:.8rem 1rem;border-radius:.4rem;font-size:1.3rem;font-weight:700}}
.fake{{background:#fde2e1;color:#8a0000}} .real{{background:#e1f5e4;color:#0b5a1b}}
.inconclusive{{background:#eee;color:#444}}
table{{border-collapse:collapse}} th,td{{text-align:left;padding:.2rem .8rem .2rem 0;vertical-align:top}}
td{{word-break:break-all}}
.face{{border:1px solid #ccc;border-radius:.4rem;padding:.6rem 1rem;margin:1rem 0;break-inside:avoid}}
.pics img{{width:160px;height:160px;margin-right:.5rem}} .strip img{{max-width:100%}}
.small{{font-size:.85rem}}
</style></head><body>
<h1>Deepfake analysis report</h1>
<p class="verdict {escape(result.verdict)}">{escape(verdict_line(result))}</p>
<p>{escape(threshold_sentence(result))}</p>
<h2>File and model</h2><table>{table}</table>
<h2>Score over time</h2>{timeline_svg(result.timeline, result.threshold, video.duration_s)}
<p class="small">Per sampled moment, the highest per-frame score among the faces seen then.</p>
<h2>Faces</h2>{faces}
<h2>Warnings</h2><ul>{warnings}</ul>
<h2>Limits</h2><p>{escape(LIMITS)}</p>
</body></html>
"""


def render_pdf(html: str) -> bytes:
    """The report page as PDF. WeasyPrint is imported here: only PDF reports need it (and its Pango)."""
    from weasyprint import HTML

    # No base URL and only data: URIs in the page, so rendering fetches nothing.
    return HTML(string=html).write_pdf()

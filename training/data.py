"""Where training data comes from: the project MANIFEST, the standard public layouts, a RAM cache of crops.

Why a cache: decoding 18,000 JPEGs takes about a minute of a scarce CPU; doing it once and keeping the
crops as one uint8 array (resized to ``store_size``, a little larger than the model input so random crops
and scale jitter have room) makes every later run start in seconds.

Manifest rows (MANIFEST.tsv, one per file): path, label, kind, split, dataset, method, group, source_repo,
licence. ``group`` keeps one person on one side of a split; never split rows of a group apart.

Videos (the scanners below, or manifest rows of kind ``video``) become crops in ``training/video_crops.py``,
through the serving pipeline (``deepfake faces``), so their crops are cut exactly as serving cuts them. Their
frames carry a ``track`` id in the CropSet, so phase 2 can draw real consecutive frames of one face.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MANIFEST_FIELDS = ["path", "label", "kind", "split", "dataset", "method", "group", "source_repo", "licence"]
_CROP_PX = re.compile(r"crop size before resize (\d+) px")


def read_manifest(
    path: str | Path, required: tuple[str, ...] = ("path", "label", "kind", "split")
) -> list[dict[str, str]]:
    """Rows of a manifest TSV as dicts, labels normalised to real/fake; fails with the file, and the line
    or the missing columns, when malformed. The one reader for training and ``deepfake evaluate``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = set(required) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: manifest header lacks column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    for line_no, row in enumerate(rows, start=2):
        label = (row.get("label") or "").strip().lower()
        if label not in ("real", "fake"):
            raise ValueError(f"{path}:{line_no}: label must be real or fake, got {row.get('label')!r}")
        row["label"] = label
    return rows


def write_manifest(rows: list[dict[str, str]], path: str | Path) -> None:
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in MANIFEST_FIELDS})


def crop_px(source_repo: str) -> int:
    """Side of the face crop in the source frame, when the manifest says (DFDC crops); 0 when unknown.

    It exposes the resolution shortcut: small (low-resolution) faces look blurry whatever their label.
    """
    m = _CROP_PX.search(source_repo or "")
    return int(m.group(1)) if m else 0


@dataclass
class CropSet:
    """Crops held in RAM: images uint8 [N, S, S, 3] RGB, labels int64 (1 = fake), crop_px int32.

    ``track`` (int64 [N], optional): items cut from one stretch of one video face track share an id >= 0
    and are stored consecutively in time order; -1 (or no array at all) marks a still crop (DFDC). Clips
    (phase 2) take consecutive real frames of a track instead of jittering one still.

    ``weight`` (float64 [N], optional): how often a video item is drawn as a video real or fake, relative
    to the others of its label (training/video_crops.py balances per video and damps large sources); 0 for
    stills, which are drawn uniformly from their own pools.

    ``landmarks`` (float32 [N, 68, 2], optional): facial landmarks of the real crops in pixel coordinates,
    NaN where there are none (training/landmarks.py); self-blending then draws landmark-shaped masks.
    """

    images: np.ndarray
    labels: np.ndarray
    crop_px: np.ndarray
    paths: list[str]
    track: np.ndarray | None = None
    weight: np.ndarray | None = None
    landmarks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def concat_crops(*sets: CropSet) -> CropSet:
    """One CropSet of several (e.g. DFDC crops + video crops); track ids are renumbered to stay unique."""
    track = None
    if any(s.track is not None for s in sets):
        parts, offset = [], 0
        for s in sets:
            t = np.full(len(s), -1, np.int64) if s.track is None else s.track.astype(np.int64)
            parts.append(np.where(t >= 0, t + offset, -1))
            offset += int(t.max()) + 1 if len(t) and t.max() >= 0 else 0
        track = np.concatenate(parts)
    weight = None
    if any(s.weight is not None for s in sets):
        weight = np.concatenate([np.zeros(len(s)) if s.weight is None else s.weight for s in sets])
    landmarks = None
    if any(s.landmarks is not None for s in sets):
        landmarks = np.concatenate(
            [
                np.full((len(s), 68, 2), np.nan, np.float32) if s.landmarks is None else s.landmarks
                for s in sets
            ]
        )
    return CropSet(
        np.concatenate([s.images for s in sets]),
        np.concatenate([s.labels for s in sets]),
        np.concatenate([s.crop_px for s in sets]),
        [p for s in sets for p in s.paths],
        track,
        weight,
        landmarks,
    )


def _load_rgb(path: Path, size: int) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode image: {path}")
    if img.shape[0] != size or img.shape[1] != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_crops(
    data_dir: str | Path,
    split: str,
    store_size: int,
    cache_dir: str | Path,
    dataset: str = "DFDC",
    max_items: int = 0,
    seed: int = 0,
) -> CropSet:
    """Crops of one manifest split (``train``/``val``), decoded once and cached as .npy under cache_dir.

    ``max_items`` > 0 takes a seeded, label-balanced subset (tests, tiny runs); the cache key includes it.
    """
    data_dir = Path(data_dir)
    rows = [
        r
        for r in read_manifest(data_dir / "MANIFEST.tsv")
        if r["kind"] == "crop" and r["split"] == split and r.get("dataset") == dataset
    ]
    if not rows:
        raise ValueError(f"no {dataset} crops with split {split!r} in {data_dir / 'MANIFEST.tsv'}")
    if max_items:
        rng = np.random.default_rng(seed)
        real = [r for r in rows if r["label"] == "real"]
        fake = [r for r in rows if r["label"] == "fake"]
        half = max_items // 2
        rows = [real[i] for i in rng.permutation(len(real))[:half]] + [
            fake[i] for i in rng.permutation(len(fake))[: max_items - half]
        ]
    cache = Path(cache_dir) / f"{dataset.lower()}_{split}_{store_size}_{max_items or 'all'}"
    paths = [r["path"] for r in rows]
    if (cache / "images.npy").is_file():
        meta = json.loads((cache / "meta.json").read_text())
        if meta["paths"] == paths:
            return CropSet(
                np.load(cache / "images.npy"),
                np.load(cache / "labels.npy"),
                np.load(cache / "crop_px.npy"),
                paths,
            )
    images = np.empty((len(rows), store_size, store_size, 3), np.uint8)
    for i, r in enumerate(rows):
        images[i] = _load_rgb(data_dir / r["path"], store_size)
    labels = np.array([r["label"] == "fake" for r in rows], np.int64)
    px = np.array([crop_px(r.get("source_repo", "")) for r in rows], np.int32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / "images.npy", images)
    np.save(cache / "labels.npy", labels)
    np.save(cache / "crop_px.npy", px)
    (cache / "meta.json").write_text(json.dumps({"paths": paths}))
    return CropSet(images, labels, px, paths)


# --- standard public layouts -> manifest rows (videos). Faces are then cut by the serving pipeline.
VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def _videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXT) if folder.is_dir() else []


def _row(
    root: Path, p: Path, label: str, split: str, dataset: str, method: str, group: str
) -> dict[str, str]:
    return {
        "path": str(p.relative_to(root)),
        "label": label,
        "kind": "video",
        "split": split,
        "dataset": dataset,
        "method": method,
        "group": group,
        "source_repo": "",
        "licence": "",
    }


def scan_faceforensics(root: str | Path, compression: str = "c23") -> list[dict[str, str]]:
    """FaceForensics++: original_sequences/youtube/<c>/videos/XXX.mp4 and
    manipulated_sequences/<Method>/<c>/videos/XXX_YYY.mp4 (target XXX, source YYY).

    The group is the target id, so a fake sits with the original it was made from.
    """
    root = Path(root)
    rows = [
        _row(root, p, "real", "", "FF++", "original", p.stem)
        for p in _videos(root / "original_sequences" / "youtube" / compression / "videos")
    ]
    manip = root / "manipulated_sequences"
    for method_dir in sorted(manip.iterdir()) if manip.is_dir() else []:
        for p in _videos(method_dir / compression / "videos"):
            rows.append(_row(root, p, "fake", "", "FF++", method_dir.name, p.stem.split("_")[0]))
    return rows


def scan_celebdf(root: str | Path) -> list[dict[str, str]]:
    """Celeb-DF (v1/v2): Celeb-real/idX_NNNN.mp4, Celeb-synthesis/idX_idY_NNNN.mp4, YouTube-real/NNNNN.mp4;
    List_of_testing_videos.txt lines are ``<1 real|0 fake> <folder>/<file>`` and mark the test split.
    """
    root = Path(root)
    test: set[str] = set()
    listing = root / "List_of_testing_videos.txt"
    if listing.is_file():
        test = {line.split()[1] for line in listing.read_text().splitlines() if len(line.split()) == 2}
    rows = []
    for folder, label, method in (
        ("Celeb-real", "real", "original"),
        ("YouTube-real", "real", "original"),
        ("Celeb-synthesis", "fake", "Celeb-DF"),
    ):
        for p in _videos(root / folder):
            rel = f"{folder}/{p.name}"
            group = p.stem.split("_")[0] if folder != "YouTube-real" else f"yt{p.stem}"
            rows.append(_row(root, p, label, "test" if rel in test else "train", "Celeb-DF", method, group))
    return rows


def scan_dfdc(root: str | Path) -> list[dict[str, str]]:
    """DFDC: folders holding metadata.json ``{"x.mp4": {"label": "FAKE", "original": "y.mp4", ...}}``.

    The group is the original video, so a fake and its source stay on one side of a split.
    """
    root = Path(root)
    rows = []
    for meta_path in sorted(root.rglob("metadata.json")):
        meta = json.loads(meta_path.read_text())
        for name, info in sorted(meta.items()):
            p = meta_path.parent / name
            if not p.is_file():
                continue
            fake = str(info.get("label", "")).upper() == "FAKE"
            group = Path(info.get("original") or name).stem if fake else p.stem
            rows.append(
                _row(
                    root,
                    p,
                    "fake" if fake else "real",
                    info.get("split", ""),
                    "DFDC",
                    "DFDC" if fake else "original",
                    group,
                )
            )
    return rows

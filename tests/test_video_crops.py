"""Training crops from videos in the public layouts, cut by the serving pipeline, and clips from tracks.

The videos are synthetic (tests/synth.py: the astronaut photo moving), written into tiny FaceForensics++
and Celeb-DF layouts, so this runs without ../shared/data in a few seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests import synth
from tests.test_model import synthetic_cropset, write_synthetic_dataset
from training.config import get_config
from training.data import CropSet, concat_crops, scan_celebdf
from training.samples import (
    KIND_REAL,
    KIND_SBI,
    BatchMix,
    Pools,
    SampleSpec,
    make_batch,
    make_sample,
    track_clip,
)
from training.train import train
from training.video_crops import load_video_crops, parse_video_specs

FRAMES = 8  # tiny preset: clip_len 4, so two sampling windows per video


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A FaceForensics++ root (1 original, 1 manipulated) and a Celeb-DF root (2 train, 1 test, 1 faceless).

    One face video and one faceless video are written and copied: the content does not matter here.
    """
    root = tmp_path_factory.mktemp("layouts")
    face = synth.write_face_video(root / "face.mp4", n_frames=30, width=320, height=180, face_px=80)
    none = synth.write_no_face_video(root / "none.mp4", n_frames=20, width=320, height=180)
    ff, cd = root / "ff", root / "celeb"
    for rel, src in (
        ("original_sequences/youtube/c23/videos/000.mp4", face.path),
        ("manipulated_sequences/Deepfakes/c23/videos/000_003.mp4", face.path),
    ):
        (ff / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, ff / rel)
    for rel, src in (
        ("Celeb-real/id0_0000.mp4", face.path),
        ("Celeb-real/id1_0000.mp4", none.path),
        ("Celeb-synthesis/id0_id1_0000.mp4", face.path),
        ("Celeb-synthesis/id0_id1_0001.mp4", face.path),
    ):
        (cd / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, cd / rel)
    (cd / "List_of_testing_videos.txt").write_text("0 Celeb-synthesis/id0_id1_0001.mp4\n")
    return {"ff": ff, "celeb": cd}


def tiny_cfg(tmp_path: Path, **kw):
    return get_config("tiny", cache_dir=str(tmp_path / "cache"), video_frames=FRAMES, threads=1, **kw)


def test_video_crops_from_public_layouts(layouts, tmp_path: Path, capsys, default_detector) -> None:
    cfg = tiny_cfg(tmp_path, videos=f"ff++:{layouts['ff']},celebdf:{layouts['celeb']}")
    crops = load_video_crops(cfg)
    out = capsys.readouterr()
    assert "video crops: 5/5 videos (5 cut, 0 cached, 1 skipped)" in out.out
    assert "id1_0000.mp4: skipped (no face found" in out.err
    # 4 videos with a face (2 FF++, Celeb-real id0, Celeb-synthesis 0000); the test-listed one never
    assert not any("id0_id1_0001" in p for p in crops.paths)
    assert crops.images.shape[1:] == (cfg.store_size, cfg.store_size, 3) and crops.images.dtype == np.uint8
    per_video = {p.split("#")[0] for p in crops.paths}
    assert len(per_video) == 4 and len(crops) == 4 * FRAMES
    labels = {Path(p.split("#")[0]).name: int(y) for p, y in zip(crops.paths, crops.labels, strict=True)}
    assert labels == {"000.mp4": 0, "000_003.mp4": 1, "id0_0000.mp4": 0, "id0_id1_0000.mp4": 1}
    # one track id per (video, window), its frames stored together in time order
    assert crops.track is not None and len(np.unique(crops.track)) == 4 * 2
    for tid in np.unique(crops.track):
        idx = np.flatnonzero(crops.track == tid)
        assert np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx)))
        assert len({crops.paths[i].split("#")[0] for i in idx}) == 1
    # crop side in the source frame: about serve_crop_scale x the 80 px synthetic face
    assert 60 < np.median(crops.crop_px) < 130
    cache_files = sorted((tmp_path / "cache" / "video_crops").glob("*.npz"))
    mtimes = [p.stat().st_mtime_ns for p in cache_files]
    assert len(cache_files) == 5
    again = load_video_crops(cfg)
    assert "(0 cut, 5 cached, 1 skipped)" in capsys.readouterr().out
    assert np.array_equal(again.images, crops.images) and np.array_equal(again.track, crops.track)
    assert [p.stat().st_mtime_ns for p in cache_files] == mtimes
    # a changed crop policy re-cuts
    recut = load_video_crops(tiny_cfg(tmp_path, videos=cfg.videos, serve_crop_scale=1.5))
    assert "(5 cut, 0 cached" in capsys.readouterr().out
    assert not np.array_equal(recut.images, crops.images)


def test_video_specs_respect_splits(layouts) -> None:
    rows = scan_celebdf(layouts["celeb"])
    assert {r["split"] for r in rows} == {"train", "test"}
    (celeb,) = parse_video_specs(f"celebdf:{layouts['celeb']}")
    assert all("id0_id1_0001" not in r["path"] for r in celeb.rows()) and len(celeb.rows()) == 3
    with pytest.raises(ValueError, match="test rows never train"):
        parse_video_specs(f"celebdf:{layouts['celeb']}:test")
    with pytest.raises(ValueError, match="needs its split"):
        parse_video_specs(f"manifest:{layouts['celeb']}/MANIFEST.tsv")
    with pytest.raises(ValueError, match="bad videos spec"):
        parse_video_specs(f"youtube:{layouts['celeb']}")


def test_manifest_spec_takes_only_its_split(tmp_path: Path) -> None:
    from training.data import write_manifest

    rows = [
        {"path": f"v{i}.mp4", "label": "real", "kind": "video", "split": split}
        for i, split in enumerate(("train", "val", "test"))
    ] + [{"path": "c.jpg", "label": "real", "kind": "crop", "split": "train"}]
    write_manifest(rows, tmp_path / "MANIFEST.tsv")
    (source,) = parse_video_specs(f"manifest:{tmp_path / 'MANIFEST.tsv'}:val")
    assert [Path(r["path"]) for r in source.rows()] == [tmp_path / "v1.mp4"]


def tracked_cropset(n_tracks: int = 3, frames: int = 6, size: int = 48) -> CropSet:
    """Uniform grey frames whose level encodes (track, frame), so a clip's frames can be read back."""
    level = np.array([40 + 30 * k + 4 * f for k in range(n_tracks) for f in range(frames)], np.uint8)
    images = np.broadcast_to(level[:, None, None, None], (len(level), size, size, 3)).copy()
    n = len(level)
    labels = np.array([k % 2 for k in range(n_tracks) for _ in range(frames)], np.int64)
    track = np.repeat(np.arange(n_tracks), frames)
    return CropSet(images, labels, np.full(n, 100, np.int32), [f"v{i}" for i in range(n)], track)


def test_clips_from_a_track_are_consecutive_frames() -> None:
    crops = tracked_cropset()
    rng = np.random.default_rng(0)
    for _ in range(20):
        seq = track_clip(crops, int(rng.integers(len(crops))), 4, rng)
        assert seq is not None and np.array_equal(np.diff(seq), [1, 1, 1])
        assert len(set(crops.track[seq])) == 1
    short = track_clip(crops, 0, 9, rng)  # longer than the track: its last frame repeats
    assert np.array_equal(short, [0, 1, 2, 3, 4, 5, 5, 5, 5])
    # a real clip from make_sample: whole-crop view, no jitter, so each frame shows its source level
    real_idx = np.flatnonzero(crops.labels == 0)
    spec = SampleSpec(out=32, mask_out=4, scale_range=(1.0, 1.0), shift=0.0, aug_policy="v1", strong=False)
    for seed in range(10):
        frames, _, _ = make_sample(
            np.random.default_rng(seed), crops, Pools(real_idx, real_idx), KIND_REAL, 4, spec
        )
        levels = frames.reshape(4, -1).mean(axis=1)
        assert np.allclose(np.diff(levels), 4, atol=0.6), levels
    # self-blended track clips hold one parameter set: identical frames give identical blends
    one = np.zeros(6, np.int64)
    same = CropSet(np.repeat(crops.images[:1], 6, axis=0), one, np.full(6, 100), ["s"] * 6, one)
    pools = Pools(np.arange(6), np.arange(6))
    frames, masks, has_mask = make_sample(np.random.default_rng(1), same, pools, KIND_SBI, 4, spec)
    assert has_mask and all(np.array_equal(frames[0], f) for f in frames)
    assert all(np.array_equal(masks[0], m) for m in masks) and masks.max() > 0.1
    flickering = dataclasses.replace(spec, flicker_prob=1.0)
    flicker, _, _ = make_sample(np.random.default_rng(1), same, pools, KIND_SBI, 4, flickering)
    assert not all(np.array_equal(flicker[0], f) for f in flicker)  # the flicker variant changes per frame


# make_batch of synthetic_cropset() (tests/test_model.py) for phase 1 and phase 2 (with flicker), hashed
# with the code before video tracks existed; DFDC-only training must draw exactly these batches.
# (A numpy/OpenCV upgrade may change the pixels; then recompute it from the commit before tracks.)
GOLDEN_BATCHES = "eb65dd60844f4232273043ec0eed2e42e7f93e06853857313af190007f22f7d7"


def batches_digest(crops: CropSet) -> str:
    h = hashlib.sha256()
    mix = BatchMix(frac_real=0.5, frac_fake=0.25)
    for phase, step, t, flicker in ((1, 0, 1, 0.0), (1, 5, 1, 0.0), (2, 3, 4, 0.5), (2, 9, 3, 0.5)):
        spec = SampleSpec(64, 8, (0.8, 1.04), 0.06, aug_policy="v1", flicker_prob=flicker)
        b = make_batch(crops, 1337, phase, step, 8, t, spec, mix)
        for k in ("clips", "mask", "has_mask", "kind", "label"):
            h.update(b[k].numpy().tobytes())
    return h.hexdigest()


def test_still_crops_batches_are_unchanged() -> None:
    crops = synthetic_cropset()
    assert batches_digest(crops) == GOLDEN_BATCHES
    # stills inside a set with tracks (track -1) draw the same batches too
    crops.track = np.full(len(crops), -1, np.int64)
    assert batches_digest(crops) == GOLDEN_BATCHES


def test_concat_renumbers_tracks() -> None:
    stills, tracked = synthetic_cropset(4, 48), tracked_cropset(2, 3, 48)
    both = concat_crops(stills, tracked, tracked)
    assert both.images.shape == (4 + 12, 48, 48, 3)
    assert both.track.tolist() == [-1] * 4 + [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert concat_crops(stills, stills).track is None


def test_tiny_training_with_videos(layouts, tmp_path: Path, capsys, default_detector) -> None:
    """Both phases run on DFDC crops + FF++ video crops (2 videos x 8 frames in 4 track stretches)."""
    write_synthetic_dataset(tmp_path / "data")
    data, run = str(tmp_path / "data"), str(tmp_path / "run")
    steps = dict(max_train_items=0, max_val_items=0, phase1_steps=1, phase2_steps=1, eval_every=1)
    cfg = tiny_cfg(tmp_path, data_dir=data, out_dir=run, videos=f"ff++:{layouts['ff']}", **steps)
    final = train(cfg, fresh=True)
    assert final.is_file()
    assert f"data: {2 * FRAMES} video crops in 4 track stretches" in capsys.readouterr().out

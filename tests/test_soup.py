"""Weight soups (training/soup.py): the mean of runs of one network, loadable and exportable as any run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import get_config
from training.cv import soup_ingredient
from training.model import build_model
from training.soup import average_checkpoints, main, write_soup
from training.train import predict
from training.weights import load_trained


def save_run(path: Path, seed: int, **overrides) -> torch.nn.Module:
    """A random tiny model saved as a training checkpoint."""
    cfg = get_config("tiny", **overrides)
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # BatchNorm statistics that differ per run, so their mean is checked too
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": dataclasses.asdict(cfg), "elapsed_s": 10.0}, path)
    return model.eval()


def test_soup_is_the_mean_of_every_tensor_and_loads(tmp_path: Path) -> None:
    a = save_run(tmp_path / "a.pt", 0, style_mix=0.5)
    b = save_run(tmp_path / "b.pt", 1)
    c = save_run(tmp_path / "c.pt", 2)
    paths = [str(tmp_path / p) for p in ("a.pt", "b.pt", "c.pt")]
    main([*paths, "--out", str(tmp_path / "soup" / "final.pt")])
    soup, cfg = load_trained(tmp_path / "soup" / "final.pt")
    sa, sb, sc, ss = (m.state_dict() for m in (a, b, c, soup))
    assert ss.keys() == sa.keys()
    floats = [k for k in sa if sa[k].is_floating_point()]
    assert any("running_mean" in k for k in floats)
    for key in floats:
        torch.testing.assert_close(ss[key], (sa[key] + sb[key] + sc[key]) / 3, rtol=1e-5, atol=1e-6)
    assert not torch.equal(ss[floats[0]], sa[floats[0]])  # really averaged, not the first run
    assert cfg.style_mix == 0.0  # a training-only switch of the first ingredient
    assert cfg.extra["soup"] == paths
    clips = np.random.default_rng(0).integers(0, 256, (3, 2, 64, 64, 3), dtype=np.uint8)
    assert np.isfinite(predict(soup, clips, 2)).all()


def test_soup_of_one_is_that_run(tmp_path: Path) -> None:
    a = save_run(tmp_path / "a.pt", 0)
    soup, _ = load_trained(write_soup([tmp_path / "a.pt"], tmp_path / "s.pt"))
    clips = np.random.default_rng(1).integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(predict(soup, clips, 2), predict(a, clips, 2), rtol=1e-5, atol=1e-5)


def test_soup_refuses_different_networks_and_missing_files(tmp_path: Path) -> None:
    save_run(tmp_path / "a.pt", 0)
    save_run(tmp_path / "wide.pt", 1, embed_dim=48)
    save_run(tmp_path / "crop.pt", 2, serve_crop_scale=1.3)
    with pytest.raises(ValueError, match="embed_dim"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "wide.pt"])
    with pytest.raises(ValueError, match="serve_crop_scale"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "crop.pt"])
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "missing.pt"])
    with pytest.raises(ValueError, match="at least one"):
        average_checkpoints([])


def test_cv_soup_ingredients_are_fold_models_or_runs_without_videos(tmp_path: Path) -> None:
    save_run(tmp_path / "dfdc_only.pt", 0)
    save_run(tmp_path / "with_videos.pt", 1, videos="manifest:MANIFEST.tsv:dev")
    assert soup_ingredient(str(tmp_path / "dfdc_only.pt"), 1, 3) == tmp_path / "dfdc_only.pt"
    with pytest.raises(SystemExit, match="trained on videos"):  # its training saw held-out videos
        soup_ingredient(str(tmp_path / "with_videos.pt"), 1, 3)
    with pytest.raises(SystemExit, match="fold 1 is not trained"):
        soup_ingredient("no-such-run-of-the-tests", 1, 3)

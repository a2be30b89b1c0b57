"""The detector model, self-blending, augmentation, batches and the training loop, on tiny configs.

Everything here uses random weights and synthetic images, so it runs without ../shared/data and fast.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.augment import apply_aug, sample_aug
from training.calibrate import best_threshold, fit_temperature, nll
from training.config import get_config
from training.data import (
    CropSet,
    crop_px,
    load_crops,
    read_manifest,
    scan_celebdf,
    scan_dfdc,
    scan_faceforensics,
)
from training.metrics import balanced_accuracy
from training.model import RESIDUAL_CLIP, DeepfakeDetector, noise_residual
from training.samples import KIND_FAKE, KIND_REAL, KIND_SBI, BatchMix, BatchStream, SampleSpec, make_batch
from training.sbi import face_mask, sample_params, self_blend
from training.train import WeightAverage, lr_at, refresh_batchnorm, sharpness_aware_grads, train


def tiny_model(**kw) -> DeepfakeDetector:
    torch.manual_seed(0)
    args = dict(image_size=64, clip_len=4, embed_dim=32, n_layers=1, n_heads=2, dropout=0.0, pretrained=False)
    args.update(kw)
    return DeepfakeDetector(**args).eval()


@pytest.mark.parametrize("b,t", [(1, 1), (2, 4), (3, 2)])
def test_output_shapes(b: int, t: int) -> None:
    model = tiny_model()
    x = torch.randint(0, 256, (b, t, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        out = model(x)
    assert out["clip_logit"].shape == (b,)
    assert out["frame_logits"].shape == (b, t)
    assert out["blend_logits"].shape == (b, t, 8, 8)


def test_padding_mask_equals_shorter_clip() -> None:
    """A clip padded to T with valid=False frames scores exactly like the same clip cut to its length."""
    model = tiny_model()
    x = torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8)
    valid = torch.tensor([[True, True, False, False], [True, True, True, True]])
    with torch.no_grad():
        padded = model(x, valid)
        short = model(x[:1, :2])
        other = model(x[:1, :4])
    assert torch.allclose(padded["clip_logit"][0], short["clip_logit"][0], atol=1e-5)
    assert torch.allclose(padded["frame_logits"][0, :2], short["frame_logits"][0], atol=1e-5)
    # and the padded frames do matter when they are not masked (the mask is what makes them equal)
    assert not torch.allclose(other["clip_logit"][0], short["clip_logit"][0], atol=1e-5)


def test_temporal_order_matters() -> None:
    """The transformer sees positions: the same frame embeddings in reverse order give another clip logit."""
    model = tiny_model()
    emb = torch.randn(1, 4, 1280)
    with torch.no_grad():
        a, _ = model.temporal(emb)
        b, _ = model.temporal(emb.flip(1))
    assert not torch.allclose(a, b, atol=1e-6)


def test_pretrained_backbone_loads_from_package() -> None:
    """ImageNet weights come from the installed package (nothing downloads); they differ from random init."""
    from training.model import build_backbone

    torch.manual_seed(0)
    pre = build_backbone(pretrained=True)
    rnd = build_backbone(pretrained=False)
    assert not torch.equal(pre._conv_stem.weight, rnd._conv_stem.weight)
    assert pre._bn0.running_var.abs().sum() > 0


def test_backbones_share_the_contract_and_their_stage_boundaries() -> None:
    """Lite0 keeps the block indices it always had; Lite1 (21 blocks) gets its own, and the same outputs.

    The localisation head must read the stride-8 map of either network (a wrong block index gives a 10x10
    or 40x40 map, or a channel count the head was not built for), and Lite1's ImageNet weights load from
    their package.
    """
    from training.model import build_backbone, stage_ends

    lite0 = tiny_model()
    assert stage_ends(lite0.backbone) == [0, 2, 4, 7, 10, 14, 15]
    assert (lite0.mid_block, lite0.style_mix_blocks) == (4, (2, 4, 7))
    lite1 = tiny_model(backbone="efficientnet-lite1", style_mix=1.0)
    assert (lite1.mid_block, lite1.style_mix_blocks) == (6, (3, 6, 10))
    clips = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)
    lite1.train()
    out = lite1(clips)  # style mixing on every batch: exercises the Lite1 block indices in training too
    assert out["clip_logit"].shape == (2,)
    assert out["frame_logits"].shape == (2, 3)
    assert out["blend_logits"].shape == (2, 3, 8, 8)
    torch.manual_seed(0)
    pre = build_backbone(pretrained=True, name="efficientnet-lite1")
    rnd = build_backbone(pretrained=False, name="efficientnet-lite1")
    assert len(pre._blocks) == 21
    assert not torch.equal(pre._conv_stem.weight, rnd._conv_stem.weight)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone(pretrained=False, name="efficientnet-b7")


def test_freeze_prefix_freezes_stem_and_blocks() -> None:
    model = tiny_model()
    model.freeze_prefix(3)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("backbone._conv_stem") for n in frozen)
    assert any(n.startswith("backbone._blocks.2.") for n in frozen)
    assert not any(n.startswith("backbone._blocks.3.") for n in frozen)
    model.train()
    assert not model.backbone._bn0.training and model.backbone._blocks[3].training
    with pytest.raises(ValueError):
        model.freeze_prefix(9)


def test_noise_residual_ignores_smooth_shading_and_sees_noise() -> None:
    """The high-pass view is zero on a linear ramp (inside the mirrored border) and strong on fine noise."""
    ramp = torch.linspace(-2, 2, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)
    assert noise_residual(ramp)[..., 2:-2, 2:-2].abs().max() < 1e-4
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.2
    out = noise_residual(ramp + noise)
    assert out.shape == (1, 3, 32, 32)
    assert (out.std(dim=(0, 2, 3)) > 0.5).all()  # every kernel responds
    assert out.abs().max() <= RESIDUAL_CLIP  # truncated


def test_residual_input_starts_as_the_rgb_model_and_learns() -> None:
    """With the residual branch at its zero start the model is the RGB model; its stem then gets a gradient
    and, once moved, changes the scores."""
    rgb = tiny_model()
    both = tiny_model(residual_input=True)
    both.load_state_dict(rgb.state_dict(), strict=False)
    x = torch.randint(0, 256, (2, 2, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(rgb(x)["clip_logit"], both(x)["clip_logit"])
    both(x)["clip_logit"].sum().backward()
    assert both.residual_stem is not None and both.residual_stem.weight.grad is not None
    assert both.residual_stem.weight.grad.abs().sum() > 0
    with torch.no_grad():
        both.residual_stem.weight.normal_(0, 0.1)
        assert not torch.allclose(rgb(x)["clip_logit"], both(x)["clip_logit"])
    both.freeze_prefix(1)
    assert not both.residual_stem.weight.requires_grad


def test_mix_styles_swaps_channel_statistics_and_keeps_the_pattern() -> None:
    """Each item keeps its spatial pattern (normalised map) and takes a convex mix of its own and one other
    item's per-channel mean and spread; identical items are left as they are."""
    from training.model import mix_styles

    torch.manual_seed(0)
    x = torch.randn(6, 5, 8, 8) * torch.arange(1, 7).view(6, 1, 1, 1) + torch.arange(6).view(6, 1, 1, 1)
    y = mix_styles(x, alpha=0.1)
    assert y.shape == x.shape

    def normed(v: torch.Tensor) -> torch.Tensor:
        return (v - v.mean((2, 3), keepdim=True)) / v.std((2, 3), keepdim=True)

    assert torch.allclose(normed(x), normed(y), atol=1e-3)  # the pattern survives
    mu_x, mu_y = x.mean((2, 3)), y.mean((2, 3))
    lo, hi = mu_x.min(0).values, mu_x.max(0).values
    assert bool(((mu_y >= lo - 1e-4) & (mu_y <= hi + 1e-4)).all())  # mixes of the batch's statistics
    assert not torch.allclose(mu_x, mu_y, atol=1e-3)  # and some item took on another's
    same = x[:1].expand(4, -1, -1, -1).contiguous()
    assert torch.allclose(mix_styles(same), same, atol=1e-4)
    assert torch.equal(mix_styles(x[:1]), x[:1])  # one item: nothing to mix with


def test_style_mixing_is_training_only() -> None:
    """style_mix changes training forward passes, never evaluation: export and serving see the plain
    network."""
    plain, mixed = tiny_model(), tiny_model(style_mix=1.0)
    mixed.load_state_dict(plain.state_dict())
    x = torch.randint(0, 256, (4, 1, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(plain(x)["clip_logit"], mixed(x)["clip_logit"])
        mixed.train()
        torch.manual_seed(1)
        a = mixed(x)["clip_logit"]
        plain.train()
        torch.manual_seed(1)
        b = plain(x)["clip_logit"]
    assert not torch.allclose(a, b, atol=1e-5)


def test_bad_image_size_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        DeepfakeDetector(image_size=100, pretrained=False)


def face_like(size: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 200, (size, size, 3), dtype=np.uint8)
    cv2.ellipse(img, (size // 2, size // 2), (size // 3, size // 2 - 4), 0, 0, 360, (200, 160, 140), -1)
    return img


def test_self_blend_changes_only_inside_the_mask() -> None:
    img = face_like()
    p = sample_params(np.random.default_rng(3))
    p.ratio = 1.0
    out, mask = self_blend(img, p)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert mask.min() >= 0 and mask.max() <= 1.0 + 1e-6 and mask.max() > 0.5
    outside = mask < 1e-4
    assert outside.any() and (~outside).any()
    assert np.abs(out[outside].astype(int) - img[outside]).max() <= 1
    assert np.abs(out[mask > 0.9].astype(int) - img[mask > 0.9]).mean() > 1.0
    with pytest.raises(ValueError):
        self_blend(img.astype(np.float32), p)


def test_face_mask_is_deterministic_per_params() -> None:
    p = sample_params(np.random.default_rng(5))
    assert np.array_equal(face_mask(64, p), face_mask(64, p))


def test_augmentation_moves_mask_with_image() -> None:
    """A flip flips the blend mask too: the localisation target stays on the blended pixels."""
    img = np.zeros((96, 96, 3), np.uint8)
    img[:, :30] = 255
    mask = np.zeros((96, 96), np.float32)
    mask[:, :30] = 1.0
    p = sample_aug(np.random.default_rng(0), (1.0, 1.0), 0.0, strong=False)
    p.flip = True
    out, m = apply_aug(img, p, 64, np.random.default_rng(0), mask=mask, mask_out=8)
    assert out[:, -5:].mean() > 200 and out[:, :5].mean() < 30
    assert m[:, -1].mean() > 0.9 and m[:, 0].mean() < 0.1


def test_wild_policy_adds_colour_cast_hue_and_sharpening_and_v1_draws_none() -> None:
    """``wild`` draws the global colour and sharpness changes; ``v1`` never does, so the rng sequence
    that trained model 1.0.0 is unchanged by the extra policy."""
    wild = [sample_aug(np.random.default_rng(i), (0.8, 1.0), 0.05, policy="wild") for i in range(300)]
    assert sum(p.cast != (1.0, 1.0, 1.0) for p in wild) > 60
    assert sum(p.hue != 0.0 for p in wild) > 30 and sum(p.sharpen > 0 for p in wild) > 20
    assert not any(p.sharpen and p.blur for p in wild)
    v1 = [sample_aug(np.random.default_rng(i), (0.8, 1.0), 0.05) for i in range(300)]
    assert all(p.cast == (1.0, 1.0, 1.0) and p.hue == 0.0 and p.sharpen == 0.0 for p in v1)
    img = face_like(96, 3)
    cast = sample_aug(np.random.default_rng(0), (1.0, 1.0), 0.0, strong=False)
    cast.cast = (1.15, 1.0, 0.85)
    out, _ = apply_aug(img, cast, 64, np.random.default_rng(0))
    plain, _ = apply_aug(
        img, sample_aug(np.random.default_rng(0), (1.0, 1.0), 0.0, strong=False), 64, np.random.default_rng(0)
    )
    assert out[..., 0].mean() > plain[..., 0].mean() + 3 and out[..., 2].mean() < plain[..., 2].mean() - 3


def synthetic_cropset(n: int = 12, size: int = 96) -> CropSet:
    imgs = np.stack([face_like(size, i) for i in range(n)])
    labels = np.array([i % 2 for i in range(n)], np.int64)
    return CropSet(imgs, labels, np.full(n, 150, np.int32), [f"x{i}.jpg" for i in range(n)])


def test_batches_are_balanced_seeded_and_masked() -> None:
    crops = synthetic_cropset()
    kw = dict(
        n=8,
        t=3,
        spec=SampleSpec(out=64, mask_out=8, scale_range=(0.8, 1.0), shift=0.05, aug_policy="v1"),
        mix=BatchMix(frac_real=0.5, frac_fake=0.25),
    )
    b1 = make_batch(crops, 7, 1, 11, **kw)
    b2 = make_batch(crops, 7, 1, 11, **kw)
    b3 = make_batch(crops, 7, 1, 12, **kw)
    assert torch.equal(b1["clips"], b2["clips"]) and not torch.equal(b1["clips"], b3["clips"])
    assert b1["clips"].shape == (8, 3, 64, 64, 3) and b1["clips"].dtype == torch.uint8
    kinds = b1["kind"].numpy()
    assert (
        (kinds == KIND_REAL).sum() == 4 and (kinds == KIND_FAKE).sum() == 2 and (kinds == KIND_SBI).sum() == 2
    )
    assert torch.equal(b1["label"], torch.from_numpy((kinds != KIND_REAL).astype(np.float32)))
    assert not b1["has_mask"][kinds == KIND_FAKE].any() and b1["has_mask"][kinds != KIND_FAKE].all()
    assert float(b1["mask"][kinds == KIND_REAL].max()) == 0.0
    assert float(b1["mask"][kinds == KIND_SBI].amax(dim=(1, 2, 3)).min()) > 0.1


def test_lr_schedule_warms_up_and_decays() -> None:
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.05)
    assert lr_at(50, 100, 1.0, 10) < lr_at(20, 100, 1.0, 10)


def test_temperature_fit_recovers_known_temperature() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, 20000)
    labels = (rng.random(z.size) < 1 / (1 + np.exp(-z / 2.5))).astype(float)
    t = fit_temperature(z, labels)
    assert t == pytest.approx(2.5, rel=0.08)
    assert nll(z, labels, t) < nll(z, labels, 1.0)


def test_threshold_separates_separable_scores() -> None:
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    thr = best_threshold(probs, labels)
    assert 0.3 < thr <= 0.6


def test_weighted_threshold_lets_every_source_count_alike() -> None:
    # Source A: 8 reals at 0.5 and 8 fakes at 0.6; B: 1 real at 0.8, 1 fake at 0.9; C: 1 real at 0.7.
    # Videos alike, A decides (threshold 0.6); sources alike, B's and C's reals weigh as A's eight each.
    probs = np.array([0.5] * 8 + [0.6] * 8 + [0.8, 0.9, 0.7])
    labels = np.array([0] * 8 + [1] * 8 + [0, 1, 0])
    weights = np.array([1 / 8] * 16 + [1.0, 1.0, 1.0])
    assert best_threshold(probs, labels) == 0.6
    assert best_threshold(probs, labels, weights) == 0.9
    assert balanced_accuracy(labels, probs, 0.9, weights) == pytest.approx(0.75)
    assert balanced_accuracy(labels, probs, 0.9) == pytest.approx((1 / 9 + 1) / 2)


def test_threshold_is_the_highest_of_equally_good_ones() -> None:
    probs = np.array([0.1, 0.4, 0.5, 0.8])
    labels = np.array([0, 1, 0, 1])  # 0.4 and 0.8 both give balanced accuracy 0.75
    assert best_threshold(probs, labels) == 0.8
    with pytest.raises(ValueError, match="both real and fake"):
        best_threshold(probs, np.zeros(4, int))


def test_threshold_refuses_bad_weights() -> None:
    probs = np.array([0.1, 0.4, 0.5, 0.8])
    labels = np.array([0, 1, 0, 1])
    for bad in ([1.0, 1.0, 1.0], [1.0, -1.0, 1.0, 1.0], [1.0, np.nan, 1.0, 1.0]):
        with pytest.raises(ValueError, match="one finite, non-negative number per item"):
            best_threshold(probs, labels, np.array(bad))
    with pytest.raises(ValueError, match="non-zero weight"):
        best_threshold(probs, labels, np.array([1.0, 0.0, 1.0, 0.0]))


def write_synthetic_dataset(root: Path, n_train: int = 16, n_val: int = 8) -> None:
    rows = []
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            label = "fake" if i % 2 else "real"
            rel = f"crops/dfdc/{split}/{label}/{split}{i}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), face_like(112, i + (100 if split == "val" else 0)))
            rows.append(
                [
                    rel,
                    label,
                    "crop",
                    split,
                    "DFDC",
                    "DFDC" if i % 2 else "original",
                    f"g{i // 2}",
                    f"synthetic (crop size before resize {100 + i} px)",
                    "test",
                ]
            )
    with (root / "MANIFEST.tsv").open("w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["path", "label", "kind", "split", "dataset", "method", "group", "source_repo", "licence"])
        w.writerows(rows)


def test_manifest_and_crop_cache(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path)
    rows = read_manifest(tmp_path / "MANIFEST.tsv")
    assert len(rows) == 24 and crop_px(rows[3]["source_repo"]) == 103
    cs = load_crops(tmp_path, "train", 72, tmp_path / "cache")
    assert cs.images.shape == (16, 72, 72, 3) and cs.labels.sum() == 8
    again = load_crops(tmp_path, "train", 72, tmp_path / "cache")  # from the cache
    assert np.array_equal(cs.images, again.images)
    with pytest.raises(ValueError, match="no DFDC crops"):
        load_crops(tmp_path, "test", 72, tmp_path / "cache")
    bad = tmp_path / "bad.tsv"
    bad.write_text("path\tlabel\tkind\tsplit\nx.jpg\tmaybe\tcrop\ttrain\n")
    with pytest.raises(ValueError, match="label must be real or fake"):
        read_manifest(bad)


def test_public_layout_scanners(tmp_path: Path) -> None:
    ff = tmp_path / "ff"
    for rel in (
        "original_sequences/youtube/c23/videos/000.mp4",
        "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4",
    ):
        (ff / rel).parent.mkdir(parents=True, exist_ok=True)
        (ff / rel).write_bytes(b"x")
    rows = scan_faceforensics(ff)
    assert {(r["label"], r["method"], r["group"]) for r in rows} == {
        ("real", "original", "000"),
        ("fake", "Deepfakes", "000"),
    }
    cd = tmp_path / "celeb"
    for rel in ("Celeb-real/id0_0000.mp4", "Celeb-synthesis/id0_id1_0000.mp4", "YouTube-real/00000.mp4"):
        (cd / rel).parent.mkdir(parents=True, exist_ok=True)
        (cd / rel).write_bytes(b"x")
    (cd / "List_of_testing_videos.txt").write_text("0 Celeb-synthesis/id0_id1_0000.mp4\n")
    rows = {r["path"]: r for r in scan_celebdf(cd)}
    assert rows["Celeb-synthesis/id0_id1_0000.mp4"]["split"] == "test"
    assert rows["Celeb-real/id0_0000.mp4"]["split"] == "train"
    dd = tmp_path / "dfdc" / "part0"
    dd.mkdir(parents=True)
    for name in ("a.mp4", "b.mp4"):
        (dd / name).write_bytes(b"x")
    (dd / "metadata.json").write_text(
        json.dumps({"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE", "original": "a.mp4"}})
    )
    rows = scan_dfdc(tmp_path / "dfdc")
    assert [(r["label"], r["group"]) for r in rows] == [("real", "a"), ("fake", "a")]


def test_tiny_training_runs_and_resumes(tmp_path: Path) -> None:
    """Both phases run on synthetic crops; a resumed run continues from the checkpoint, not from zero."""
    write_synthetic_dataset(tmp_path)
    common = dict(
        data_dir=str(tmp_path),
        cache_dir=str(tmp_path / "cache"),
        out_dir=str(tmp_path / "run"),
        max_train_items=0,
        max_val_items=0,
        phase1_steps=2,
        phase2_steps=0,
        threads=1,
    )
    train(get_config("tiny", **common), fresh=True)
    state = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert (state["phase"], state["step"]) == (1, 2)
    # as if phase 1 had been stopped at step 2 of 3: the rerun continues at step 3, then runs phase 2
    final = train(get_config("tiny", **{**common, "phase1_steps": 3, "phase2_steps": 1}))
    log = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["step"]) for r in log if r["phase"] == "1"] == [1, 2, 3]
    assert [int(r["step"]) for r in log if r["phase"] == "2"] == [1]
    assert final.is_file() and (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert log[-1]["val_auc"] != "" and log[-1]["val_clip_auc"] != ""


def test_sharpness_aware_grads_are_the_gradient_at_the_perturbed_weights() -> None:
    """SAM's gradient is the plain gradient taken at w + rho * g / |g|; afterwards the weights are w again
    and the BatchNorm running statistics have seen the batch once, not twice."""
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)

    def batch_loss(model: torch.nn.Module = net) -> torch.Tensor:
        return torch.nn.functional.mse_loss(model(x), y)

    twin = copy.deepcopy(net)  # the same network, to take the gradient at the moved weights by hand
    params = list(net.parameters())
    before = [p.detach().clone() for p in params]
    batch_loss().backward()
    plain = [p.grad.detach().clone() for p in params]
    stats_once = net[1].running_mean.clone()
    rho = 0.5
    sharpness_aware_grads(net, params, rho, lambda: (batch_loss(), 0.0, 0.0))

    for p, b in zip(params, before, strict=True):
        assert torch.equal(p.detach(), b)
    assert torch.equal(net[1].running_mean, stats_once)
    norm = torch.norm(torch.stack([g.norm() for g in plain]))
    with torch.no_grad():
        for p, g in zip(twin.parameters(), plain, strict=True):
            p.add_(g * rho / norm)
    batch_loss(twin).backward()
    for p, q in zip(params, twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
        assert p.grad.abs().sum() > 0
    assert any(not torch.allclose(p.grad, g) for p, g in zip(params, plain, strict=True))


def test_tiny_training_with_sharpness_aware_steps(tmp_path: Path) -> None:
    """``sam_rho`` reaches the loop: the same seed and batches give other weights than plain steps."""
    write_synthetic_dataset(tmp_path)
    finals = {}
    for rho in (0.0, 0.05):
        cfg = get_config(
            "tiny",
            data_dir=str(tmp_path),
            cache_dir=str(tmp_path / "cache"),
            out_dir=str(tmp_path / f"run{rho}"),
            phase1_steps=2,
            phase2_steps=0,
            threads=1,
            sam_rho=rho,
        )
        finals[rho] = torch.load(train(cfg, fresh=True), weights_only=False)["model"]
    log = list(csv.DictReader((tmp_path / "run0.05" / "log.csv").open()))
    assert [int(r["step"]) for r in log if r["phase"] == "1"] == [1, 2]
    assert all(np.isfinite(float(r["loss"])) for r in log if r["loss"])
    assert json.loads((tmp_path / "run0.05" / "config.json").read_text())["sam_rho"] == 0.05
    assert not torch.equal(finals[0.0]["clip_head.weight"], finals[0.05]["clip_head.weight"])


def test_weight_average_is_the_mean_of_the_due_steps_and_resumes() -> None:
    """Steps 2, 4, 6 are averaged (start 2, every 2); a second average built from the first's state (a
    resumed run) continues the same mean; integer buffers are left alone."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    avg = WeightAverage(start=2, every=2)
    assert [s for s in range(1, 8) if avg.due(s)] == [2, 4, 6]
    for value in (1.0, 3.0):
        with torch.no_grad():
            net[0].weight.fill_(value)
        avg.add(net)
    resumed = WeightAverage(2, 2, state=copy.deepcopy(avg.state()))
    with torch.no_grad():
        net[0].weight.fill_(8.0)
        net[1].num_batches_tracked.fill_(7)
    resumed.add(net)
    assert resumed.n == 3 and "1.num_batches_tracked" not in resumed.mean
    resumed.apply(net)
    assert torch.allclose(net[0].weight, torch.full((1, 2), 4.0)) and int(net[1].num_batches_tracked) == 7
    with pytest.raises(RuntimeError, match="no weights were averaged"):
        WeightAverage(5, 1).apply(net)
    with pytest.raises(ValueError, match="average_every"):
        WeightAverage(0, 0)


def test_refresh_batchnorm_measures_the_statistics_of_the_batches() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.BatchNorm1d(1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.fill_(0.0)
    xs = [torch.full((4, 1), 2.0), torch.full((4, 1), 4.0)]
    batches = iter([{"clips": x} for x in xs])
    refresh_batchnorm(net, batches, 2, "cpu")
    assert torch.allclose(net[1].running_mean, torch.tensor([3.0])) and net[1].momentum == 0.1


def test_tiny_training_with_weight_averaging(tmp_path: Path) -> None:
    """``average_from`` reaches the loop: phase 2 starts from the mean of the averaged steps (its weights
    are the checkpointed mean, not the last step's), with BatchNorm statistics measured anew, and the mean
    is validated in its own log row."""
    write_synthetic_dataset(tmp_path)
    paths = {
        "data_dir": str(tmp_path),
        "cache_dir": str(tmp_path / "cache"),
        "out_dir": str(tmp_path / "run"),
    }
    averaging = {"average_from": 0.5, "average_every": 1, "average_bn_batches": 2}
    cfg = get_config("tiny", **paths, **averaging, phase1_steps=4, phase2_steps=0, threads=1)
    final = torch.load(train(cfg, fresh=True), weights_only=False)["model"]
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    mean, last = ckpt["average"]["mean"], ckpt["model"]
    assert ckpt["average"]["n"] == 3  # steps 2, 3 and 4
    weight = "clip_head.weight"
    assert torch.equal(final[weight], mean[weight]) and not torch.equal(final[weight], last[weight])
    bn = [k for k in final if k.endswith("running_var")][-1]
    assert not torch.allclose(final[bn], mean[bn])
    frozen = "backbone._bn0.running_var"  # the tiny preset freezes the stem: its statistics stay
    assert torch.equal(final[frozen], mean[frozen])
    log = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [r["phase"] for r in log][-2:] == ["1", "1avg"] and log[-1]["val_auc"] != ""
    with pytest.raises(ValueError, match="average_from"):
        train(get_config("tiny", **{**dataclasses.asdict(cfg), "average_from": 1.5}), fresh=True)


def test_unknown_config_fields_fail() -> None:
    with pytest.raises(ValueError, match="unknown config fields"):
        get_config("tiny", not_a_field=1)
    with pytest.raises(ValueError, match="unknown config"):
        get_config("huge")


def test_batch_stream_gives_the_same_sequence_with_several_workers() -> None:
    """Two DataLoader workers split the steps between them: the loader yields steps 5, 6, 7, 8 in order,
    each once, exactly as one process makes them (the gpu preset trains with 6 workers)."""
    crops = synthetic_cropset()
    spec = SampleSpec(out=32, mask_out=4, scale_range=(0.8, 1.0), shift=0.05, aug_policy="v1")
    mix = BatchMix(frac_real=0.5, frac_fake=0.25)
    stream = BatchStream(crops, 7, 1, 5, 4, lambda step: 1 + step % 2, spec, mix)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    got = [b for b, _ in zip(loader, range(4), strict=False)]
    for step, batch in zip(range(5, 9), got, strict=True):
        assert torch.equal(batch["clips"], make_batch(crops, 7, 1, step, 4, 1 + step % 2, spec, mix)["clips"])

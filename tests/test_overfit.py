"""End-to-end overfitting: the tiny PAVE-Net learns one fixed synthetic clip of three people.

Model, criterion (clip-level matching) and post-processor together must drive the loss down by
at least 90 % and reproduce every person's keypoints in original-image pixels with OKS >= 0.9.
The tiny config is shrunk further (64x64 frames, 12 queries, one encoder layer, backbone stages
frozen) so that the 200 steps fit a CI budget on two CPU cores (about 35 s on one thread).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment

from pavenet.config import load_config
from pavenet.data.clips import RawClip, make_item
from pavenet.data.collate import collate
from pavenet.data.joints import posetrack18_to_model
from pavenet.data.synthetic import generate_video
from pavenet.data.transforms import ClipParams
from pavenet.model.criterion import build_criterion
from pavenet.model import build_model
from pavenet.model.oks import oks, oks_sigmas
from pavenet.model.postprocess import PostProcessor

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pavenet_tiny.yaml"
SIZE, STEPS, LR = 64, 200, 1e-3
OVERRIDES = [
    "model.hidden_dim=64", "model.enc_layers=1", "model.ffn_dim=128", "model.num_queries=12",
    "model.num_kept=4", "model.refine_hidden=[128]", "model.backbone.frozen_stages=3",
    "loss.keypoint_loss=l1", "loss.weight_keypoint=5.0", "loss.weight_oks=2.0",
]


def synthetic_clip(seed: int) -> RawClip:
    """Three frames of a synthetic video as a raw clip (joints in original pixels)."""
    frames, ann = generate_video(seed=seed, num_frames=3, size=(SIZE, SIZE), max_persons=3)
    image_ids = [im["id"] for im in ann["images"]]
    tracks = sorted({a["track_id"] for a in ann["annotations"]})
    kp = np.zeros((len(tracks), 3, 15, 2))
    vis = np.zeros((len(tracks), 3, 15), bool)
    for a in ann["annotations"]:
        joints = posetrack18_to_model(np.asarray(a["keypoints"], np.float64).reshape(17, 3))
        g, t = tracks.index(a["track_id"]), image_ids.index(a["image_id"])
        kp[g, t], vis[g, t] = joints[:, :2], joints[:, 2] > 0
    return RawClip([Image.fromarray(f) for f in frames], kp, vis, vis.any(-1), np.ones(3, bool),
                   np.array(tracks), 0, 1, np.array(image_ids), np.arange(3))


def train(model: torch.nn.Module, criterion: torch.nn.Module, batch: dict) -> tuple[float, float]:
    """AdamW for STEPS steps (lr / 10 for the last 40 %); returns the first and final losses."""
    params = [p for p in [*model.parameters(), *criterion.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=1e-4)
    first = 0.0
    for step in range(STEPS):
        if step == 3 * STEPS // 5:
            for group in opt.param_groups:
                group["lr"] = LR / 10
        loss = criterion(model(batch["frames"], batch["mask"]), batch["targets"])["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        first = first or float(loss.detach())
    model.eval()
    with torch.no_grad():
        outputs = model(batch["frames"], batch["mask"])
        final = float(criterion(outputs, batch["targets"])["loss"])
    return first, final


def pixel_oks(people: list[dict], raw: RawClip) -> np.ndarray:
    """(G, P, T) OKS of every ground-truth track against every reported person, per frame."""
    sigmas = oks_sigmas(dtype=torch.float64)
    kp = torch.from_numpy(raw.keypoints)
    vis = torch.from_numpy(raw.visible)
    lo = torch.where(vis[..., None], kp, torch.inf).amin(-2)
    hi = torch.where(vis[..., None], kp, -torch.inf).amax(-2)
    area = torch.where(vis.any(-1), (hi - lo).clamp(min=0).prod(-1), torch.zeros(()))
    scores = []
    for t in range(kp.shape[1]):
        pred = people[t]["keypoints"][..., :2].double()
        scores.append(oks(pred[None], kp[:, t, None], vis[:, t, None], area[:, t, None], sigmas))
    return torch.stack(scores, -1).numpy()


@pytest.fixture
def one_thread():
    """The tensors are tiny: one intra-op thread is as fast and immune to a busy CI machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_model_overfits_one_clip(one_thread: None) -> None:
    raw = synthetic_clip(seed=4)
    num_people = len(raw.track_ids)
    assert num_people == 3 and raw.visible.any(-1).all()
    batch = collate([make_item(raw, ClipParams(short_side=SIZE, max_size=SIZE))])
    cfg = load_config(CONFIG, OVERRIDES)
    torch.manual_seed(0)
    model, criterion = build_model(cfg.model), build_criterion(cfg)
    first, final = train(model, criterion, batch)
    assert final <= 0.1 * first, f"loss {first:.3f} -> {final:.3f}"
    with torch.no_grad():
        outputs = model(batch["frames"], batch["mask"])
    orig_sizes = torch.stack([t["orig_size"] for t in batch["targets"]])
    people = PostProcessor(top_k=num_people)(outputs, orig_sizes)[0]
    similarity = pixel_oks(people, raw)
    rows, cols = linear_sum_assignment(-similarity.mean(-1))
    assert len(rows) == num_people
    matched = similarity[rows, cols]
    assert matched.min() >= 0.9, f"OKS per person and frame {matched}"

"""VEPE: temporal deformable attention oracles, instance association, ablation configs,
two-phase weight transfer, criterion and the video estimator with a VEPE model."""
import copy

import numpy as np
import pytest
import torch

from pavenet.config import TrainConfig, load_config
from pavenet.engine.optim import build_optimizer
from pavenet.engine.step import train_step
from pavenet.runtime.weights import fit_state_dict
from pavenet.infer.estimator import PoseEstimator
from pavenet.model import build
from pavenet.model.deformable_attention import MSDeformAttn
from pavenet.model.encoder import encoder_reference_points, flatten_levels
from pavenet.model.pose_attention import FrameDeformAttn
from pavenet.model.position_encoding import PositionEmbeddingSine
from pavenet.model.vepe.query_selection import (associate, embedding_similarity, gather_linked,
                                                instance_mask, pose_similarity)
from pavenet.model.vepe.stdme import memory_position, temporal_deform_attn
from pavenet.model.vepe.stpd import KeyFrameDecoderLayer
from target_factory import random_target

SMALL = ["model.backbone.name=resnet10t", "model.hidden_dim=32", "model.num_heads=2", "model.ffn_dim=32", "model.num_queries=10",
         "model.num_kept=4", "model.refine_hidden=[32]", "model.embed_dim=16",
         "model.enc_layers=1", "model.pose_dec_layers=1", "model.vepe.stpd_layers=2",
         "model.vepe.stdme_points=2", "postprocess.score_threshold=0.0"]
ROWS = ["vepe_tiny_baseline", "vepe_tiny_stpe", "vepe_tiny_icm", "vepe_tiny_stdme", "vepe_tiny",
        "vepe_tiny_spatial"]
SHAPES = ((4, 6), (2, 3))
SPATIAL = ("backbone.", "mapper.", "encoder.", "level_embed", "query_init.", "pose_decoder.")


def small(name, *extra, seed=0):
    cfg = load_config(f"configs/{name}.yaml", [*SMALL, *extra])
    torch.manual_seed(seed)
    model, criterion, post = build(cfg)
    return cfg, model, criterion, post


def random_memory(n, d, valid_hw, dtype=torch.float64, seed=0):
    """Memory of n frames with the same padding (x valid fraction, y valid fraction)."""
    g = torch.Generator().manual_seed(seed)
    maps, masks = [], []
    for h, w in SHAPES:
        mask = torch.ones(n, h, w, dtype=torch.bool)
        mask[:, :max(1, round(h * valid_hw[1])), :max(1, round(w * valid_hw[0]))] = False
        maps.append(torch.randn(n, d, h, w, generator=g, dtype=dtype))
        masks.append(mask)
    pos = [PositionEmbeddingSine(d // 2)(m).to(dtype) for m in masks]
    level_embed = torch.randn(len(SHAPES), d, generator=g, dtype=dtype)
    tokens, pos_flat, _, layout = flatten_levels(maps, masks, pos, level_embed)
    layout.valid_ratios = layout.valid_ratios.to(dtype)  # float64 geometry for the oracles
    return layout, pos_flat, level_embed


def perturb(module, scale=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def frame_copies(attn1, t):
    """A T-frame FrameDeformAttn whose every frame slice is ``attn1``'s (as weights.py does)."""
    attn = FrameDeformAttn(attn1.d_model, attn1.num_heads, attn1.num_levels, attn1.num_points,
                           t, zero_offsets=False).double()
    attn.load_state_dict(fit_state_dict(attn, attn1.state_dict(), 1, t))
    return attn


def test_temporal_attention_t1_equals_in_frame_attention():
    torch.manual_seed(0)
    memory, pos, _ = random_memory(2, 16, (0.75, 0.5))
    ref_attn = MSDeformAttn(16, 2, 2, 3).double()
    perturb(ref_attn)
    attn = FrameDeformAttn(16, 2, 2, 3, 1, zero_offsets=False).double()
    attn.load_state_dict(ref_attn.state_dict())
    query = memory.memory + pos
    refs = encoder_reference_points(memory.shapes, memory.valid_ratios)
    expected = ref_attn(query, refs, memory.memory, memory.shapes, memory.padding_mask)
    got = temporal_deform_attn(attn, query, memory, batch=2)
    assert got.shape == expected.shape == (2, 30, 16)
    assert torch.allclose(got, expected, atol=1e-6)  # FrameDeformAttn normalises in float32


def test_temporal_attention_weights_are_normalised_over_all_frames():
    """T identical frames with copied frame slices give the one-frame result (weights summed
    over T x L x K points are 1, not T)."""
    torch.manual_seed(0)
    one, pos, _ = random_memory(1, 16, (0.5, 1.0))
    attn1 = FrameDeformAttn(16, 2, 2, 3, 1, zero_offsets=False).double()
    perturb(attn1)
    expected = temporal_deform_attn(attn1, one.memory + pos, one, batch=1)
    rows = torch.zeros(3, dtype=torch.long)
    clip = one.select(rows)
    got = temporal_deform_attn(frame_copies(attn1, 3), (one.memory + pos)[rows], clip, batch=1)
    assert torch.allclose(got, expected.expand(3, -1, -1), atol=1e-6)  # float32 softmax


def test_temporal_attention_reads_each_frame_at_its_own_offsets():
    """With frame 0's weight slice dominant, a token of frame 2 reads frame 0's memory exactly
    as the in-frame attention would (at frame 0's offsets)."""
    torch.manual_seed(0)
    memory, pos, _ = random_memory(3, 16, (1.0, 0.75))
    attn1 = FrameDeformAttn(16, 2, 2, 3, 1, zero_offsets=False).double()
    perturb(attn1)
    attn = frame_copies(attn1, 3)
    with torch.no_grad():
        attn.attention_weights.bias.view(3, -1)[1:] -= 1e4
        perturb(attn.sampling_offsets, seed=5)  # frames 1, 2 sample elsewhere
        attn.sampling_offsets.weight.view(3, -1, 16)[0] = attn1.sampling_offsets.weight
        attn.sampling_offsets.bias.view(3, -1)[0] = attn1.sampling_offsets.bias
    query = memory.memory + pos
    got = temporal_deform_attn(attn, query, memory, batch=1)
    frame0 = memory.select(torch.zeros(1, dtype=torch.long))
    for f in range(3):
        expected = temporal_deform_attn(attn1, query[f:f + 1], frame0, batch=1)
        assert torch.allclose(got[f], expected[0], atol=1e-6)  # softmax runs in float32


def test_memory_position_rebuilds_the_encoder_position():
    memory, pos, level_embed = random_memory(2, 16, (0.5, 0.75))
    rebuilt = memory_position(memory, PositionEmbeddingSine(8), level_embed)
    assert torch.allclose(rebuilt, pos, atol=1e-6)


def test_instance_mask_keeps_the_most_similar_kept_instance_per_frame():
    # key frame 1 of T=3, Q=3; embeddings one-hot-ish so similarities are hand-computable
    e = torch.eye(3)
    emb = torch.stack([e[[2, 0, 1]], e, 0.9 * e + 0.1 * e[[1, 2, 0]]])[None]  # (1, 3, 3, 3)
    keep = torch.tensor([[[True, True, True], [False, True, True], [True, True, False]]])
    link = associate(embedding_similarity(emb, 1), keep, 1)
    # frame 0: key q matches row whose one-hot is q -> rows (1, 2, 0); frame 1: itself;
    # frame 2: row q is most similar but row 2 is not kept -> q=2 takes its next best, row 1
    assert link.tolist() == [[[1, 0, 0], [2, 1, 1], [0, 2, 1]]]
    mask = instance_mask(link, keep, 1, use_instances=True).view(1, 3, 3, 3)
    expected = torch.zeros(1, 3, 3, 3, dtype=torch.bool)
    for q in range(3):
        expected[0, q, 0, link[0, q, 0]] = True
        expected[0, q, 2, link[0, q, 2]] = True
        expected[0, q, 1, q] = True  # itself in the key frame, though query 0 is not kept
    assert torch.equal(mask, expected)
    assert (mask.sum(-1) <= 1).all()  # at most one instance per frame
    no_inst = instance_mask(link, keep, 1, use_instances=False).view(1, 3, 3, 3)
    assert torch.equal(no_inst[0, :, 0], keep[0, 0].expand(3, 3))
    assert torch.equal(no_inst[0, 0, 1], torch.tensor([True, True, True]))


def test_association_falls_back_to_all_queries_and_pose_distance():
    kpt = torch.rand(1, 2, 4, 5, 2, generator=torch.Generator().manual_seed(0))
    kpt[0, 0] = kpt[0, 1, [3, 2, 1, 0]] + 0.001  # frame 0 = frame 1 reversed, moved slightly
    keep = torch.tensor([[[False] * 4, [True] * 4]])
    link = associate(pose_similarity(kpt, 1), keep, 1)
    assert link[0, :, 0].tolist() == [3, 2, 1, 0]
    assert link[0, :, 1].tolist() == [0, 1, 2, 3]
    values = torch.randn(2, 3, 4, 5)
    index = torch.randint(0, 4, (2, 4, 3))
    got = gather_linked(values, index)
    for b in range(2):
        for q in range(4):
            for t in range(3):
                assert torch.equal(got[b, q, t], values[b, t, index[b, q, t]])


def make_batch(t, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(2, t, 3, 64, 64, generator=g)
    mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    mask[1, 48:] = True
    frames[1, :, :, 48:] = 0
    targets = [random_target(2, t, 15, g, video_id=0, track_ids=[5, 6]) for _ in range(2)]
    return {"frames": frames, "mask": mask, "targets": targets}


@pytest.mark.parametrize("name", ROWS)
def test_ablation_row_forward_backward_and_train_step(name):
    cfg, model, criterion, _ = small(name)
    t, v = cfg.model.num_frames, cfg.model.vepe
    assert (model.stpe is not None, model.stdme is not None) == (v.stpe, v.stdme)
    assert isinstance(model.stpd.layers[0], KeyFrameDecoderLayer) == (not v.stpd)
    batch = make_batch(t)
    model.train()
    out = model(batch["frames"], batch["mask"])
    assert set(out) == {"logits", "keypoints", "visibility", "sigma", "embedding", "kept_index",
                        "aux_outputs", "enc_outputs"}
    assert out["keypoints"].shape == out["sigma"].shape == (2, 10, t, 15, 2)
    assert out["visibility"].shape == (2, 10, t, 15) and out["logits"].shape == (2, 10)
    assert torch.allclose(out["embedding"].norm(dim=-1), torch.ones(2, 10), atol=1e-5)
    assert torch.equal(out["kept_index"], out["logits"].topk(4, dim=1).indices)
    assert len(out["aux_outputs"]) == 1 + 1  # spatial decoder layer + STPD layers but the last
    assert out["enc_outputs"]["keypoints"].shape == (2, 85, t, 15, 2)
    losses = criterion(out, batch["targets"])
    assert torch.isfinite(losses["loss"])
    assert ("loss_consistency" in losses) == v.icm
    before = copy.deepcopy(model.state_dict())
    optimizer = build_optimizer(model, cfg.train)
    result = train_step(model, criterion, optimizer, [batch], 0.1, False, torch.device("cpu"))
    assert not result.skipped and np.isfinite(result.losses["loss"])
    after = model.state_dict()
    parts = ["stpd.", "pose_decoder.", "query_init."]
    parts += ["stpe."] * v.stpe + ["stdme."] * v.stdme + ["embed."] * v.icm
    for part in parts:
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(part)), part


def test_spatial_weights_initialise_the_video_model_exactly():
    """T=1 weights copied into every frame slice: on a clip of one repeated frame the T=3
    model predicts, in every frame, what the image model predicts."""
    _, image_model, _, _ = small("vepe_tiny_spatial")
    image_model.eval()
    perturb(image_model, scale=0.02)
    _, video_model, _, _ = small("vepe_tiny", seed=3)
    video_model.eval()
    video_model.load_state_dict(fit_state_dict(video_model, image_model.state_dict(), 1, 3))
    frame = make_batch(1)["frames"][:1]
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        one = image_model(frame, mask)
        three = video_model(frame.expand(-1, 3, -1, -1, -1), mask)
    assert torch.allclose(three["logits"], one["logits"], atol=1e-4)
    for key in ("keypoints", "sigma", "visibility"):
        assert torch.allclose(three[key], one[key].expand_as(three[key]), atol=1e-4), key


def test_freeze_keeps_the_spatial_phase_fixed():
    cfg, model, criterion, _ = small("vepe_tiny", "train.freeze=[" + ",".join(SPATIAL) + "]")
    before = copy.deepcopy(model.state_dict())
    optimizer = build_optimizer(model, cfg.train)
    train_step(model, criterion, optimizer, [make_batch(3)], 0.1, False, torch.device("cpu"))
    after = model.state_dict()
    changed = {name for name, _ in model.named_parameters()
               if not torch.equal(before[name], after[name])}
    for name, p in model.named_parameters():
        assert p.requires_grad != name.startswith(SPATIAL)
    assert changed and not any(name.startswith(SPATIAL) for name in changed)
    assert any(name.startswith("stpd.") for name in changed)
    assert TrainConfig().freeze == []


def test_estimator_with_vepe_matches_the_direct_clip_output():
    _, model, _, post = small("vepe_tiny")
    perturb(model.stpd, scale=0.02)
    est = PoseEstimator(model, post, short_side=64, max_size=64, device="cpu")
    g = np.random.default_rng(0)
    frames = [g.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    preds = list(est.predict_frames(iter(frames), batch_size=2, score_threshold=0.0))
    assert [p.index for p in preds] == [0, 1, 2, 3]
    with torch.no_grad():
        clip = est.preprocess(frames[:3])[None]
        out = model(clip, torch.zeros(1, 64, 64, dtype=torch.bool))
    direct = post(out, torch.tensor([[64, 64]]))[0][1]["keypoints"]
    assert preds[1].people
    for person in preds[1].people:
        assert person.keypoints.shape == (15, 3)
        dist = (direct - torch.from_numpy(person.keypoints)).abs().amax((1, 2))
        assert dist.min() < 1e-4

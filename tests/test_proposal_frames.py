"""``model.proposal_frames: clip``: encoder proposals that also see the clip's other frames."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from test_network import float_tensors, make_model, padded_batch, tiny_cfg

from pavenet.model import build_model
from pavenet.model.query_init import QueryInit

SHAPES = ((4, 6), (2, 3))
S = sum(h * w for h, w in SHAPES)


def query_inits(margin: float, d: int = 16, queries: int = 5, joints: int = 3):
    """A published QueryInit and one with neighbours sharing its weights."""
    torch.manual_seed(0)
    published = QueryInit(d, queries, joints, (8,), margin)
    clip = QueryInit(d, queries, joints, (8,), margin, neighbours=True)
    missing = clip.load_state_dict(published.state_dict(), strict=False).missing_keys
    assert sorted(missing) == [f"neighbour_mix.layers.{i}.{p}" for i in (0, 1) for p in ("bias", "weight")]
    return published, clip


def mixing_on(query_init: QueryInit, std: float) -> None:
    """Random weights in the (zero-initialised) mixing MLP, as after some training."""
    with torch.no_grad():
        for param in query_init.neighbour_mix.parameters():
            param.normal_(0.0, std)


def inputs(b: int = 2, others: int = 2, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(b, S, d, generator=g)
    neighbours = torch.randn(b, others, S, d, generator=g)
    padding = torch.zeros(b, S, dtype=torch.bool)
    padding[1, 20:24] = True
    padding[1, S - 2:] = True
    ratios = torch.ones(b, len(SHAPES), 2)
    return memory, neighbours, padding, ratios


@pytest.mark.parametrize("margin", [0.0, 0.1])
def test_clip_proposals_start_as_the_published_ones(margin):
    published, clip = query_inits(margin)
    memory, neighbours, padding, ratios = inputs()
    a = published(memory, padding, SHAPES, ratios)
    b = clip(memory, padding, SHAPES, ratios, neighbours)
    for key in ("logits", "keypoints", "sigma", "token_mask"):
        assert torch.equal(a.proposals[key], b.proposals[key]), key
    assert torch.equal(a.reference, b.reference) and torch.equal(a.tgt, b.tgt)


def oracle_logits(q: QueryInit, memory, neighbours, padding) -> torch.Tensor:
    """Proposal logits in float64, written out: f = LN(W m + b) (zero on padding) for every
    frame, f_key + W2 relu(W1 [f_key, mean of the others' f] + b1) + b2 on real tokens."""
    def project(m):
        f = F.layer_norm(m @ q.enc_output.weight.double().T + q.enc_output.bias.double(), (m.shape[-1],),
                         q.enc_norm.weight.double(), q.enc_norm.bias.double())
        return f.masked_fill(padding[..., None], 0.0)

    key = project(memory.double())
    mean = torch.stack([project(neighbours[:, i].double()) for i in range(neighbours.shape[1])]).mean(0)
    first, last = q.neighbour_mix.layers
    hidden = torch.relu(torch.cat((key, mean), -1) @ first.weight.double().T + first.bias.double())
    mixed = key + (hidden @ last.weight.double().T + last.bias.double()).masked_fill(padding[..., None], 0.0)
    return (mixed @ q.cls.weight.double().T + q.cls.bias.double()).squeeze(-1)


def test_clip_proposals_match_the_float64_oracle():
    _, clip = query_inits(0.0)
    mixing_on(clip, 0.3)
    memory, neighbours, padding, ratios = inputs()
    got = clip.double()(memory.double(), padding, SHAPES, ratios.double(), neighbours.double())
    expected = oracle_logits(clip, memory, neighbours, padding)
    assert torch.allclose(got.proposals["logits"], expected, atol=1e-10, rtol=0)
    neighbours_moved = neighbours.clone()
    neighbours_moved[0, 1] += 1.0
    moved = clip(memory.double(), padding, SHAPES, ratios.double(), neighbours_moved.double())
    assert (moved.proposals["logits"][0] - got.proposals["logits"][0]).abs().max() > 1e-3
    assert torch.equal(moved.proposals["logits"][1], got.proposals["logits"][1])


def test_padding_tokens_stay_as_published():
    published, clip = query_inits(0.0)
    mixing_on(clip, 0.3)
    memory, neighbours, padding, ratios = inputs()
    a = published(memory, padding, SHAPES, ratios)
    b = clip(memory, padding, SHAPES, ratios, neighbours)
    assert torch.equal(a.proposals["logits"][padding], b.proposals["logits"][padding])
    assert not torch.equal(a.proposals["logits"][~padding], b.proposals["logits"][~padding])


def proposal_logits(model, frames, mask):
    with torch.no_grad():
        return model(frames, mask)["enc_outputs"]["logits"]


def test_a_black_key_frame_proposes_what_its_neighbours_show():
    """The published proposals see only the key frame: with it black, the neighbours cannot
    change them (this is what leaves a dropped frame without people); with clip proposals
    they do."""
    frames, mask = padded_batch(2, 3)
    frames[:, 1] = 0.0
    other = frames.clone()
    other[:, 0] = torch.flip(frames[:, 0], dims=(-1,))
    other[:, 2] = -frames[:, 2]
    published = make_model(3).eval()
    assert torch.equal(proposal_logits(published, frames, mask), proposal_logits(published, other, mask))
    clip = make_model(3, proposal_frames="clip").eval()
    mixing_on(clip.query_init, 0.1)
    change = (proposal_logits(clip, frames, mask) - proposal_logits(clip, other, mask)).abs()
    assert change.max() > 1e-2


def test_the_mixing_layer_learns_from_zero():
    model = make_model(3, proposal_frames="clip").train()
    frames, mask = padded_batch(2, 3)
    out = model(frames, mask)
    g = torch.Generator().manual_seed(1)
    sum((x * torch.randn(x.shape, generator=g)).sum() for x in float_tensors(out)).backward()
    last = model.query_init.neighbour_mix.layers[-1]
    assert last.weight.grad.abs().max() > 0 and last.bias.grad.abs().max() > 0


def test_one_frame_and_vepe():
    one = build_model(tiny_cfg(1, proposal_frames="clip"))
    assert one.query_init.neighbour_mix is None
    assert not any("neighbour_mix" in name for name in one.state_dict())
    cfg = dataclasses.replace(tiny_cfg(3, proposal_frames="clip"), arch="vepe")
    with pytest.raises(ValueError, match="proposal_frames"):
        build_model(cfg)


def test_the_synthetic_configs_propose_from_the_clip_and_published_ones_from_the_key_frame():
    """The demo's temporal model draws its proposals from the whole clip (with the published
    key-frame proposals its T=3 checkpoints ignored their neighbours, docs/results.md,
    2026-12-08); the published configs and VEPE's keep the published proposals."""
    from pavenet.config import load_config

    assert load_config("synthetic_tiny").model.proposal_frames == "clip"
    for name in ("pavenet_r50", "posetrack18_r50", "vepe_tiny", "vepe_tiny_stdme"):
        assert load_config(name).model.proposal_frames == "key", name


def test_the_synthetic_configs_refine_at_stride_4_and_published_ones_do_not():
    """The demo's model moves its joints twice by the stride-4 map (docs/results.md,
    2026-12-08); the published configs keep the published joints, and VEPE (no joint decoder)
    builds from its config."""
    from pavenet.config import load_config
    from pavenet.model import build_model

    for name in ("synthetic_tiny", "synthetic_tiny_t1"):
        model = load_config(name).model
        assert model.fine_refine and model.fine_passes == 2, name
    for name in ("pavenet_r50", "posetrack18_r50", "vepe_tiny", "vepe_tiny_stdme", "vepe_tiny_spatial"):
        assert not load_config(name).model.fine_refine, name
    assert build_model(load_config("vepe_tiny").model).fine_map is None


def test_a_checkpoint_without_the_mixing_layer_initialises_clip_proposals():
    """A T=1 checkpoint (no neighbours, no mixing layer) loads strictly into a T=3 model with
    clip proposals, whose mixing layer keeps its zero start: the same outputs as the published
    T=3 model initialised from that checkpoint. Other missing keys still raise."""
    from pavenet.runtime.checkpoint import CheckpointError
    from pavenet.runtime.weights import fit_state_dict

    torch.manual_seed(0)
    image = make_model(1, proposal_frames="clip")
    state = image.state_dict()
    clip, published = make_model(3, proposal_frames="clip"), make_model(3)
    for model in (clip, published):
        model.load_state_dict(fit_state_dict(model, state, 1, 3), strict=False)
    assert all("neighbour_mix" not in k for k in fit_state_dict(clip, state, 1, 3))
    frames, mask = padded_batch(2, 3)
    with torch.no_grad():
        got, want = clip.eval()(frames, mask), published.eval()(frames, mask)
    torch.testing.assert_close(got["keypoints"], want["keypoints"])
    torch.testing.assert_close(got["enc_outputs"]["logits"], want["enc_outputs"]["logits"])
    del state["query_init.cls.bias"]
    with pytest.raises(CheckpointError, match="missing in checkpoint  query_init.cls.bias"):
        fit_state_dict(clip, state, 1, 3)

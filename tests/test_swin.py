"""mmdet-layout Swin backbone: state-dict manifest, merging order, windows, masks, padding,
a brute-force block reference, timm cross-check, weights loading, freezing and wiring."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pavenet.model.backbone import Backbone, build_backbone
from pavenet.model.swin import (SwinBackbone, build_swin, merge_2x2, relative_position_index,
                                shifted_window_mask, window_partition, window_reverse)


def small_swin(**kw) -> SwinBackbone:
    torch.manual_seed(0)
    args = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7,
                out_indices=(0, 1, 2, 3), drop_path_rate=0.0)
    args.update(kw)
    return SwinBackbone(**args)


# --- state-dict manifest, written by hand from mmdet's SwinTransformer ----------------------

def block_manifest(c: int, heads: int, window: int = 7) -> dict[str, tuple]:
    """One SwinBlock of mmdet: LN, ShiftWindowMSA.w_msa (WindowMSA), LN, mmcv FFN."""
    return {
        "norm1.weight": (c,), "norm1.bias": (c,),
        "attn.w_msa.relative_position_bias_table": ((2 * window - 1) ** 2, heads),
        "attn.w_msa.relative_position_index": (window ** 2, window ** 2),
        "attn.w_msa.qkv.weight": (3 * c, c), "attn.w_msa.qkv.bias": (3 * c,),
        "attn.w_msa.proj.weight": (c, c), "attn.w_msa.proj.bias": (c,),
        "norm2.weight": (c,), "norm2.bias": (c,),
        "ffn.layers.0.0.weight": (4 * c, c), "ffn.layers.0.0.bias": (4 * c,),
        "ffn.layers.1.weight": (c, 4 * c), "ffn.layers.1.bias": (c,),
    }


def downsample_manifest(c: int) -> dict[str, tuple]:
    """mmdet PatchMerging: LN over the 4C unfolded vector, bias-free Linear 4C -> 2C."""
    return {"downsample.norm.weight": (4 * c,), "downsample.norm.bias": (4 * c,),
            "downsample.reduction.weight": (2 * c, 4 * c)}


def test_swin_large_state_dict_matches_mmdet_manifest():
    with torch.device("meta"):
        model = build_swin("swin_large_mmdet", [1, 2, 3])
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got["stages.0.blocks.0.attn.w_msa.relative_position_bias_table"] == (169, 6)
    assert got["stages.2.blocks.17.attn.w_msa.relative_position_bias_table"] == (169, 24)
    expected = {"patch_embed.projection.weight": (192, 3, 4, 4), "patch_embed.projection.bias": (192,),
                "patch_embed.norm.weight": (192,), "patch_embed.norm.bias": (192,)}
    for i, (depth, heads) in enumerate(zip([2, 2, 18, 2], [6, 12, 24, 48])):
        c = 192 * 2 ** i
        for j in range(depth):
            expected.update({f"stages.{i}.blocks.{j}.{k}": s for k, s in block_manifest(c, heads).items()})
        if i < 3:
            expected.update({f"stages.{i}.{k}": s for k, s in downsample_manifest(c).items()})
    for i, c in [(1, 384), (2, 768), (3, 1536)]:
        expected.update({f"norm{i}.weight": (c,), f"norm{i}.bias": (c,)})
    assert got == expected
    per_stage = [sum(k.startswith(f"stages.{i}.") for k in got) for i in range(4)]
    assert per_stage == [2 * 14 + 3, 2 * 14 + 3, 18 * 14 + 3, 2 * 14]
    assert len(got) == 4 + sum(per_stage) + 6 == 355
    # the index is a persistent buffer (saved by mmdet, so it is in released checkpoints)
    assert "relative_position_index" in dict(model.stages[0].blocks[0].attn.w_msa.named_buffers())
    assert model.channels == [384, 768, 1536] and model.strides == [8, 16, 32]


def test_relative_position_index_hand_values():
    index = relative_position_index(7)
    assert index.shape == (49, 49) and index.dtype == torch.long
    # (dy + 6) * 13 + (dx + 6) with (dy, dx) = position(query) - position(key)
    assert index[0, 0] == 84 and index[0, 48] == 0 and index[48, 0] == 168
    assert index[1, 0] == 6 * 13 + 7 and index[7, 0] == 7 * 13 + 6 and index[0, 8] == 5 * 13 + 5
    assert torch.equal(index + index.T, torch.full((49, 49), 168))


# --- patch merging ---------------------------------------------------------------------------

def test_patch_merging_uses_unfold_channel_order():
    x = torch.zeros(1, 2, 2, 2)
    for r in range(2):
        for c in range(2):
            for ch in range(2):
                x[0, r, c, ch] = 100 * ch + 10 * r + c
    # nn.Unfold order: channel-major, then kernel row, then kernel column
    assert merge_2x2(x)[0, 0, 0].tolist() == [0, 1, 10, 11, 100, 101, 110, 111]
    y = torch.randn(2, 6, 8, 5)
    unfolded = F.unfold(y.permute(0, 3, 1, 2), kernel_size=2, stride=2)  # B, 4C, L
    assert torch.equal(merge_2x2(y).reshape(2, -1, 20), unfolded.transpose(1, 2))


def test_patch_merging_pads_odd_maps_bottom_right():
    x = (torch.arange(3)[:, None] * 10 + torch.arange(3)[None, :] + 1).float().view(1, 3, 3, 1)
    merged = merge_2x2(x)
    assert merged.shape == (1, 2, 2, 4)
    assert merged[0, 0, 0].tolist() == [1, 2, 11, 12]
    assert merged[0, 0, 1].tolist() == [3, 0, 13, 0]
    assert merged[0, 1, 0].tolist() == [21, 22, 0, 0]
    assert merged[0, 1, 1].tolist() == [23, 0, 0, 0]
    down = small_swin().stages[0].downsample
    y = torch.randn(2, 5, 7, 32)
    assert torch.allclose(down(y), down.reduction(down.norm(merge_2x2(y))))
    assert down(y).shape == (2, 3, 4, 64)


# --- windows and the shifted-window mask -----------------------------------------------------

def test_window_partition_round_trip():
    x = torch.randn(2, 14, 21, 3)
    windows = window_partition(x, 7)
    assert windows.shape == (2 * 2 * 3, 7, 7, 3)
    assert torch.equal(windows[1], x[0, 0:7, 7:14])
    assert torch.equal(windows[3], x[0, 7:14, 0:7])
    assert torch.equal(windows[6], x[1, 0:7, 0:7])
    assert torch.equal(window_reverse(windows, 7, 14, 21), x)


def test_shifted_window_mask_small_case():
    m = -100.0
    mask = shifted_window_mask(4, 4, window=2, shift=1)
    assert mask.shape == (4, 4, 4)
    # rolled rows/cols: band 0 = [0, 2), band 1 = [2, 3), band 2 = [3, 4)
    assert torch.equal(mask[0], torch.zeros(4, 4))  # all band (0, 0)
    assert mask[1].tolist() == [[0, m, 0, m], [m, 0, m, 0], [0, m, 0, m], [m, 0, m, 0]]
    assert mask[2].tolist() == [[0, 0, m, m], [0, 0, m, m], [m, m, 0, 0], [m, m, 0, 0]]
    assert mask[3].tolist() == [[0 if i == j else m for j in range(4)] for i in range(4)]
    # a map of one window (mmdet still shifts): rows [0, 4) and [4, 7) are split
    one = shifted_window_mask(7, 7, window=7, shift=3)
    assert one.shape == (1, 49, 49)
    assert one[0, 0, 3] == 0 and one[0, 0, 4] == m and one[0, 0, 21] == 0 and one[0, 0, 28] == m


# --- any input size --------------------------------------------------------------------------

def test_odd_input_sizes():
    model = small_swin().eval()
    image = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        outs = model(image)
        padded = model(F.pad(image, (0, 1, 0, 3)))  # what the patch embedding's padding gives
    # mmdet: ceil(H / 4), then ceil(/ 2) per patch merging
    assert [tuple(o.shape[-2:]) for o in outs] == [(25, 33), (13, 17), (7, 9), (4, 5)]
    assert [o.shape[1] for o in outs] == model.channels == [32, 64, 128, 256]
    assert model.strides == [4, 8, 16, 32]
    for a, b in zip(outs, padded):
        assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-6)
    # an image is independent of its batch neighbours
    with torch.no_grad():
        pair = model(torch.cat([image, torch.randn(1, 3, 97, 131)]))
    assert all(torch.allclose(a[0], b[0], atol=1e-5) for a, b in zip(outs, pair))


# --- one block against a brute-force float64 reference ---------------------------------------

def reference_block(block, x: torch.Tensor) -> torch.Tensor:
    """mmdet's SwinBlock computed token by token with explicit loops (float64)."""
    msa, ws, s = block.attn.w_msa, block.attn.window_size, block.attn.shift_size
    heads, (b, h, w, c) = msa.num_heads, x.shape
    d = c // heads
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws

    def layer_norm(t, norm):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    def band(p, size):  # region of a rolled coordinate (only matters when shifted)
        return 0 if p < size - ws else (1 if p < size - s else 2)

    out = torch.zeros(b, h, w, c, dtype=x.dtype)
    for n in range(b):
        tokens = torch.zeros(hp, wp, c, dtype=x.dtype)  # zero padding after norm1
        tokens[:h, :w] = layer_norm(x[n], block.norm1)
        qkv = tokens @ msa.qkv.weight.T + msa.qkv.bias
        for r in range(h):
            for col in range(w):
                sr, sc = (r - s) % hp, (col - s) % wp  # position after rolling by -s
                r0, c0 = sr // ws * ws, sc // ws * ws
                for head in range(heads):
                    q = qkv[r, col, head * d:(head + 1) * d] * d ** -0.5
                    logits, values = [], []
                    for kr in range(r0, r0 + ws):
                        for kc in range(c0, c0 + ws):
                            src = qkv[(kr + s) % hp, (kc + s) % wp]
                            row = (sr - kr + ws - 1) * (2 * ws - 1) + (sc - kc + ws - 1)
                            logit = q @ src[c + head * d:c + (head + 1) * d]
                            logit = logit + msa.relative_position_bias_table[row, head]
                            if s and (band(sr, hp), band(sc, wp)) != (band(kr, hp), band(kc, wp)):
                                logit = logit - 100.0
                            logits.append(logit)
                            values.append(src[2 * c + head * d:2 * c + (head + 1) * d])
                    p = torch.softmax(torch.stack(logits), 0)
                    out[n, r, col, head * d:(head + 1) * d] = (p[:, None] * torch.stack(values)).sum(0)
    x1 = x + out @ msa.proj.weight.T + msa.proj.bias
    fc1, fc2 = block.ffn.layers[0][0], block.ffn.layers[1]
    hidden = layer_norm(x1, block.norm2) @ fc1.weight.T + fc1.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    return x1 + hidden @ fc2.weight.T + fc2.bias


@pytest.mark.parametrize("index", [0, 1])  # plain and shifted window
def test_block_matches_brute_force_reference(index):
    model = small_swin().double().eval()
    torch.manual_seed(1)
    block = model.stages[1].blocks[index]  # 64 channels, 2 heads
    with torch.no_grad():
        for p in block.parameters():  # sharp attention: bias and mask matter
            p.normal_(0, 0.3 if p.dim() > 1 else 0.5)
        block.attn.w_msa.relative_position_bias_table.normal_(0, 2.0)
        x = torch.randn(2, 9, 12, 64, dtype=torch.float64)  # padded to 14 x 14
        expected = reference_block(block, x)
        got = block(x)
        hp = shifted_window_mask(14, 14, 7, 3, dtype=torch.float64)
        via_stage = block(x, hp)  # the mask a stage precomputes
    assert block.attn.shift_size == 3 * index
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert torch.allclose(via_stage, expected, atol=1e-6, rtol=0)


# --- whole backbone against timm's Swin (224 x 224, no padding; always_partition = mmdet) -----

def test_matches_timm_swin_with_converted_weights():
    from timm.models.swin_transformer import SwinTransformer
    torch.manual_seed(2)
    ref = SwinTransformer(img_size=224, embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                          window_size=7, always_partition=True, num_classes=0).eval()
    model = small_swin().eval()
    with torch.no_grad():
        for t in [*ref.parameters(), *model.parameters()]:
            t.normal_(0, 0.2)
    state = {}
    for k, v in ref.state_dict().items():
        if k.startswith("patch_embed."):
            state[k.replace(".proj.", ".projection.")] = v
        elif ".downsample." in k:  # timm: start of stage i; mmdet: end of stage i - 1
            i, rest = int(k.split(".")[1]), k.split(".downsample.")[1]
            c = v.shape[-1] // 4
            o = torch.arange(4 * c)
            # ours: c * 4 + 2 dy + dx; timm: dx * 2C + dy * C + c
            v = v[..., (o % 2) * 2 * c + (o % 4 // 2) * c + o // 4]
            state[f"stages.{i - 1}.downsample.{rest}"] = v
        elif ".blocks." in k and "attn_mask" not in k:
            k = k.replace("layers.", "stages.").replace(".attn.", ".attn.w_msa.")
            state[k.replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")] = v
    for k, v in model.state_dict().items():  # timm's index is not saved; ours: checked above
        if k.endswith("relative_position_index"):
            state[k] = v
    for i in range(4):
        state[f"norm{i}.weight"], state[f"norm{i}.bias"] = getattr(model, f"norm{i}").weight, getattr(model, f"norm{i}").bias
    model.load_state_dict(state, strict=True)
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outs = model(image)
        x = ref.patch_embed(image)
        for i, layer in enumerate(ref.layers):
            x = layer(x)
            expected = getattr(model, f"norm{i}")(x).permute(0, 3, 1, 2)
            assert torch.allclose(outs[i], expected, atol=1e-5), i


# --- weights, freezing, drop path, wiring ----------------------------------------------------

def test_local_mmdet_checkpoint_loads_by_prefix(tmp_path):
    source = small_swin(out_indices=(1, 2, 3))
    path = tmp_path / "petr_swin.pth"
    ckpt = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    ckpt["neck.convs.0.conv.weight"] = torch.zeros(1)
    torch.save({"state_dict": ckpt, "meta": {"epoch": 3}}, path)
    torch.manual_seed(5)
    loaded = SwinBackbone(32, (2, 2, 2, 2), (1, 2, 4, 8), 7, (1, 2, 3), pretrained_path=str(path))
    for k, v in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(source.eval()(image), loaded.eval()(image)))
    with pytest.raises(ValueError, match="petr_swin.pth.*2 unexpected.*norm1"):
        small_swin(out_indices=(2, 3), pretrained_path=str(path))
    with pytest.raises(ValueError, match="petr_swin.pth.*2 weights missing.*norm0"):
        small_swin(out_indices=(0, 1, 2, 3), pretrained_path=str(path))
    del ckpt["backbone.stages.1.blocks.0.attn.w_msa.qkv.bias"]
    torch.save(ckpt, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match="cut.pth.*1 weights missing.*qkv.bias"):
        small_swin(out_indices=(1, 2, 3), pretrained_path=str(tmp_path / "cut.pth"))


def test_frozen_stages_follow_mmdet():
    model = small_swin(frozen_stages=1, out_indices=(0, 1, 2))
    frozen = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("stages") else "")
              for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"patch_embed", "stages.0", "norm0"}  # stage 0 includes its patch merging
    model.train()
    assert not model.stages[0].training and not model.patch_embed.training
    assert model.stages[1].training and model.norm1.training
    assert all(p.requires_grad for p in small_swin().parameters())
    with pytest.raises(ValueError, match="frozen_stages=5"):
        small_swin(frozen_stages=5)


def test_drop_path_rates_and_training_only():
    model = small_swin(drop_path_rate=0.3, depths=(2, 2, 6, 2))
    rates = [b.attn.drop.drop_prob for s in model.stages for b in s.blocks]
    assert rates == pytest.approx([0.3 * i / 11 for i in range(12)])
    assert all(b.ffn.dropout_layer.drop_prob == b.attn.drop.drop_prob for s in model.stages for b in s.blocks)
    image = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(image)[-1], model(image)[-1])
        model.train()
        torch.manual_seed(0)
        a = model(image)[-1]
        torch.manual_seed(1)
        assert not torch.allclose(a, model(image)[-1])


def test_build_backbone_names():
    with torch.device("meta"):
        tiny = build_backbone("swin_tiny_mmdet", [1, 2, 3])
        base = build_backbone("swin_base_mmdet", [0, 1, 2, 3], frozen_stages=2)
    assert isinstance(tiny, SwinBackbone) and tiny.channels == [192, 384, 768]
    assert tiny.strides == [8, 16, 32] and len(tiny.stages[2].blocks) == 6
    assert base.channels == [128, 256, 512, 1024] and base.stages[3].blocks[1].attn.drop.drop_prob == pytest.approx(0.3)
    assert not any(p.requires_grad for p in base.stages[1].parameters())
    assert isinstance(build_backbone("resnet18", [2, 3, 4]), Backbone)
    with pytest.raises(ValueError, match="out_indices"):
        build_backbone("swin_tiny_mmdet", [2, 4])


def test_swinl_config_builds():
    from pavenet.config import load_config
    from pavenet.model import build
    cfg = load_config("configs/pavenet_swinl.yaml")
    assert cfg.model.backbone.name == "swin_large_mmdet" and cfg.model.backbone.out_indices == [1, 2, 3]
    assert cfg.model.backbone.frozen_stages == 0 and cfg.postprocess.top_k == 100
    with torch.device("meta"):
        model, _, post = build(cfg)
    assert isinstance(model.backbone, SwinBackbone)
    assert model.backbone.channels == [384, 768, 1536]
    assert [conv.in_channels for conv in model.mapper.proj] == [384, 768, 1536]
    assert sum(p.numel() for p in model.backbone.parameters()) == pytest.approx(195.0e6, rel=1e-3)
    assert post.top_k == 100

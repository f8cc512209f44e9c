"""``pavenet convert``: released PAVE-Net / PETR checkpoints -> pavenet, and safe loading.

The released key manifests (tests/data/*_keys.tsv: name, shape, numel of every tensor of the
official R50 PAVE-Net and of PETR R50 COCO) give random state dicts of the released layouts.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from pavenet.cli import main
from pavenet.config import load_config
from pavenet.convert import ConvertError, convert_checkpoint, convert_state, read_state_dict
from pavenet.convert.tensors import Conversion, fold_linears, joint_rows, point_rows
from pavenet.data.joints import COCO_TO_MODEL
from pavenet.model.heads import FrameMLP
from pavenet.model import build_model

DATA = Path(__file__).parent / "data"
R50 = Path(__file__).resolve().parents[1] / "configs" / "pavenet_r50.yaml"


def manifest_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the names and shapes of a released manifest."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for line in (DATA / name).read_text().splitlines():
        key, shape, _ = line.split("\t")
        shape = ast.literal_eval(shape)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state


@pytest.fixture(scope="module")
def r50_cfg():
    return load_config(R50)


@pytest.fixture(scope="module")
def pavenet_conversion(r50_cfg):
    state = manifest_state("official_pavenet_r50_keys.tsv")
    return state, *convert_state(state, r50_cfg, "pavenet")


def test_released_pavenet_manifest_converts_with_every_tensor_accounted_for(pavenet_conversion, r50_cfg) -> None:
    state, out, report = pavenet_conversion
    assert report.total_source == len(state) == 964
    assert report.used + len(report.dropped) == len(state)
    assert set(report.dropped.values()) == {
        "BatchNorm counter (frozen statistics need none)",
        "RLE normalizing flow (training only)",
        "auxiliary heatmap head (training only, loss weight 0)"}
    assert sum(k.endswith("num_batches_tracked") for k in report.dropped) == 53
    # only pavenet's own additions have no released source
    assert {k.split(".")[0] for k in report.initialised} == {"embed", "pose_decoder", "joint_decoder"}
    assert all(".visibility." in k for k in report.initialised if not k.startswith("embed."))
    model = build_model(r50_cfg.model)
    model.load_state_dict(out, strict=True)


def test_per_frame_projections_are_stacked_in_frame_order(pavenet_conversion) -> None:
    state, out, _ = pavenet_conversion
    src = "bbox_head.transformer.decoder.layers.1.attentions.1."
    got = out["pose_decoder.layers.1.cross_attn.sampling_offsets.weight"]
    assert got.shape == (3 * 960, 256)
    for t, prefix in enumerate(("pre_", "", "next_")):
        assert torch.equal(got[960 * t:960 * (t + 1)], state[f"{src}{prefix}sampling_offsets.weight"])
        w = out["pose_decoder.heads.2.refine.weights.3"][t]  # (512, 30): the per-frame last Linear, transposed
        assert torch.equal(w, state[f"bbox_head.{prefix}kpt_branches.2.6.weight"].t())
        assert torch.equal(out["joint_decoder.heads.1.refine.biases.2"][t],
                           state[f"bbox_head.{prefix}refine_kpt_branches.1.4.bias"])
    qe = state["bbox_head.query_embedding.weight"]
    assert torch.equal(out["query_init.pos_embed.weight"], qe[:, :256])
    assert torch.equal(out["query_init.tgt_embed.weight"], qe[:, 256:])


def test_folded_sigma_head_equals_the_three_released_linears(pavenet_conversion) -> None:
    state, out, _ = pavenet_conversion
    x = torch.randn(5, 256, dtype=torch.float64)
    ref = x
    for name in ("0", "1", "2.linear"):
        ref = ref @ state[f"bbox_head.dec_fc_sigma_branches.1.{name}.weight"].double().t() \
            + state[f"bbox_head.dec_fc_sigma_branches.1.{name}.bias"].double()
    for t in range(3):  # the key-frame head, used for every frame
        got = x @ out["pose_decoder.heads.1.sigma.weights.0"][t].double() + out["pose_decoder.heads.1.sigma.biases.0"][t]
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-3 * ref.abs().max().item() * 1e-3)


def test_fold_linears_hand_computed() -> None:
    w, b = fold_linears([(torch.tensor([[2.0]]), torch.tensor([1.0])),
                         (torch.tensor([[3.0]]), torch.tensor([-1.0]))])
    assert w.item() == 6.0 and b.item() == 2.0  # 3 * (2x + 1) - 1 = 6x + 2


def test_frame_mlp_from_per_frame_sequentials() -> None:
    torch.manual_seed(0)
    seqs = [nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)) for _ in range(3)]
    src = {f"f{t}.{k}": v for t, s in enumerate(seqs) for k, v in s.state_dict().items()}
    conv = Conversion(src, "<test>")
    conv.frame_mlp(["f0", "f1", "f2"], "m", 2)
    mlp = FrameMLP(4, [5], 2, 3)
    mlp.load_state_dict({k[2:]: v for k, v in conv.out.items()}, strict=True)
    x = torch.randn(7, 4)
    got = mlp(x)
    for t, s in enumerate(seqs):
        torch.testing.assert_close(got[:, t], s(x))


def test_point_and_joint_rows_hand_computed() -> None:
    assert point_rows(2, 3, [0, 2], 2).tolist() == [0, 1, 4, 5, 6, 7, 10, 11]
    assert point_rows(1, 4, [1, 3], 1).tolist() == [1, 3]
    assert joint_rows([0, 2], 2).tolist() == [0, 1, 4, 5]


def test_petr_coco_17_to_15_and_attentions_copied_to_every_frame(r50_cfg) -> None:
    state = manifest_state("petr_r50_coco_keys.tsv", seed=1)
    out, report = convert_state(state, r50_cfg, "petr")
    assert report.used + len(report.dropped) == len(state) == 613
    build_model(r50_cfg.model).load_state_dict(out, strict=True)
    coco = [0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert COCO_TO_MODEL == coco
    rows = [2 * j + k for j in coco for k in range(2)]
    assert torch.equal(out["query_init.keypoints.layers.3.weight"], state["bbox_head.kpt_branches.3.6.weight"][rows])
    src = state["bbox_head.transformer.decoder.layers.0.attentions.1.sampling_offsets.weight"].view(8, 4, 17, 2, 256)
    got = out["pose_decoder.layers.0.cross_attn.sampling_offsets.weight"].view(3, 8, 4, 15, 2, 256)
    for t in range(3):
        assert torch.equal(got[t], src[:, :, coco])
    w = state["bbox_head.transformer.decoder.layers.2.attentions.1.attention_weights.weight"].view(8, 4, 17, 256)
    got = out["pose_decoder.layers.2.cross_attn.attention_weights.weight"].view(3, 8, 4, 15, 256)
    assert torch.equal(got[2], w[:, :, coco])
    emb = state["bbox_head.transformer.refine_query_embedding.weight"]
    assert torch.equal(out["joint_decoder.joint_tgt.weight"], emb[coco, 256:])
    sigma_init = [k for k, why in report.initialised.items() if "sigma" in why]
    assert "query_init.sigma.weight" in sigma_init and "pose_decoder.heads.0.sigma.weights.0" in sigma_init


def test_safe_loading_refuses_a_pickle_payload(tmp_path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "meta": Payload()}, path)
    with pytest.raises(ConvertError, match="does not execute pickled code"):
        read_state_dict(path)
    assert not marker.exists()


def test_mmcv_checkpoint_with_numpy_metadata_and_bare_state_dicts_load(tmp_path) -> None:
    import numpy as np

    sd = {"x": torch.ones(2)}
    torch.save({"meta": {"epoch": 3, "best": np.float64(0.5), "CLASSES": ("person",)},
                "state_dict": sd, "optimizer": {"state": {}}}, tmp_path / "a.pth")
    torch.save(sd, tmp_path / "b.pth")
    assert torch.equal(read_state_dict(tmp_path / "a.pth")["x"], sd["x"])
    assert torch.equal(read_state_dict(tmp_path / "b.pth")["x"], sd["x"])


def _cli(*args: str, capsys) -> tuple[int, str]:
    code = main(["convert", *args])
    err = capsys.readouterr().err.strip()
    return code, err


def test_wrong_files_give_one_line_and_exit_code_2(tmp_path, capsys) -> None:
    good = tmp_path / "official.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": manifest_state("official_pavenet_r50_keys.tsv")}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:100_000])
    swin = manifest_state("official_pavenet_r50_keys.tsv")
    swin = {k: v for k, v in swin.items() if not k.startswith("backbone.")}
    swin["backbone.patch_embed.projection.weight"] = torch.zeros(192, 3, 4, 4)
    torch.save({"state_dict": swin}, tmp_path / "swin.pth")
    ours = tmp_path / "ours.pth"
    torch.save({"query_init.cls.weight": torch.zeros(1, 256)}, ours)
    cases = {truncated: "truncated or corrupt", tmp_path / "swin.pth": "missing",
             ours: "already a pavenet checkpoint", tmp_path / "none.pth": "no such checkpoint"}
    for path, message in cases.items():
        code, err = _cli(str(path), "--out", str(tmp_path / "out"), capsys=capsys)
        assert code == 2, path
        assert len(err.splitlines()) == 1 and message in err and str(path) in err, err
    code, err = _cli(str(good), "--from", "petr", "--out", str(tmp_path / "o2"), capsys=capsys)
    assert code == 2 and "is a pavenet checkpoint" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_convert_cli_writes_a_checkpoint_folder_that_weights_accepts(tmp_path, capsys) -> None:
    from pavenet.model.loading import load_checkpoint_model
    from safetensors.torch import load_file

    src = tmp_path / "official.pth"
    state = manifest_state("official_pavenet_r50_keys.tsv")
    torch.save({"meta": {"epoch": 20}, "state_dict": state}, src)
    assert main(["convert", str(src), "--out", str(tmp_path / "conv")]) == 0
    table = capsys.readouterr().out
    assert "964 = 690 used + 274 dropped" in table and "568 = 556 from the release + 12" in table
    assert "post-processing: official" in table
    model, cfg = load_checkpoint_model(str(tmp_path / "conv"))
    assert cfg.postprocess.mode == "official" and cfg.model.joint_query == "embedding"
    again = build_model(load_config(tmp_path / "conv" / "config.yaml").model)
    again.load_state_dict(load_file(str(tmp_path / "conv" / "model.safetensors")), strict=True)
    assert torch.equal(again.query_init.cls.weight, state["bbox_head.cls_branches.3.weight"])
    assert sorted(p.name for p in (tmp_path / "conv").iterdir()) == ["config.yaml", "model.safetensors"]


def test_released_swin_checkpoint_converts_and_an_r50_config_refuses_it(tmp_path, capsys) -> None:
    """A released-layout PAVE-Net with an mmdet Swin backbone (the tiny size stands in for Swin-L:
    same names, fewer blocks): backbone.X -> backbone.X, the neck takes Swin's channels."""
    from pavenet.model.swin import build_swin

    cfg_path = tmp_path / "swin_tiny.yaml"
    cfg_path.write_text(f"_base_: {R50.parent / 'pavenet_swinl.yaml'}\n"
                        "model:\n  backbone:\n    name: swin_tiny_mmdet\n")
    swin = build_swin("swin_tiny_mmdet", [1, 2, 3], 0, None)
    state = {k: v for k, v in manifest_state("official_pavenet_r50_keys.tsv").items()
             if not k.startswith(("backbone.", "neck."))}
    gen = torch.Generator().manual_seed(5)
    state.update({f"backbone.{k}": torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                  for k, v in swin.state_dict().items()})
    for i, c in enumerate(swin.channels):
        state[f"neck.convs.{i}.conv.weight"] = torch.randn(256, c, 1, 1, generator=gen)
        state[f"neck.convs.{i}.gn.weight"], state[f"neck.convs.{i}.gn.bias"] = torch.ones(256), torch.zeros(256)
    state["neck.extra_convs.0.conv.weight"] = torch.randn(256, swin.channels[-1], 3, 3, generator=gen)
    state["neck.extra_convs.0.gn.weight"], state["neck.extra_convs.0.gn.bias"] = torch.ones(256), torch.zeros(256)
    src = tmp_path / "swin.pth"
    torch.save({"state_dict": state}, src)
    report = convert_checkpoint(src, tmp_path / "out", config=cfg_path)
    assert report.used + len(report.dropped) == len(state)
    assert report.config.postprocess.top_k == 100
    from pavenet.model.loading import load_checkpoint_model

    model, _ = load_checkpoint_model(str(tmp_path / "out"))
    key = "stages.2.blocks.1.attn.w_msa.relative_position_bias_table"
    assert torch.equal(model.backbone.state_dict()[key], state["backbone." + key])
    code, err = _cli(str(src), "--out", str(tmp_path / "r50"), capsys=capsys)
    assert code == 2 and "missing" in err and "backbone." in err

"""Backbone freezing and local checkpoints; channel mapper and its masked GroupNorm."""
import pytest
import timm
import torch
from safetensors.torch import save_file
from torchvision.ops import FrozenBatchNorm2d
from torch import nn

from pavenet.model.backbone import Backbone, ChannelMapper, MaskedGroupNorm


def test_frozen_stages_and_frozen_batchnorm():
    backbone = Backbone("resnet18", [2, 3, 4], frozen_stages=1, frozen_bn=False)
    assert backbone.channels == [128, 256, 512] and backbone.strides == [8, 16, 32]
    trainable = {n.split(".")[1] for n, p in backbone.named_parameters() if p.requires_grad}
    frozen = {n.split(".")[1] for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "layer1"}  # frozen BatchNorms hold buffers, not parameters
    assert isinstance(backbone.body.bn1, FrozenBatchNorm2d)
    assert trainable == {"layer2", "layer3", "layer4"}
    assert isinstance(backbone.body.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(backbone.body.layer2[0].bn1, nn.BatchNorm2d)
    all_frozen = Backbone("resnet18", [2, 3, 4], frozen_stages=0, frozen_bn=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in all_frozen.modules())
    with pytest.raises(ValueError, match="frozen_stages=4"):
        Backbone("resnet18", [2, 3, 4], frozen_stages=4)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_checkpoint_is_loaded(tmp_path, suffix):
    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False)  # classifier keys are ignored
    path = tmp_path / f"r18{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    backbone = Backbone("resnet18", [2, 3, 4], frozen_bn=True, pretrained_path=str(path))
    assert torch.equal(backbone.body.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    assert torch.equal(backbone.body.layer4[0].bn1.running_var, source.layer4[0].bn1.running_var)


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        Backbone("resnet18", [2, 3, 4], pretrained_path=str(tmp_path / "missing.pth"))
    r18 = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), r18)
    with pytest.raises(ValueError, match="r18.pth: .* backbone weights missing"):
        Backbone("resnet34", [2, 3, 4], pretrained_path=str(r18))
    wrong = tmp_path / "r34.safetensors"
    save_file(timm.create_model("resnet34", pretrained=False).state_dict(), str(wrong))
    with pytest.raises(ValueError, match="r34.safetensors.*unexpected weights"):
        Backbone("resnet18", [2, 3, 4], pretrained_path=str(wrong))
    other = tmp_path / "wide.safetensors"
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    save_file(state, str(other))
    with pytest.raises(ValueError, match="wide.safetensors.*wrong shape"):
        Backbone("resnet18", [2, 3, 4], pretrained_path=str(other))


def test_masked_groupnorm_equals_groupnorm_on_the_valid_region():
    torch.manual_seed(0)
    norm = MaskedGroupNorm(4, 8)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    reference = nn.GroupNorm(4, 8)
    reference.load_state_dict(norm.state_dict())
    x = torch.randn(2, 8, 5, 7)
    ones = torch.ones(2, 1, 5, 7)
    assert torch.allclose(norm(x, ones), reference(x), atol=1e-5)
    padded = torch.cat([x, 10 + torch.randn(2, 8, 5, 3)], -1)
    valid = torch.cat([ones, torch.zeros(2, 1, 5, 3)], -1)
    assert torch.allclose(norm(padded, valid)[..., :7], reference(x), atol=1e-5)


def test_channel_mapper_levels_masks_and_padding_invariance():
    torch.manual_seed(0)
    mapper = ChannelMapper([16, 32], d_model=24, extra_levels=2)
    assert mapper.norms[0].num_groups == 8  # gcd(32, 24)
    small = [torch.randn(1, 16, 4, 6), torch.randn(1, 32, 2, 3)]
    big = [torch.randn(1, 16, 8, 8), torch.randn(1, 32, 4, 4)]
    for s, b in zip(small, big):
        b[..., :s.shape[-2], :s.shape[-1]] = s
    mask = torch.ones(1, 32, 32, dtype=torch.bool)
    mask[:, :16, :24] = False
    maps, masks = mapper(big, mask)
    assert [tuple(m.shape[-2:]) for m in maps] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert masks[0][0, :4, :6].logical_not().all() and masks[0][0, 4:].all()
    alone, _ = mapper(small, torch.zeros(1, 16, 24, dtype=torch.bool))
    for level in range(4):
        h, w = alone[level].shape[-2:]
        assert torch.allclose(maps[level][..., :h, :w], alone[level], atol=1e-5), level
    assert torch.equal(maps[0][0, :, 4:], torch.zeros_like(maps[0][0, :, 4:]))

"""PostProcessor: inverts the data pipeline's resize + padding, top-k selection, joint scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pavenet.config import Config
from pavenet.data.clips import RawClip, make_item
from pavenet.data.collate import collate
from pavenet.data.transforms import ClipParams
from pavenet.model.postprocess import PostProcessor, build_postprocessor


def raw_clip(width: int, height: int, rng: np.random.Generator, persons: int = 2, frames: int = 3) -> RawClip:
    """A clip of blank frames with joints spread over the original image (pixels)."""
    kp = rng.uniform([2.0, 2.0], [width - 2.0, height - 2.0], size=(persons, frames, 15, 2))
    return RawClip(
        images=[Image.new("RGB", (width, height)) for _ in range(frames)], keypoints=kp,
        visible=np.ones((persons, frames, 15), bool), present=np.ones((persons, frames), bool),
        labeled=np.ones(frames, bool), track_ids=np.arange(persons), video_id=0, key_frame=frames // 2,
        image_ids=np.arange(frames), frame_indices=np.arange(frames),
    )


def outputs_from_targets(targets: list[dict], queries: int, gen: torch.Generator) -> dict:
    """Model outputs whose first queries carry the targets' normalised keypoints."""
    B, T = len(targets), targets[0]["keypoints"].shape[1]
    keypoints = torch.rand(B, queries, T, 15, 2, generator=gen)
    logits = torch.full((B, queries), -5.0)
    for b, t in enumerate(targets):
        keypoints[b, : len(t["keypoints"])] = t["keypoints"]
        logits[b, : len(t["keypoints"])] = torch.linspace(3.0, 2.0, len(t["keypoints"]))
    return {
        "logits": logits, "keypoints": keypoints, "sigma": torch.full((B, queries, T, 15, 2), 0.2),
        "visibility": torch.zeros(B, queries, T, 15),
        "embedding": torch.nn.functional.normalize(torch.randn(B, queries, 4, generator=gen), dim=-1),
    }


def test_inverts_resize_and_padding_of_the_data_pipeline() -> None:
    rng = np.random.default_rng(0)
    raws = [raw_clip(640, 480, rng), raw_clip(333, 517, rng, persons=3)]
    items = [make_item(raws[0], ClipParams(short_side=96, max_size=160)),
             make_item(raws[1], ClipParams(short_side=72, max_size=100))]
    batch = collate(items)
    assert batch["mask"].any(), "the two clips must need padding"
    targets = batch["targets"]
    outputs = outputs_from_targets(targets, 6, torch.Generator().manual_seed(0))
    orig_sizes = torch.stack([t["orig_size"] for t in targets])
    result = PostProcessor(top_k=6)(outputs, orig_sizes)
    for b, raw in enumerate(raws):
        for t in range(3):
            people = result[b][t]
            order = people["query_index"].tolist()
            assert order[: len(raw.keypoints)] == list(range(len(raw.keypoints)))
            got = people["keypoints"][: len(raw.keypoints), :, :2].double().numpy()
            np.testing.assert_allclose(got, raw.keypoints[:, t], atol=2e-3, rtol=0)


def test_top_k_threshold_scores_and_shapes() -> None:
    gen = torch.Generator().manual_seed(1)
    B, Q, T, J, E = 2, 7, 3, 15, 5
    outputs = {
        "logits": torch.randn(B, Q, generator=gen),
        "keypoints": torch.rand(B, Q, T, J, 2, generator=gen),
        "sigma": torch.rand(B, Q, T, J, 2, generator=gen) * 1.2,
        "visibility": torch.randn(B, Q, T, J, generator=gen),
        "embedding": torch.randn(B, Q, E, generator=gen),
    }
    outputs["logits"][1] = torch.tensor([-3.0, 2.0, 0.5, -1.0, 1.0, -0.2, 0.1])
    sizes = torch.tensor([[100, 200], [50, 80]])
    result = PostProcessor(top_k=4, score_threshold=0.5)(outputs, sizes)
    assert len(result) == B and all(len(r) == T for r in result)
    people = result[1][2]
    assert people["query_index"].tolist() == [1, 4, 2, 6]
    assert people["query_index"].dtype == torch.int64
    scores = torch.sigmoid(torch.tensor([2.0, 1.0, 0.5, 0.1]))
    assert torch.allclose(people["scores"], scores)
    kept = [1, 4, 2, 6]
    conf = (1 - outputs["sigma"][1, kept, 2].mean(-1)).clamp(0, 1) * outputs["visibility"][1, kept, 2].sigmoid()
    assert torch.allclose(people["keypoints"][..., 2], scores[:, None] * conf)
    assert torch.allclose(people["keypoints"][..., 0], outputs["keypoints"][1, [1, 4, 2, 6], 2, :, 0] * 80)
    assert torch.allclose(people["keypoints"][..., 1], outputs["keypoints"][1, [1, 4, 2, 6], 2, :, 1] * 50)
    assert torch.equal(people["embedding"], outputs["embedding"][1, [1, 4, 2, 6]])
    assert people["keypoints"].shape == (4, J, 3)
    high = PostProcessor(top_k=4, score_threshold=0.7)(outputs, sizes)[1][0]
    assert high["query_index"].tolist() == [1, 4]
    assert len(result[0][0]["scores"]) == (torch.sigmoid(outputs["logits"][0]).topk(4)[0] >= 0.5).sum()


def test_bad_sizes_and_config() -> None:
    cfg = Config()
    cfg.postprocess.top_k = 3
    post = build_postprocessor(cfg)
    assert post.top_k == 3
    outputs = {"logits": torch.zeros(1, 2), "keypoints": torch.zeros(1, 2, 1, 15, 2),
               "sigma": torch.zeros(1, 2, 1, 15, 2), "embedding": torch.zeros(1, 2, 4)}
    with pytest.raises(ValueError, match="orig_sizes"):
        post(outputs, torch.tensor([100, 100]))
    assert len(post(outputs, torch.tensor([[100, 100]]))[0][0]["scores"]) == 2

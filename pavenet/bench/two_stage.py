"""A two-stage video pose pipeline (person detector + per-person top-down model), for timing only.

This is a stand-in for the two-stage video pose estimators pavenet is compared with, such as
DCPose and DSTA: a person detector runs on the key frame, then a top-down network reads, for
every detected person, crops of the T frames of the clip around that person's key-frame box and
regresses the person's key-frame joints. Its cost therefore grows linearly with the number of
people, while pavenet's does not (a fixed set of queries, whatever the crowd).

Pieces, all from torchvision:

- Detector: ``fasterrcnn_resnet50_fpn`` (the usual first stage of these pipelines), with its
  input resize set to the frame's own size so that it runs at the benchmark resolution.
- Top-down model: a ResNet-50 backbone (torchvision ``resnet50`` without its pooling and
  classifier, stride 32) on 256x192 crops taken with ``roi_align`` from each of the T frames
  around the key-frame box, and a DSTA-like joint-token head: 15 learned joint tokens attend to
  the flattened stride-32 features of the T crops through ``nn.TransformerDecoder`` layers, then
  an MLP gives (x, y) per joint in the box, mapped back to image pixels.

**Forced boxes.** The detector runs normally, for its full cost (backbone, RPN, box head, NMS),
but its output is then discarded and replaced by ``num_people`` deterministic person-shaped
boxes (:func:`grid_boxes`, 3:4 boxes on a grid over the frame). So the top-down stage always
processes exactly ``num_people`` people per frame, whatever the random detector happens to find.

**Random weights are fine for timing.** No weights are downloaded: every layer is randomly
initialised. The cost of each layer (convolutions, matrix products, attention) depends only on
tensor shapes, which the weights do not change; the only content-dependent part, the number of
detections, is forced as described above. The outputs are meaningless as poses.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.ops import roi_align

#: Top-down crop size (height, width) of SimpleBaseline / HRNet / DCPose / DSTA.
CROP_SIZE = (256, 192)
NUM_JOINTS = 15
BACKBONE_STRIDE = 32


def grid_boxes(num_people: int, height: int, width: int) -> Tensor:
    """``num_people`` deterministic (x1, y1, x2, y2) boxes in pixels, a grid of person boxes.

    The frame is split into ``ceil(sqrt(n))`` columns and as many rows as needed; each box has
    the 3:4 (width:height) shape of a top-down crop and fills 90% of its cell's limiting side.
    """
    if num_people < 1:
        raise ValueError(f"num_people must be >= 1, got {num_people}")
    cols = math.ceil(math.sqrt(num_people))
    rows = math.ceil(num_people / cols)
    cell_w, cell_h = width / cols, height / rows
    box_h = 0.9 * min(cell_h, cell_w * 4 / 3)
    box_w = box_h * 3 / 4
    boxes = []
    for i in range(num_people):
        r, c = divmod(i, cols)
        cx, cy = (c + 0.5) * cell_w, (r + 0.5) * cell_h
        boxes.append([cx - box_w / 2, cy - box_h / 2, cx + box_w / 2, cy + box_h / 2])
    return torch.tensor(boxes, dtype=torch.float32)


def backbone_size(size: int, halvings: int = 5) -> int:
    """Feature-map side of a ResNet (stride 32: five ceil-halvings) for an input side ``size``."""
    for _ in range(halvings):
        size = (size + 1) // 2
    return size


class TopDownPose(nn.Module):
    """Per-person top-down model: ResNet-50 on T crops + a DSTA-like joint-token head."""

    def __init__(self, num_frames: int = 3, num_joints: int = NUM_JOINTS,
                 crop_size: tuple[int, int] = CROP_SIZE, d_model: int = 256, num_heads: int = 8,
                 num_layers: int = 2, ffn_dim: int = 1024) -> None:
        super().__init__()
        self.num_frames, self.crop_size = num_frames, tuple(crop_size)
        self.backbone = nn.Sequential(*list(resnet50(weights=None).children())[:-2])
        self.proj = nn.Conv2d(2048, d_model, kernel_size=1)
        tokens = num_frames * backbone_size(crop_size[0]) * backbone_size(crop_size[1])
        self.pos = nn.Parameter(0.02 * torch.randn(tokens, d_model))
        self.joint_tokens = nn.Parameter(0.02 * torch.randn(num_joints, d_model))
        layer = nn.TransformerDecoderLayer(d_model, num_heads, ffn_dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers)
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 2))

    def crops(self, frames: Tensor, boxes: Tensor) -> Tensor:
        """(B, T, 3, H, W) frames, (B, N, 4) key-frame boxes -> (B*N*T, 3, h, w) crops.

        Every person is cropped from each of the T frames with its key-frame box (as DCPose and
        DSTA do); crops are ordered person-major, then frame.
        """
        b, t = frames.shape[:2]
        n = boxes.shape[1]
        image = torch.arange(b * t, device=frames.device, dtype=boxes.dtype).view(b, 1, t, 1)
        rois = torch.cat([image.expand(b, n, t, 1), boxes[:, :, None].expand(b, n, t, 4)], dim=-1)
        return roi_align(frames.flatten(0, 1), rois.reshape(-1, 5), self.crop_size,
                         spatial_scale=1.0, sampling_ratio=2, aligned=True)

    def forward(self, frames: Tensor, boxes: Tensor) -> Tensor:
        """(B, T, 3, H, W) frames and (B, N, 4) boxes -> (B, N, J, 2) key-frame joints in pixels."""
        b, n = boxes.shape[:2]
        feats = self.proj(self.backbone(self.crops(frames, boxes)))
        tokens = feats.flatten(2).transpose(1, 2).reshape(b * n, -1, feats.shape[1])
        memory = tokens + self.pos.to(tokens.dtype)
        queries = self.joint_tokens.to(tokens.dtype)[None].repeat(b * n, 1, 1)
        uv = self.head(self.decoder(queries, memory)).sigmoid().view(b, n, -1, 2)
        origin, extent = boxes[:, :, None, :2], boxes[:, :, None, 2:] - boxes[:, :, None, :2]
        return origin + uv.to(boxes.dtype) * extent


class TwoStagePose(nn.Module):
    """Person detector on the key frame, forced to N boxes, then :class:`TopDownPose`.

    ``forward(clip, num_people)``: ``clip`` (T, 3, H, W) or (B, T, 3, H, W) RGB in [0, 1] ->
    (N, 15, 2) (or (B, N, 15, 2)) key-frame joints (x, y) in pixels. See the module doc.
    """

    def __init__(self, height: int, width: int, num_frames: int = 3,
                 crop_size: tuple[int, int] = CROP_SIZE) -> None:
        super().__init__()
        self.height, self.width, self.num_frames = height, width, num_frames
        self.detector = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                min_size=min(height, width),
                                                max_size=max(height, width))
        self.top_down = TopDownPose(num_frames, crop_size=crop_size)

    def detect(self, key_frames: Tensor) -> list[dict[str, Tensor]]:
        """Run the detector (its real cost) on (B, 3, H, W) key frames; its raw output."""
        return self.detector(list(key_frames))

    def person_boxes(self, detections: list[dict[str, Tensor]], num_people: int) -> Tensor:
        """Force the detector's output to exactly ``num_people`` boxes per frame -> (B, N, 4).

        The detections are discarded and replaced by :func:`grid_boxes` (deterministic), so the
        second stage's cost is exactly that of ``num_people`` people.
        """
        device = detections[0]["boxes"].device
        boxes = grid_boxes(num_people, self.height, self.width).to(device)
        return boxes.expand(len(detections), -1, -1)

    def forward(self, clip: Tensor, num_people: int, top_down: Optional[Callable] = None) -> Tensor:
        """``top_down`` replaces :attr:`top_down` for this call (e.g. its ``torch.compile``
        version; the detector, with its data-dependent NMS shapes, then stays eager)."""
        single = clip.dim() == 4
        frames = clip[None] if single else clip
        if frames.shape[1] != self.num_frames:
            raise ValueError(f"expected clips of {self.num_frames} frames, got {frames.shape[1]}")
        detections = self.detect(frames[:, self.num_frames // 2])
        boxes = self.person_boxes(detections, num_people).to(frames.dtype)
        keypoints = (self.top_down if top_down is None else top_down)(frames, boxes)
        return keypoints[0] if single else keypoints

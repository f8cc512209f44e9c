"""Pose Query Selection and instance association between the frames of a clip (VEPE).

Every frame of a clip has the same number Q of spatial pose queries. Selection never changes a
shape (batching and ``torch.compile`` stay simple): it yields a keep mask (score above the
threshold) that later serves as an attention mask. Association links every key-frame query to
ONE query per frame: the most similar kept query of that frame (all queries when none is
kept); in the key frame a query is linked to itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def select_queries(logits: Tensor, threshold: float) -> Tensor:
    """Keep mask (B, T, Q) bool: the queries whose score sigmoid(logit) >= ``threshold``."""
    return logits.detach().sigmoid() >= threshold


def embedding_similarity(embedding: Tensor, key_frame: int) -> Tensor:
    """Cosine similarity (B, Q, T, Q) of the key-frame embeddings to every frame's.

    ``embedding`` (B, T, Q, E); entry [b, q, t, p] compares key query q with query p of frame t.
    """
    emb = F.normalize(embedding.detach().float(), dim=-1)
    return torch.einsum("bqe,btpe->bqtp", emb[:, key_frame], emb)


def pose_similarity(keypoints: Tensor, key_frame: int) -> Tensor:
    """Negative mean joint distance (B, Q, T, Q) of the key-frame poses to every frame's.

    ``keypoints`` (B, T, Q, J, 2) in [0, 1]; used when instance queries are switched off.
    """
    kpt = keypoints.detach().float()
    key = kpt[:, key_frame][:, :, None, None]  # (B, Q, 1, 1, J, 2)
    dist = (key - kpt[:, None]).norm(dim=-1).mean(-1)
    return -dist


def associate(similarity: Tensor, keep: Tensor, key_frame: int) -> Tensor:
    """Index (B, Q, T) int64 of the query linked to each key query in each frame.

    ``similarity`` (B, Q, T, Q), ``keep`` (B, T, Q). Frame t links the most similar kept
    query, or the most similar of all when frame t keeps none; the key frame links a query
    to itself.
    """
    b, q, t, _ = similarity.shape
    any_kept = keep.any(-1, keepdim=True)  # (B, T, 1)
    allowed = keep | ~any_kept
    scores = similarity.masked_fill(~allowed[:, None], float("-inf"))
    index = scores.argmax(-1)
    own = torch.arange(q, device=similarity.device).view(1, q).expand(b, q)
    return index.index_copy(2, torch.tensor([key_frame], device=index.device), own[:, :, None])


def instance_mask(index: Tensor, keep: Tensor, key_frame: int, use_instances: bool) -> Tensor:
    """Which frame queries each key query may attend to: (B, Q, T*Q) bool, True = allowed.

    With ``use_instances`` only the linked query of each frame (``index`` (B, Q, T)) if it is
    kept; otherwise every kept query. A key query always sees itself, so no row is empty.
    """
    b, q, t = index.shape
    if use_instances:
        allowed = F.one_hot(index, q).bool() & keep[:, None]
    else:
        allowed = keep[:, None].expand(b, q, t, q).clone()
    allowed[:, :, key_frame] |= torch.eye(q, dtype=torch.bool, device=index.device)
    return allowed.flatten(2)


def gather_linked(values: Tensor, index: Tensor) -> Tensor:
    """Per-frame values of the linked queries.

    ``values`` (B, T, Q, ...) per frame and query, ``index`` (B, Q, T) -> (B, Q, T, ...).
    """
    b, t, q = values.shape[:3]
    rest = values.shape[3:]
    idx = index.transpose(1, 2).reshape(b, t, q, *([1] * len(rest))).expand(b, t, q, *rest)
    return torch.gather(values, 2, idx).transpose(1, 2)

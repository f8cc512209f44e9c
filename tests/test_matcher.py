"""HungarianMatcher against a float64 loop oracle and brute-force optimal assignments."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from target_factory import random_outputs, random_target

from pavenet.data.joints import OKS_SIGMAS
from pavenet.model.matcher import HungarianMatcher, supervision

ALPHA, GAMMA = 0.25, 2.0
SIGMAS = [0.03, 0.08, 0.06, 0.1]


def oracle_cost(logit: float, pred: torch.Tensor, target: dict, g: int, keyframe: bool, w: tuple) -> float:
    """Matching cost of one query for track ``g`` by explicit loops (float64)."""
    p = 1.0 / (1.0 + math.exp(-logit))
    cls = ALPHA * (1 - p) ** GAMMA * -math.log(p + 1e-8) - (1 - ALPHA) * p**GAMMA * -math.log(1 - p + 1e-8)
    T, J = pred.shape[:2]
    l1, n, oks_values = 0.0, 0, []
    for t in range(T):
        if not (target["labeled"][t] and target["present"][g, t]) or (keyframe and t != target["key_frame"]):
            continue
        ks = []
        for j in range(J):
            if not target["visible"][g, t, j]:
                continue
            dx, dy = (pred[t, j] - target["keypoints"][g, t, j].double()).tolist()
            l1 += abs(dx) + abs(dy)
            n += 1
            ks.append(math.exp(-(dx * dx + dy * dy) / (2 * float(target["areas"][g, t]) * (2 * SIGMAS[j]) ** 2)))
        if ks:
            oks_values.append(sum(ks) / len(ks))
    kpt = l1 / (2 * n) if n else 0.0
    oks_cost = 1.0 - sum(oks_values) / len(oks_values) if oks_values else 0.0
    return w[0] * cls + w[1] * kpt + w[2] * oks_cost


def brute_force(cost: list[list[float]]) -> float:
    """Minimum total cost of a one-to-one assignment of min(Q, G) pairs."""
    Q, G = len(cost), len(cost[0])
    if G <= Q:
        return min(sum(cost[q][g] for g, q in enumerate(qs)) for qs in itertools.permutations(range(Q), G))
    return min(sum(cost[q][g] for q, g in enumerate(gs)) for gs in itertools.permutations(range(G), Q))


@pytest.mark.parametrize("keyframe", [False, True])
def test_matcher_reaches_brute_force_optimum(keyframe: bool) -> None:
    gen = torch.Generator().manual_seed(1 if keyframe else 0)
    weights = (2.0, 70.0, 7.0)
    matcher = HungarianMatcher(*weights, mode="keyframe" if keyframe else "clip", sigmas=SIGMAS)
    for trial in range(25):
        Q, G, T = int(torch.randint(1, 7, (1,), generator=gen)), int(torch.randint(1, 5, (1,), generator=gen)), 3
        target = random_target(G, T, len(SIGMAS), gen)
        out = random_outputs(1, Q, T, len(SIGMAS), gen)
        out = {k: v.double() for k, v in out.items()}
        (q_idx, g_idx), = matcher(out, [target])
        active = supervision(target, keyframe).active.nonzero().flatten().tolist()
        assert q_idx.dtype == torch.int64 and g_idx.dtype == torch.int64
        assert len(q_idx) == len(g_idx) == min(Q, len(active))
        assert len(set(q_idx.tolist())) == len(q_idx) and len(set(g_idx.tolist())) == len(g_idx)
        assert set(g_idx.tolist()) <= set(active)
        assert q_idx.tolist() == sorted(q_idx.tolist())
        if not active:
            continue
        cost = [[oracle_cost(float(out["logits"][0, q]), out["keypoints"][0, q], target, g, keyframe, weights)
                 for g in active] for q in range(Q)]
        full = matcher.cost_matrix(out["logits"][0], out["keypoints"][0], target, supervision(target, keyframe))
        assert torch.allclose(full[:, active], torch.tensor(cost, dtype=torch.float64), atol=1e-9)
        got = sum(cost[q][active.index(g)] for q, g in zip(q_idx.tolist(), g_idx.tolist()))
        assert got == pytest.approx(brute_force(cost), abs=1e-9), f"trial {trial}"


def test_matcher_batch_with_different_and_zero_person_counts() -> None:
    gen = torch.Generator().manual_seed(3)
    matcher = HungarianMatcher()
    targets = [random_target(3, 3, 15, gen), random_target(0, 3, 15, gen), random_target(1, 3, 15, gen)]
    targets[0]["present"][:] = True
    targets[2]["present"][:] = True
    indices = matcher(random_outputs(3, 5, 3, 15, gen), targets)
    assert [len(q) for q, _ in indices] == [3, 0, 1]
    assert sorted(indices[0][1].tolist()) == [0, 1, 2] and indices[2][1].tolist() == [0]


def test_matcher_finds_the_obvious_assignment() -> None:
    gen = torch.Generator().manual_seed(4)
    target = random_target(2, 3, 15, gen)
    target["present"][:] = True
    target["visible"][:] = True
    out = random_outputs(1, 4, 3, 15, gen)
    out["keypoints"][0, 3] = target["keypoints"][0]
    out["keypoints"][0, 1] = target["keypoints"][1]
    out["logits"][:] = 0.0
    (q_idx, g_idx), = HungarianMatcher()(out, [target])
    assert dict(zip(q_idx.tolist(), g_idx.tolist())) == {1: 1, 3: 0}


def test_query_mask_restricts_the_candidates() -> None:
    gen = torch.Generator().manual_seed(5)
    target = random_target(2, 3, 15, gen)
    target["present"][:] = True
    out = random_outputs(1, 6, 3, 15, gen)
    mask = torch.tensor([[False, True, False, True, True, False]])
    (q_idx, _), = HungarianMatcher()(out, [target], query_mask=mask)
    assert set(q_idx.tolist()) <= {1, 3, 4} and len(q_idx) == 2


def test_keyframe_mode_ignores_other_frames() -> None:
    gen = torch.Generator().manual_seed(6)
    target = random_target(3, 3, 15, gen, key_frame=1)
    target["present"][:] = True
    target["labeled"][:] = True
    out = random_outputs(1, 6, 3, 15, gen)
    moved = dict(target, keypoints=target["keypoints"].clone())
    moved["keypoints"][:, [0, 2]] = torch.rand(3, 2, 15, 2, generator=gen)
    hidden = dict(moved, visible=target["visible"].clone(), present=target["present"].clone())
    hidden["visible"][:, [0, 2]] = ~target["visible"][:, [0, 2]]
    hidden["present"][:, [0, 2]] = False

    def cost(mode: str, tgt: dict) -> torch.Tensor:
        sup = supervision(tgt, mode == "keyframe")
        return HungarianMatcher(mode=mode).cost_matrix(out["logits"][0], out["keypoints"][0], tgt, sup)

    assert torch.equal(cost("keyframe", moved), cost("keyframe", target))
    assert torch.equal(cost("keyframe", hidden), cost("keyframe", target))
    assert not torch.allclose(cost("clip", moved), cost("clip", target))


def test_default_sigmas_are_posetrack() -> None:
    gen = torch.Generator().manual_seed(7)
    target = random_target(1, 1, 15, gen)
    target["present"][:] = True
    target["visible"][:] = False
    target["visible"][0, 0, 5] = True
    out = random_outputs(1, 1, 1, 15, gen)
    out["keypoints"][0, 0, 0, 5] = target["keypoints"][0, 0, 5] + torch.tensor([0.01, 0.0])
    cost = HungarianMatcher(0.0, 0.0, 1.0).cost_matrix(None, out["keypoints"][0], target, supervision(target, False))
    expected = 1 - math.exp(-1e-4 / (2 * float(target["areas"][0, 0]) * (2 * OKS_SIGMAS[5]) ** 2))
    assert float(cost[0, 0]) == pytest.approx(expected, rel=1e-3)


def test_match_many_takes_the_k_cheapest_queries_per_track() -> None:
    from pavenet.model.matcher import _k_cheapest

    cost = torch.tensor([[0.1, 0.5], [0.2, 0.1], [0.9, 0.3], [0.4, 0.8], [0.3, 0.9]])
    rows, cols = _k_cheapest(cost, 2)
    # track 0 wants rows 0, 1; track 1 wants rows 1, 2; row 1 is cheaper for track 1
    assert rows.tolist() == [0, 1, 2] and cols.tolist() == [0, 1, 1]
    rows, cols = _k_cheapest(cost, 3)
    assert rows.tolist() == [0, 1, 2, 4] and cols.tolist() == [0, 1, 1, 0]
    brute = {}
    for c in range(2):
        for r in cost[:, c].argsort()[:3].tolist():
            if r not in brute or cost[r, c] < cost[r, brute[r]]:
                brute[r] = c
    assert dict(zip(rows.tolist(), cols.tolist())) == brute

"""Articulated 2-D figures for the synthetic video generator: body model, motion, drawing.

A figure is a stick-and-blob person with the 15 model joints (``joints.MODEL`` order). Its
skeleton lives in a body frame (x = the person's left, y = down, z = towards the camera when
facing it, origin at the pelvis), is turned by a yaw angle about the vertical axis and projected
orthographically; so walking swings, waving arms and turning all come out of a few smooth
joint-angle curves. Parts are drawn far to near with PIL, each limb segment in its own shade
(left / right and upper / lower differ) and every joint marked with a disc whose colour is
fixed per joint type (:data:`MARKER_COLOURS`), so a joint can be told from the image alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from pavenet.data.joints import MODEL

#: Marker colour of each model joint: left joints warm, right joints cool, head joints neutral.
MARKER_COLOURS: tuple[tuple[int, int, int], ...] = (
    (20, 20, 20), (150, 60, 200), (245, 245, 245),  # nose, head_bottom, head_top
    (230, 30, 30), (30, 80, 230),  # shoulders (left, right)
    (250, 140, 0), (0, 200, 230),  # elbows
    (250, 230, 0), (0, 210, 90),  # wrists
    (240, 60, 160), (110, 60, 240),  # hips
    (170, 90, 30), (40, 140, 140),  # knees
    (255, 180, 180), (170, 230, 170),  # ankles
)

J = {name: i for i, name in enumerate(MODEL.names)}
#: Limb segments (joint a, joint b, part kind) drawn as thick lines.
SEGMENTS: tuple[tuple[int, int, str], ...] = (
    (J["left_shoulder"], J["left_elbow"], "upper_arm"), (J["left_elbow"], J["left_wrist"], "forearm"),
    (J["right_shoulder"], J["right_elbow"], "upper_arm"), (J["right_elbow"], J["right_wrist"], "forearm"),
    (J["left_hip"], J["left_knee"], "thigh"), (J["left_knee"], J["left_ankle"], "shin"),
    (J["right_hip"], J["right_knee"], "thigh"), (J["right_knee"], J["right_ankle"], "shin"),
)


@dataclass
class Figure:
    """One person of a synthetic video: body shape, clothing and motion parameters."""

    height: float  # pixels from head top to ankles (standing)
    bones: np.ndarray  # torso, head, hip half-width, shoulder half-width, upper arm, forearm, thigh, shin
    start: tuple[float, float]  # pelvis position at frame 0
    velocity: tuple[float, float]  # pixels per frame
    bounds: tuple[float, float, float, float]  # x0, x1, y0, y1 the pelvis bounces within
    yaw: tuple[float, float, float, float]  # mean, amplitude, angular frequency, phase
    walk: tuple[float, float, float]  # leg swing amplitude, angular frequency, phase
    arm_mode: str  # "swing" | "wave_left" | "wave_right" | "jacks"
    arm: tuple[float, float]  # angular frequency, phase of the arm motion
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    texture: Image.Image  # RGB image of the frame size, pasted through the torso mask


def _reflect(value: float, lo: float, hi: float) -> float:
    """Bounce ``value`` between ``lo`` and ``hi`` (triangle wave)."""
    span = max(hi - lo, 1e-6)
    u = (value - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


def _direction(abduction: float, flexion: float, side: float) -> np.ndarray:
    """Unit limb direction in the body frame: abduction sideways, flexion forwards."""
    return np.array([side * math.sin(abduction), math.cos(abduction) * math.cos(flexion),
                     math.cos(abduction) * math.sin(flexion)])


def _arm_angles(fig: Figure, t: float, side: float, leg_phase: float) -> tuple[float, float, float, float]:
    """(upper abduction, upper flexion, forearm abduction, forearm flexion) of one arm."""
    w, ph = fig.arm
    waving = (fig.arm_mode == "wave_left" and side > 0) or (fig.arm_mode == "wave_right" and side < 0)
    if waving:
        return 2.3, 0.0, 2.75 + 0.45 * math.sin(w * t + ph), 0.0
    if fig.arm_mode == "jacks":
        a = 0.25 + 1.3 * (0.5 - 0.5 * math.cos(w * t + ph))
        return a, 0.0, a * 1.25, 0.0
    swing = -side * 0.8 * fig.walk[0] * math.sin(leg_phase) + 0.1
    return 0.15, swing, 0.2, swing + 0.5


def _body_joints(fig: Figure, t: float) -> np.ndarray:
    """(15, 3) joint positions in the body frame (pixels, pelvis at the origin)."""
    torso, head, hip_w, sh_w, upper, fore, thigh, shin = fig.bones * fig.height
    amp, w, ph = fig.walk
    leg_phase = w * t + ph
    pts = np.zeros((len(MODEL), 3))
    pts[J["head_bottom"]] = (0.0, -torso, 0.0)
    pts[J["head_top"]] = (0.0, -torso - head, 0.0)
    pts[J["nose"]] = (0.0, -torso - 0.42 * head, 0.42 * head)
    for side, name in ((1.0, "left"), (-1.0, "right")):
        sh = np.array([side * sh_w, -0.9 * torso, 0.0])
        ua, uf, fa, ff = _arm_angles(fig, t, side, leg_phase)
        elbow = sh + upper * _direction(ua, uf, side)
        pts[J[f"{name}_shoulder"]], pts[J[f"{name}_elbow"]] = sh, elbow
        pts[J[f"{name}_wrist"]] = elbow + fore * _direction(fa, ff, side)
        hip = np.array([side * hip_w, 0.0, 0.0])
        tf = side * amp * math.sin(leg_phase)
        bend = amp * (0.4 + 0.8 * max(0.0, math.sin(leg_phase + (0.0 if side > 0 else math.pi) - 0.6)))
        la = 0.06 if fig.arm_mode != "jacks" else 0.06 + 0.2 * (0.5 - 0.5 * math.cos(fig.arm[0] * t + fig.arm[1]))
        knee = hip + thigh * _direction(la, tf, side)
        pts[J[f"{name}_hip"]], pts[J[f"{name}_knee"]] = hip, knee
        pts[J[f"{name}_ankle"]] = knee + shin * _direction(la, tf - bend, side)
    return pts


def figure_pose(fig: Figure, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Joints of ``fig`` at frame ``t`` -> ((15, 2) image pixels, (15,) depth, larger = nearer)."""
    mean, amp, w, ph = fig.yaw
    psi = mean + amp * math.sin(w * t + ph)
    body = _body_joints(fig, t)
    c, s = math.cos(psi), math.sin(psi)
    x = body[:, 0] * c + body[:, 2] * s
    z = -body[:, 0] * s + body[:, 2] * c
    bx0, bx1, by0, by1 = fig.bounds
    px = _reflect(fig.start[0] + fig.velocity[0] * t, bx0, bx1)
    py = _reflect(fig.start[1] + fig.velocity[1] * t, by0, by1)
    return np.stack([px + x, py + body[:, 1]], axis=1), z


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(v * factor)))) for v in colour)  # type: ignore[return-value]


def _segment_colour(fig: Figure, kind: str, left: bool) -> tuple[int, int, int]:
    base = {"upper_arm": fig.shirt, "forearm": fig.skin, "thigh": fig.trousers, "shin": fig.trousers}[kind]
    factor = {"upper_arm": 1.0, "forearm": 0.95, "thigh": 1.0, "shin": 0.6}[kind]
    return _shade(base, factor * (1.15 if left else 0.7))


def head_box(xy: np.ndarray, fig: Figure) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the drawn head ellipse."""
    top, bottom = xy[J["head_top"]], xy[J["head_bottom"]]
    half_w = 0.42 * fig.bones[1] * fig.height
    cx = 0.5 * (top[0] + bottom[0])
    return cx - half_w, top[1], cx + half_w, bottom[1]


def _parts(fig: Figure, xy: np.ndarray, z: np.ndarray) -> list[tuple[float, str, object]]:
    """Drawable parts as (depth, kind, payload), to be drawn in increasing depth."""
    parts: list[tuple[float, str, object]] = []
    for a, b, kind in SEGMENTS:
        left = MODEL.names[a].startswith("left")
        width = (0.05 if "arm" in kind else 0.065) * fig.height
        parts.append((0.5 * (z[a] + z[b]), "limb", (a, b, width, _segment_colour(fig, kind, left))))
    parts.append((0.0, "torso", None))
    parts.append((0.01 * fig.height, "head", None))
    parts.sort(key=lambda p: p[0])
    return parts


def _torso_polygon(xy: np.ndarray, fig: Figure) -> list[tuple[float, float]]:
    pad = 0.03 * fig.height
    ls, rs, lh, rh = (xy[J[n]] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    sgn = 1.0 if ls[0] >= rs[0] else -1.0
    return [(ls[0] + sgn * pad, ls[1] - pad), (rs[0] - sgn * pad, rs[1] - pad),
            (rh[0] - sgn * pad, rh[1] + pad), (lh[0] + sgn * pad, lh[1] + pad)]


def _limb(draw: ImageDraw.ImageDraw, p: np.ndarray, q: np.ndarray, width: float, fill) -> None:
    w = max(2, int(round(width)))
    draw.line([tuple(p - 0.5), tuple(q - 0.5)], fill=fill, width=w)
    r = w / 2.0
    for c in (p, q):
        draw.ellipse([c[0] - 0.5 - r, c[1] - 0.5 - r, c[0] - 0.5 + r, c[1] - 0.5 + r], fill=fill)


def draw_figure(image: Image.Image, label: Image.Image, value: int, fig: Figure,
                xy: np.ndarray, z: np.ndarray) -> None:
    """Draw ``fig`` posed at ``xy`` onto ``image`` and its silhouette with ``value`` onto ``label``.

    Pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``, so a joint at ``(x, y)`` lands on pixel
    ``(floor(y), floor(x))``.
    """
    draw, ldraw = ImageDraw.Draw(image), ImageDraw.Draw(label)
    for _, kind, payload in _parts(fig, xy, z):
        if kind == "limb":
            a, b, width, colour = payload  # type: ignore[misc]
            _limb(draw, xy[a], xy[b], width, colour)
            _limb(ldraw, xy[a], xy[b], width, value)
        elif kind == "torso":
            poly = [(x - 0.5, y - 0.5) for x, y in _torso_polygon(xy, fig)]
            mask = Image.new("L", image.size, 0)
            ImageDraw.Draw(mask).polygon(poly, fill=255)
            image.paste(fig.texture, (0, 0), mask)
            ldraw.polygon(poly, fill=value)
        else:
            x0, y0, x1, y1 = head_box(xy, fig)
            box = [x0 - 0.5, y0 - 0.5, x1 - 0.5, y1 - 0.5]
            draw.ellipse(box, fill=fig.skin)
            draw.chord(box, 180, 360, fill=fig.hair)
            ldraw.ellipse(box, fill=value)
    r = max(2.0, 0.024 * fig.height)
    for j, (x, y) in enumerate(xy):
        draw.ellipse([x - 0.5 - r, y - 0.5 - r, x - 0.5 + r, y - 0.5 + r], fill=MARKER_COLOURS[j])

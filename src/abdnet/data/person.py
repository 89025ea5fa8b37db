"""A synthetic person: an appearance drawn from a random stream, rendered into an image.

``make_appearance(rng)`` draws what stays with a person across cameras (clothing colours
and patterns, skin, hair, hat, bag, height, build); ``render_person(appearance, box=...,
view=..., yy=..., xx=..., rng=...)`` paints that person, shaded, into a box of an image
of any size (a re-ID crop, or a frame of footage) and returns the colours and the mask, to
be put over whatever the caller drew behind. Front and back views differ: a backpack is a
full patch from behind and two straps from the front; jackets and prints show only from the
front. The synthetic data set (``abdnet.data.synthetic``) is built on these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FRONT",
    "BACK",
    "SIDE_LEFT",
    "SIDE_RIGHT",
    "Appearance",
    "PersonBox",
    "PersonLayer",
    "make_appearance",
    "render_person",
]

# Views of a person (``render_person(view=...)``); a side view faces left or right.
FRONT, BACK, SIDE_LEFT, SIDE_RIGHT = 0, 1, 2, 3

# Named clothing colours (RGB in [0, 1]); identities draw from them with a small jitter so
# that colour is a strong but not unique cue, as in real data.
PALETTE = np.array(
    [
        (0.80, 0.10, 0.10),  # red
        (0.50, 0.05, 0.08),  # dark red
        (0.95, 0.50, 0.10),  # orange
        (0.95, 0.85, 0.20),  # yellow
        (0.15, 0.60, 0.20),  # green
        (0.10, 0.30, 0.15),  # dark green
        (0.10, 0.55, 0.55),  # teal
        (0.45, 0.70, 0.95),  # light blue
        (0.15, 0.30, 0.80),  # blue
        (0.08, 0.10, 0.30),  # navy
        (0.45, 0.20, 0.60),  # purple
        (0.95, 0.55, 0.70),  # pink
        (0.92, 0.92, 0.90),  # white
        (0.70, 0.70, 0.70),  # light grey
        (0.45, 0.45, 0.45),  # grey
        (0.08, 0.08, 0.08),  # black
        (0.45, 0.28, 0.12),  # brown
        (0.85, 0.75, 0.55),  # beige
    ],
    dtype=np.float32,
)
_SKIN = np.array(
    [
        (0.96, 0.80, 0.69),
        (0.88, 0.67, 0.52),
        (0.76, 0.55, 0.40),
        (0.55, 0.38, 0.26),
        (0.36, 0.24, 0.16),
    ],
    dtype=np.float32,
)
_HAIR = np.array(
    [
        (0.05, 0.04, 0.03),
        (0.25, 0.15, 0.08),
        (0.55, 0.40, 0.20),
        (0.85, 0.75, 0.45),
        (0.6, 0.6, 0.6),
        (0.5, 0.2, 0.1),
    ],
    dtype=np.float32,
)


@dataclass(frozen=True)
class Appearance:
    """What a person looks like in every camera (colours RGB in [0, 1], shape (3,))."""

    upper: np.ndarray  # (3,) main colour of the upper garment
    upper2: np.ndarray  # (3,) second colour (stripes, shirt under a jacket, print)
    upper_pattern: int  # 0 solid, 1 h-stripes, 2 v-stripes, 3 checks, 4 open jacket, 5 chest print
    period: float  # stripe period in body-height units
    short_sleeves: bool
    lower: np.ndarray  # (3,)
    lower_cut: int  # 0 trousers, 1 shorts, 2 skirt
    shoes: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    long_hair: bool
    hat: np.ndarray | None
    bag: int  # 0 none, 1 backpack, 2 shoulder bag
    bag_colour: np.ndarray
    bag_side: int  # +1 / -1: which hip the shoulder bag hangs on (front view)
    height: float  # fraction of the image height
    build: float  # width multiplier


def _colour(rng: np.random.Generator, palette: np.ndarray, jitter: float = 0.05) -> np.ndarray:
    c = palette[rng.integers(len(palette))] + rng.uniform(-jitter, jitter, 3)
    return np.clip(c, 0.0, 1.0).astype(np.float32)


def make_appearance(rng: np.random.Generator) -> Appearance:
    """A person's appearance drawn from ``rng`` (the same stream gives the same person)."""
    upper = _colour(rng, PALETTE)
    upper2 = _colour(rng, PALETTE)
    while np.abs(upper2 - upper).sum() < 0.6:  # the second colour must be visibly different
        upper2 = _colour(rng, PALETTE)
    return Appearance(
        upper=upper,
        upper2=upper2,
        upper_pattern=int(rng.choice(6, p=[0.3, 0.16, 0.12, 0.12, 0.15, 0.15])),
        period=float(rng.uniform(0.035, 0.07)),
        short_sleeves=bool(rng.random() < 0.35),
        lower=_colour(rng, PALETTE),
        lower_cut=int(rng.choice(3, p=[0.6, 0.2, 0.2])),
        shoes=_colour(rng, PALETTE[[12, 14, 15, 16]]),
        skin=_colour(rng, _SKIN, 0.03),
        hair=_colour(rng, _HAIR, 0.03),
        long_hair=bool(rng.random() < 0.35),
        hat=_colour(rng, PALETTE) if rng.random() < 0.2 else None,
        bag=int(rng.choice(3, p=[0.45, 0.3, 0.25])),
        bag_colour=_colour(rng, PALETTE),
        bag_side=int(rng.choice([-1, 1])),
        height=float(rng.uniform(0.78, 0.93)),
        build=float(rng.uniform(0.85, 1.2)),
    )


@dataclass(frozen=True)
class PersonBox:
    """Where a person stands in the image, in pixels: top-left corner, width and height."""

    x0: float
    y0: float
    width: float
    height: float


@dataclass(frozen=True)
class PersonLayer:
    """A rendered person: ``colour`` (H, W, 3) float32 in [0, ~1.15], valid where ``mask``."""

    colour: np.ndarray  # (H, W, 3)
    mask: np.ndarray  # (H, W) bool


def box_mask(
    u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float
) -> np.ndarray:
    """Pixels with ``u0 <= u < u1`` and ``v0 <= v < v1``."""
    return (u >= u0) & (u < u1) & (v >= v0) & (v < v1)


@dataclass(frozen=True)
class _Body:
    """Body coordinates and the masks of the body parts, over the image's pixels."""

    u: np.ndarray  # (H, W) across the body, 0..1 (mirrored so that the person faces +u)
    v: np.ndarray  # (H, W) down the body, 0 (top of the head) .. 1 (feet)
    c: np.ndarray  # (H, W) |u - 0.5|, distance from the body's centre line
    side: bool
    mirror: bool
    torso: np.ndarray
    arm: np.ndarray
    legs: np.ndarray
    shoes: np.ndarray
    neck: np.ndarray
    head: np.ndarray


def _body(
    box: PersonBox, view: int, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator
) -> _Body:
    u = (xx - box.x0) / box.width
    v = (yy - box.y0) / box.height
    mirror = view == SIDE_LEFT or view == BACK  # back view: left and right swap in the image
    if mirror:
        u = 1.0 - u
    side = view >= SIDE_LEFT
    stride = rng.uniform(0.0, 0.22)  # walking: legs apart
    c = np.abs(u - 0.5)
    if side:
        torso = (c < 0.14) & (v >= 0.16) & (v < 0.54)
        arm = (np.abs(u - 0.5 - rng.uniform(-0.04, 0.04)) < 0.055) & (v >= 0.18) & (v < 0.50)
        leg_a = (np.abs(u - 0.5 + stride * (v - 0.53)) < 0.075) & (v >= 0.53) & (v < 0.94)
        leg_b = (np.abs(u - 0.5 - stride * (v - 0.53)) < 0.075) & (v >= 0.53) & (v < 0.94)
        head = ((u - 0.5) / 0.12) ** 2 + ((v - 0.085) / 0.075) ** 2 < 1
    else:
        shoulder = 0.17 + 0.03 * np.clip((v - 0.16) / 0.04, 0, 1)
        torso = (c < shoulder) & (v >= 0.16) & (v < 0.54)
        swing = rng.uniform(-0.03, 0.03)
        arm = (c >= 0.19) & (c < 0.28) & (v >= 0.17 + swing) & (v < 0.50 + swing)
        leg_a = (np.abs(u - 0.40 + stride * 0.5 * (v - 0.53)) < 0.085) & (v >= 0.53) & (v < 0.94)
        leg_b = (np.abs(u - 0.60 - stride * 0.5 * (v - 0.53)) < 0.085) & (v >= 0.53) & (v < 0.94)
        head = ((u - 0.5) / 0.14) ** 2 + ((v - 0.085) / 0.075) ** 2 < 1
    legs = leg_a | leg_b
    return _Body(
        u=u,
        v=v,
        c=c,
        side=side,
        mirror=mirror,
        torso=torso,
        arm=arm,
        legs=legs,
        shoes=legs & (v >= 0.90),
        neck=(c < 0.05) & (v >= 0.14) & (v < 0.17),
        head=head,
    )


class _Canvas:
    """The person's colours and mask; later parts are painted over earlier ones."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.colour = np.zeros((*shape, 3), dtype=np.float32)
        self.mask = np.zeros(shape, dtype=bool)

    def paint(self, region: np.ndarray, colour: np.ndarray) -> None:
        self.colour[region] = colour
        self.mask[region] = True


def _paint_lower(canvas: _Canvas, p: Appearance, b: _Body) -> None:
    """Trousers, shorts or a skirt, and the shoes."""
    if p.lower_cut == 0:
        canvas.paint(b.legs, p.lower)
    elif p.lower_cut == 1:
        canvas.paint(b.legs & (b.v >= 0.70), p.skin)
        canvas.paint(b.legs & (b.v < 0.70), p.lower)
    else:
        canvas.paint(b.legs, p.skin)
        skirt = (b.c < 0.17 + 0.25 * (b.v - 0.53)) & (b.v >= 0.52) & (b.v < 0.76)
        canvas.paint(skirt, p.lower)
    canvas.paint(b.shoes, p.shoes)


def _paint_upper(canvas: _Canvas, p: Appearance, b: _Body, view: int) -> None:
    """The upper garment with its pattern (pattern coordinates follow the body, not the
    image), sleeves, hands and neck."""
    u, v = b.u, b.v
    upper = b.torso | b.arm
    pat = p.upper_pattern
    top = np.empty_like(canvas.colour)
    top[:] = p.upper
    if pat == 1 or pat == 3:
        stripes = (np.floor((v - 0.16) / p.period) % 2) == 1
    if pat == 2 or pat == 3:
        vstripes = (np.floor(u / (p.period * 1.6)) % 2) == 1
    if pat == 1:
        top[stripes] = p.upper2
    elif pat == 2:
        top[vstripes] = p.upper2
    elif pat == 3:
        top[stripes ^ vstripes] = p.upper2
    elif pat == 4 and view == FRONT:  # open jacket: the shirt shows only from the front
        top[b.c < 0.07] = p.upper2
    elif pat == 5 and view == FRONT:  # chest print
        top[box_mask(u, v, 0.38, 0.62, 0.23, 0.35)] = p.upper2
    canvas.colour[upper] = top[upper]
    canvas.mask |= upper
    if p.short_sleeves:
        canvas.paint(b.arm & (v >= 0.30), p.skin)
    canvas.paint((b.arm & (v >= 0.49)) | b.neck, p.skin)  # hands


def _paint_bag(canvas: _Canvas, p: Appearance, b: _Body, view: int) -> None:
    """A backpack (a patch from behind, straps from the front) or a shoulder bag."""
    u, v, c = b.u, b.v, b.c
    if p.bag == 1:  # backpack
        if view == BACK:
            canvas.paint(box_mask(u, v, 0.30, 0.70, 0.19, 0.44), p.bag_colour)
        elif view == FRONT:
            canvas.paint((c >= 0.10) & (c < 0.14) & (v >= 0.16) & (v < 0.36), p.bag_colour)
        else:  # behind (the person faces +u)
            canvas.paint(box_mask(u, v, 0.21, 0.37, 0.19, 0.44), p.bag_colour)
    elif p.bag == 2:  # shoulder bag on one hip, strap across the chest
        hip_side = p.bag_side * (-1 if b.mirror else 1)
        bx = 0.72 if hip_side > 0 else 0.14
        if not b.side or hip_side > 0:
            canvas.paint(box_mask(u, v, bx, bx + 0.16, 0.42, 0.56), p.bag_colour)
        if not b.side:
            # strap from the opposite shoulder to the bag: distance to a line in (u, v)
            ua, va, ub, vb = (0.30, 0.17, 0.78, 0.44) if hip_side > 0 else (0.70, 0.17, 0.22, 0.44)
            d = np.abs((vb - va) * (u - ua) - (ub - ua) * (v - va)) / np.hypot(vb - va, ub - ua)
            canvas.paint((d < 0.018) & (v >= 0.17) & (v < 0.44) & b.torso, p.bag_colour)


def _paint_head(canvas: _Canvas, p: Appearance, b: _Body, view: int) -> None:
    """Face or back of the head, hair (short or long) and an optional hat."""
    u, v, c, head = b.u, b.v, b.c, b.head
    if view == BACK:
        canvas.paint(head, p.hair)
        if p.long_hair:
            canvas.paint((c < 0.12) & (v >= 0.1) & (v < 0.25), p.hair)
    else:
        canvas.paint(head, p.skin)
        if b.side:
            canvas.paint(head & ((u < 0.5) | (v < 0.04)), p.hair)  # back of the head (faces +u)
            if p.long_hair:
                canvas.paint(box_mask(u, v, 0.37, 0.5, 0.08, 0.24), p.hair)
        else:
            canvas.paint(head & (v < 0.045), p.hair)
            if p.long_hair:
                canvas.paint(head & (c > 0.09), p.hair)
                canvas.paint((c >= 0.1) & (c < 0.15) & (v >= 0.08) & (v < 0.22), p.hair)
    if p.hat is not None:
        canvas.paint(head & (v < 0.05), p.hat)
        canvas.paint((c < 0.17) & (v >= 0.04) & (v < 0.06), p.hat)


def render_person(
    appearance: Appearance,
    *,
    box: PersonBox,
    view: int,
    yy: np.ndarray,
    xx: np.ndarray,
    rng: np.random.Generator,
) -> PersonLayer:
    """Paint one person standing in ``box`` of an image and shade it.

    ``yy``, ``xx`` (H, W) float32 are the pixel-centre coordinates of the image
    (``np.mgrid`` + 0.5); ``view`` is ``FRONT``, ``BACK``, ``SIDE_LEFT`` or ``SIDE_RIGHT``.
    ``rng`` draws the pose (stride, arm swing) and the light's direction. The caller
    composites: ``image[layer.mask] = layer.colour[layer.mask]``.
    """
    body = _body(box, view, yy, xx, rng)
    canvas = _Canvas(yy.shape)
    _paint_lower(canvas, appearance, body)
    _paint_upper(canvas, appearance, body, view)
    _paint_bag(canvas, appearance, body, view)
    _paint_head(canvas, appearance, body, view)
    # shading: light from one side, darker at the body's edges
    light = 0.8 + 0.35 * np.clip(1.0 - np.abs(body.u - 0.5 - rng.uniform(-0.3, 0.3)) * 1.6, 0, 1)
    return PersonLayer(colour=canvas.colour * light[..., None], mask=canvas.mask)

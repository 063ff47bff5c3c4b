"""Offline demo tasks: small image-classification tasks generated deterministically in seconds.

Each task has its own input domain (background, palette, drawing style), like the real suite
where MNIST, EuroSAT and Cars share nothing. Images are 32x32 RGB ``uint8``. One task reuses the
handwritten digits that scikit-learn ships; the others are drawn procedurally with NumPy.

The same generators, with another seed and a shifted style, produce the captioned corpus that
pretrains the tiny CLIP (:mod:`taskmerge.models.tiny`), the way web data pretrains real CLIP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Bump when any generator changes: cached data and checkpoints built from it are rebuilt.
GENERATOR_VERSION = 4

IMAGE_SIZE = 32
TRAIN_SIZE = 3000
TEST_SIZE = 1000

_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)


@dataclass(frozen=True)
class DemoStyle:
    """Per-domain look: background colour, foreground colour and noise level."""

    background: tuple[int, int, int]
    foreground: tuple[int, int, int]
    noise: float = 12.0


Drawer = Callable[[np.random.Generator, int, DemoStyle], np.ndarray]


@dataclass(frozen=True)
class DemoTask:
    """A generated task: class names, templates and a per-class image drawer."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    draw: Drawer
    style: DemoStyle
    epochs: int = 3

    def generate(
        self, seed: int, size: int, style: DemoStyle | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``size`` images with balanced random labels; returns (uint8 NHWC, int64 N)."""
        rng = np.random.default_rng(seed)
        labels = rng.permutation(np.arange(size) % len(self.classnames)).astype(np.int64)
        images = np.stack([self.draw(rng, int(label), style or self.style) for label in labels])
        return images, labels


# ----------------------------------------------------------------------------- drawing helpers
def _canvas(rng: np.random.Generator, style: DemoStyle) -> np.ndarray:
    base = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    base[:] = np.asarray(style.background, np.float32) + rng.normal(0, 10, 3)
    return base


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    alpha = np.clip(mask, 0.0, 1.0)[..., None]
    canvas *= 1.0 - alpha
    canvas += alpha * colour


def _finish(canvas: np.ndarray, rng: np.random.Generator, style: DemoStyle) -> np.ndarray:
    canvas += rng.normal(0, style.noise, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _jitter(
    rng: np.random.Generator, colour: tuple[int, int, int], amount: float = 20
) -> np.ndarray:
    return np.asarray(colour, np.float32) + rng.normal(0, amount, 3)


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    return np.clip(r + 0.5 - np.hypot(_XX - cx, _YY - cy), 0, 1)


def _polygon(cx: float, cy: float, r: float, sides: int, angle: float) -> np.ndarray:
    """Anti-aliased regular polygon by intersecting half-planes."""
    mask = np.ones_like(_XX)
    apothem = r * np.cos(np.pi / sides)
    for k in range(sides):
        theta = angle + 2 * np.pi * k / sides
        dist = (_XX - cx) * np.cos(theta) + (_YY - cy) * np.sin(theta)
        mask = np.minimum(mask, np.clip(apothem + 0.5 - dist, 0, 1))
    return mask


def _segment(x0: float, y0: float, x1: float, y1: float, half_width: float) -> np.ndarray:
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((_XX - x0) * dx + (_YY - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
    dist = np.hypot(_XX - (x0 + t * dx), _YY - (y0 + t * dy))
    return np.clip(half_width + 0.5 - dist, 0, 1)


# ----------------------------------------------------------------------------- task drawers
_DIGITS: np.ndarray | None = None


def _digit_bank() -> np.ndarray:
    """scikit-learn's 1797 handwritten 8x8 digits, grouped by label (list index = digit)."""
    global _DIGITS
    if _DIGITS is None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        _DIGITS = np.empty(10, dtype=object)
        for label in range(10):
            _DIGITS[label] = digits.images[digits.target == label] / 16.0
    return _DIGITS


def _draw_digit(rng: np.random.Generator, label: int, style: DemoStyle) -> np.ndarray:
    bank = _digit_bank()[label]
    glyph = bank[rng.integers(len(bank))]
    scale = 3  # 24 pixels
    big = np.kron(glyph, np.ones((scale, scale)))
    size = big.shape[0]
    y, x = rng.integers(0, IMAGE_SIZE - size + 1, 2)
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    mask[y : y + size, x : x + size] = big
    canvas = _canvas(rng, style)
    _paint(canvas, mask, _jitter(rng, style.foreground))
    return _finish(canvas, rng, style)


def _draw_shape(rng: np.random.Generator, label: int, style: DemoStyle) -> np.ndarray:
    r = rng.uniform(6, 12)
    cx, cy = rng.uniform(r + 1, IMAGE_SIZE - r - 1, 2)
    angle = rng.uniform(0, 2 * np.pi)
    if label == 0:  # circle
        mask = _disc(cx, cy, r)
    elif label == 1:  # square
        mask = _polygon(cx, cy, r, 4, angle)
    elif label == 2:  # triangle
        mask = _polygon(cx, cy, r, 3, angle)
    elif label == 3:  # ring
        mask = _disc(cx, cy, r) - _disc(cx, cy, r * 0.55)
    elif label == 4:  # cross
        hw = r * 0.28
        mask = np.maximum(
            _segment(cx - r, cy, cx + r, cy, hw), _segment(cx, cy - r, cx, cy + r, hw)
        )
    elif label == 5:  # pentagon
        mask = _polygon(cx, cy, r, 5, angle)
    elif label == 6:  # hexagon
        mask = _polygon(cx, cy, r, 6, angle)
    else:  # star: five spokes
        mask = np.zeros_like(_XX)
        for k in range(5):
            theta = angle + 2 * np.pi * k / 5
            tip = (cx + r * np.cos(theta), cy + r * np.sin(theta))
            mask = np.maximum(mask, _segment(cx, cy, *tip, r * 0.18))
    canvas = _canvas(rng, style)
    _paint(canvas, mask, _jitter(rng, style.foreground))
    return _finish(canvas, rng, style)


_COLOURS = {
    "red": (210, 40, 40),
    "orange": (235, 130, 30),
    "yellow": (225, 210, 40),
    "lime": (150, 220, 50),
    "green": (40, 160, 60),
    "cyan": (40, 200, 210),
    "blue": (40, 70, 210),
    "purple": (120, 50, 170),
    "magenta": (210, 50, 190),
    "brown": (130, 80, 40),
}


def _draw_colour(rng: np.random.Generator, label: int, style: DemoStyle) -> np.ndarray:
    colour = list(_COLOURS.values())[label]
    canvas = _canvas(rng, style)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(3, 7)
        cx, cy = rng.uniform(r, IMAGE_SIZE - r, 2)
        mask = _disc(cx, cy, r) if rng.random() < 0.5 else _polygon(cx, cy, r, 4, rng.uniform(0, 7))
        _paint(canvas, mask, _jitter(rng, colour, 25))
    return _finish(canvas, rng, style)


def _draw_texture(rng: np.random.Generator, label: int, style: DemoStyle) -> np.ndarray:
    period = rng.uniform(3.5, 8)
    phase = rng.uniform(0, period)
    xx, yy = _rotated_grid(rng.normal(0, 0.12))
    wave_x = np.sin(2 * np.pi * (xx + phase) / period)
    wave_y = np.sin(2 * np.pi * (yy + phase) / period)
    if label == 0:  # horizontal stripes
        mask = wave_y > 0
    elif label == 1:  # vertical stripes
        mask = wave_x > 0
    elif label == 2:  # diagonal stripes
        mask = np.sin(2 * np.pi * (xx + yy + phase) / period) > 0
    elif label == 3:  # anti-diagonal stripes
        mask = np.sin(2 * np.pi * (xx - yy + phase) / period) > 0
    elif label == 4:  # checkerboard
        mask = (wave_x > 0) ^ (wave_y > 0)
    elif label == 5:  # dots
        mask = (wave_x > 0.6) & (wave_y > 0.6)
    elif label == 6:  # grid
        mask = (wave_x > 0.75) | (wave_y > 0.75)
    else:  # zigzag
        mask = (
            np.sin(2 * np.pi * (yy + 2.5 * np.abs(((xx / period) % 2) - 1) * period) / period) > 0
        )
    canvas = _canvas(rng, style)
    _paint(canvas, mask.astype(np.float32), _jitter(rng, style.foreground))
    return _finish(canvas, rng, style)


def _rotated_grid(angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    x, y = _XX - IMAGE_SIZE / 2, _YY - IMAGE_SIZE / 2
    return c * x - s * y + IMAGE_SIZE / 2, s * x + c * y + IMAGE_SIZE / 2


def _draw_count(rng: np.random.Generator, label: int, style: DemoStyle) -> np.ndarray:
    count = label + 1
    canvas = _canvas(rng, style)
    centres: list[tuple[float, float]] = []
    while len(centres) < count:
        cx, cy = rng.uniform(4, IMAGE_SIZE - 4, 2)
        if all(np.hypot(cx - x, cy - y) > 6 for x, y in centres):
            centres.append((cx, cy))
    for cx, cy in centres:
        _paint(canvas, _disc(cx, cy, rng.uniform(1.8, 2.8)), _jitter(rng, style.foreground))
    return _finish(canvas, rng, style)


_DIRECTIONS = ("east", "southeast", "south", "southwest", "west", "northwest", "north", "northeast")


def _draw_arrow(rng: np.random.Generator, label: int, style: DemoStyle) -> np.ndarray:
    theta = label * np.pi / 4 + rng.normal(0, 0.12)
    length = rng.uniform(9, 13)
    cx, cy = rng.uniform(12, IMAGE_SIZE - 12, 2)
    dx, dy = np.cos(theta) * length, np.sin(theta) * length
    tip = (cx + dx, cy + dy)
    mask = _segment(cx - dx, cy - dy, *tip, 1.2)
    for side in (-1, 1):
        wing = theta + np.pi + side * 0.6
        mask = np.maximum(
            mask, _segment(*tip, tip[0] + 7 * np.cos(wing), tip[1] + 7 * np.sin(wing), 1.2)
        )
    canvas = _canvas(rng, style)
    _paint(canvas, mask, _jitter(rng, style.foreground))
    return _finish(canvas, rng, style)


_PLACES = (
    "top left",
    "top",
    "top right",
    "left",
    "centre",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)


def _draw_position(rng: np.random.Generator, label: int, style: DemoStyle) -> np.ndarray:
    oy, ox = divmod(label, 3)
    ox, oy = ox - 1, oy - 1
    cx = IMAGE_SIZE / 2 + ox * 9 + rng.normal(0, 1.5)
    cy = IMAGE_SIZE / 2 + oy * 9 + rng.normal(0, 1.5)
    mask = _polygon(cx, cy, rng.uniform(4, 6), 4, rng.uniform(0, 7))
    canvas = _canvas(rng, style)
    _paint(canvas, mask, _jitter(rng, style.foreground))
    return _finish(canvas, rng, style)


_RADII = (2.5, 4.0, 6.0, 8.5, 11.0, 14.0)


def _draw_size(rng: np.random.Generator, label: int, style: DemoStyle) -> np.ndarray:
    r = _RADII[label] * rng.uniform(0.92, 1.08)
    cx, cy = rng.uniform(min(r, 15), IMAGE_SIZE - min(r, 15), 2)
    canvas = _canvas(rng, style)
    _paint(canvas, _disc(cx, cy, r), _jitter(rng, style.foreground))
    return _finish(canvas, rng, style)


# ----------------------------------------------------------------------------- the task set
DEMO_TASKS: dict[str, DemoTask] = {
    task.name: task
    for task in (
        DemoTask(
            "Digits",
            ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
            ("a photo of the digit {}.", "a handwritten {}.", "the number {}."),
            _draw_digit,
            DemoStyle((10, 10, 10), (240, 240, 240)),
        ),
        DemoTask(
            "Shapes",
            ("circle", "square", "triangle", "ring", "cross", "pentagon", "hexagon", "star"),
            ("a photo of a {}.", "a drawing of a {} shape.", "a {}."),
            _draw_shape,
            DemoStyle((20, 30, 90), (230, 230, 200)),
        ),
        DemoTask(
            "Colors",
            tuple(_COLOURS),
            ("a photo of something {}.", "a {} object.", "the colour {}."),
            _draw_colour,
            DemoStyle((128, 128, 128), (0, 0, 0), noise=20),
        ),
        DemoTask(
            "Textures",
            (
                "horizontal stripes",
                "vertical stripes",
                "diagonal stripes",
                "anti-diagonal stripes",
                "checkerboard",
                "dots",
                "grid",
                "zigzag",
            ),
            ("a photo of a {} texture.", "a {} pattern.", "{}."),
            _draw_texture,
            DemoStyle((200, 170, 120), (90, 50, 20)),
        ),
        DemoTask(
            "Counting",
            ("one", "two", "three", "four", "five", "six", "seven", "eight"),
            ("a photo of {} dots.", "{} spots.", "a picture with {} dots."),
            _draw_count,
            DemoStyle((235, 225, 190), (30, 30, 30)),
        ),
        DemoTask(
            "Arrows",
            _DIRECTIONS,
            ("an arrow pointing {}.", "a photo of an arrow that points {}.", "{} arrow."),
            _draw_arrow,
            DemoStyle((120, 200, 240), (20, 20, 120)),
        ),
        DemoTask(
            "Position",
            _PLACES,
            ("a square in the {}.", "a photo of a square at the {}.", "{}."),
            _draw_position,
            DemoStyle((245, 245, 245), (200, 20, 20)),
        ),
        DemoTask(
            "Sizes",
            ("tiny", "small", "medium", "big", "large", "huge"),
            ("a photo of a {} ball.", "a {} circle.", "a {} disc."),
            _draw_size,
            DemoStyle((40, 110, 40), (250, 200, 60)),
        ),
    )
}


def random_style(rng: np.random.Generator) -> DemoStyle:
    """A random look, used for the pretraining corpus (a domain shift from every task)."""
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    foreground = tuple(int(255 - v + rng.integers(-40, 41)) % 256 for v in background)
    return DemoStyle(background, foreground, noise=float(rng.uniform(5, 20)))  # type: ignore[arg-type]

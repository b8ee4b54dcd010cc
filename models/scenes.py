"""Synthetic scenes of coloured shapes with matching captions.

The demo CLIP model is trained and measured on these scenes, because no real
CLIP weights can be had offline. Everything is deterministic given a seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 220, 20),
    "green": (30, 170, 40),
    "blue": (30, 70, 220),
    "purple": (140, 40, 170),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}
SIZES: tuple[str, ...] = ("small", "large")
# Centre of each named position, as a fraction of the canvas side.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
    "centre": (0.5, 0.5),
}
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
RADIUS: dict[str, float] = {"small": 0.09, "large": 0.17}

# Colour–shape pairs never drawn in training, to measure generalisation to
# unseen combinations of known words.
HELD_OUT_COMBOS: frozenset[tuple[str, str]] = frozenset(
    {("purple", "star"), ("orange", "square"), ("white", "circle"), ("green", "triangle")}
)

_PREFIXES = ("", "a photo of ", "an image of ", "a picture of ", "there is ")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    position: str

    def phrase(self, *, size: bool = True, position: bool = True) -> str:
        """'a small red circle on the left', with optional attributes left out."""
        words = ["a"]
        if size:
            words.append(self.size)
        words += [self.colour, self.shape]
        if position:
            words.append(POSITION_PHRASES[self.position])
        return " ".join(words)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]
    noisy: bool
    seed: int

    def caption(self) -> str:
        """The canonical full caption: every object with every attribute, in a fixed order."""
        order = list(POSITIONS)
        objects = sorted(self.objects, key=lambda o: order.index(o.position))
        return " and ".join(o.phrase() for o in objects)


def random_scene(
    rng: random.Random,
    *,
    exclude: Iterable[tuple[str, str]] = (),
    require: Iterable[tuple[str, str]] = (),
    max_objects: int = 3,
) -> Scene:
    """Draw a scene of 1..max_objects objects at distinct positions.

    `exclude` lists colour–shape pairs that must not appear; `require`, if not
    empty, means at least one object is one of those pairs.
    """
    excluded = set(exclude)
    required = list(require)
    n = rng.randint(1, max_objects)
    positions = rng.sample(list(POSITIONS), n)
    objects: list[SceneObject] = []
    for i, position in enumerate(positions):
        if i == 0 and required:
            colour, shape = rng.choice(required)
        else:
            while True:
                colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
                if (colour, shape) not in excluded:
                    break
        objects.append(SceneObject(shape, colour, rng.choice(SIZES), position))
    rng.shuffle(objects)
    return Scene(tuple(objects), _background(rng, objects), rng.random() < 0.5, rng.randrange(2**31))


def _background(rng: random.Random, objects: list[SceneObject]) -> tuple[int, int, int]:
    # A background too close to an object's colour would hide the object.
    while True:
        bg = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        if all(math.dist(bg, COLOURS[o.colour]) > 110 for o in objects):
            return bg


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw the scene as an RGB image of size×size pixels (2× supersampled)."""
    rng = random.Random(scene.seed)
    big = size * 2
    image = Image.new("RGB", (big, big), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fx, fy = POSITIONS[obj.position]
        cx = (fx + rng.uniform(-0.04, 0.04)) * big
        cy = (fy + rng.uniform(-0.04, 0.04)) * big
        r = RADIUS[obj.size] * big * rng.uniform(0.9, 1.1)
        _draw_shape(draw, obj.shape, cx, cy, r, COLOURS[obj.colour])
    image = image.resize((size, size), Image.Resampling.BOX)
    if scene.noisy:
        pixels = np.asarray(image, dtype=np.float32)
        noise = np.random.default_rng(scene.seed).normal(0.0, 18.0, pixels.shape)
        image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    return image


def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple[int, int, int]
) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = r * 0.85
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif shape == "triangle":
        points = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in _angles(3)]
        draw.polygon(points, fill=fill)
    elif shape == "star":
        points = []
        for i, a in enumerate(_angles(10)):
            radius = r if i % 2 == 0 else r * 0.45
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        draw.polygon(points, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _angles(n: int) -> list[float]:
    # Start pointing up so triangles and stars stand upright.
    return [-math.pi / 2 + 2 * math.pi * i / n for i in range(n)]


def perturb(scene: Scene, rng: random.Random, *, exclude: Iterable[tuple[str, str]] = ()) -> Scene:
    """The scene with one attribute (colour, shape, size or position) of one object changed.

    Such near-copies are hard negatives: telling them apart needs every word of
    the caption bound to the right object.
    """
    excluded = set(exclude)
    objects = list(scene.objects)
    i = rng.randrange(len(objects))
    obj = objects[i]
    taken = {o.position for o in objects}
    attributes = ["colour", "shape", "size"] + (["position"] if len(taken) < len(POSITIONS) else [])
    while True:
        attribute = rng.choice(attributes)
        if attribute == "colour":
            new = SceneObject(obj.shape, rng.choice([c for c in COLOURS if c != obj.colour]), obj.size, obj.position)
        elif attribute == "shape":
            new = SceneObject(rng.choice([s for s in SHAPES if s != obj.shape]), obj.colour, obj.size, obj.position)
        elif attribute == "size":
            new = SceneObject(obj.shape, obj.colour, "large" if obj.size == "small" else "small", obj.position)
        else:
            new = SceneObject(obj.shape, obj.colour, obj.size, rng.choice([p for p in POSITIONS if p not in taken]))
        if (new.colour, new.shape) not in excluded:
            break
    objects[i] = new
    return Scene(tuple(objects), _background(rng, objects), scene.noisy, rng.randrange(2**31))


def training_caption(scene: Scene, rng: random.Random, *, full: bool | None = None) -> str:
    """A caption in one of several phrasings; may leave out attributes or objects.

    With `full` (or, when None, half the time) every object is named with every
    attribute (as in the canonical caption, but in random order and with a
    random prefix); otherwise sizes and positions are dropped at random and
    some objects may be left out.
    """
    objects = list(scene.objects)
    rng.shuffle(objects)
    if full if full is not None else rng.random() < 0.5:
        phrases = [o.phrase() for o in objects]
    else:
        keep = objects[: rng.randint(1, len(objects))]
        with_size, with_position = rng.random() < 0.5, rng.random() < 0.5
        phrases = [o.phrase(size=with_size, position=with_position) for o in keep]
    return rng.choice(_PREFIXES) + " and ".join(phrases)


def scene_set(
    seed: int,
    count: int,
    *,
    exclude: Iterable[tuple[str, str]] = (),
    require: Iterable[tuple[str, str]] = (),
) -> list[Scene]:
    """`count` scenes drawn from a generator seeded with `seed`."""
    rng = random.Random(seed)
    exclude, require = tuple(exclude), tuple(require)
    return [random_scene(rng, exclude=exclude, require=require) for _ in range(count)]

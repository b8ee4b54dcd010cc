"""Synthetic scenes of coloured shapes with matching captions.

The demo CLIP model is trained and measured on these scenes, because no real
CLIP weights can be had offline. Everything is deterministic given a seed.

Two generators: `random_scene` draws the original, narrow scenes (two sizes,
plain or noisy backgrounds, a 64-pixel canvas), kept unchanged so figures
measured on them stay comparable; `varied_scene` draws from a wider range
(any size from small to most of the picture for a lone shape, gradient
backgrounds too, canvases of 48 to 256 pixels), which the demo models are
trained and measured on as well.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import permutations

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

# Varied scenes: the radius of each size word is drawn from a range (a fraction of
# the canvas side), with a gap between the two so the word is never a guess. A
# lone large shape may be far larger (up to nearly filling the picture); past
# CENTRED_ABOVE it has no room to be anywhere but the centre.
SCALES: dict[str, tuple[float, float]] = {"small": (0.07, 0.11), "large": (0.14, 0.19)}
LONE_LARGE_MAX = 0.45
CENTRED_ABOVE = 0.3
CANVAS_SIZES: tuple[int, ...] = (48, 64, 96, 128, 192, 256)
# The canvases the demo models are trained on: what a model sees is the picture
# resized to its input size (64), and larger canvases only cost more to draw.
TRAINING_CANVASES: tuple[int, ...] = (48, 64, 64, 96, 128)

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
    # Radius as a fraction of the canvas side; None: RADIUS[size], give or take 10%.
    scale: float | None = None

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
    # The side in pixels `render` draws at unless told otherwise.
    canvas: int = 64
    # A second background colour: the background fades from `background` to it.
    gradient: tuple[int, int, int] | None = None

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
    # Sorted: a set's order changes from one process to the next (string hashing is salted).
    required = sorted(require)
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


def varied_scene(
    rng: random.Random,
    *,
    exclude: Iterable[tuple[str, str]] = (),
    require: Iterable[tuple[str, str]] = (),
    max_objects: int = 3,
    count: int | None = None,
    canvases: Sequence[int] = CANVAS_SIZES,
) -> Scene:
    """Draw a scene from a wider range than `random_scene`: 1..max_objects (or `count`) objects.

    Each object's radius is drawn from its size word's range (SCALES); a lone
    large shape may be up to LONE_LARGE_MAX of the canvas side, and is centred
    past CENTRED_ABOVE. Backgrounds are plain or a fade between two colours,
    either with or without noise; the canvas is one of `canvases`. `exclude`
    and `require` as for `random_scene`.
    """
    excluded = set(exclude)
    required = sorted(require)
    n = count if count is not None else rng.randint(1, max_objects)
    objects: list[SceneObject] = []
    for i, position in enumerate(rng.sample(list(POSITIONS), n)):
        if i == 0 and required:
            colour, shape = rng.choice(required)
        else:
            while True:
                colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
                if (colour, shape) not in excluded:
                    break
        size = rng.choice(SIZES)
        if n == 1 and size == "large":
            scale = rng.uniform(SCALES["large"][0], LONE_LARGE_MAX)
            if scale > CENTRED_ABOVE:
                position = "centre"
        else:
            scale = _scale(rng, size, lone=n == 1, position=position)
        objects.append(SceneObject(shape, colour, size, position, scale))
    rng.shuffle(objects)
    background = _background(rng, objects)
    gradient = _gradient(rng, objects, background) if rng.random() < 0.4 else None
    noisy = rng.random() < 0.4
    return Scene(tuple(objects), background, noisy, rng.randrange(2**31), rng.choice(canvases), gradient)


def _background(rng: random.Random, objects: list[SceneObject]) -> tuple[int, int, int]:
    # A background too close to an object's colour would hide the object.
    while True:
        bg = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        if all(math.dist(bg, COLOURS[o.colour]) > 110 for o in objects):
            return bg


def _gradient(rng: random.Random, objects: list[SceneObject], start: tuple[int, int, int]) -> tuple[int, int, int]:
    # Every colour along the fade, not only its ends, must stay clear of the objects.
    while True:
        end = _background(rng, objects)
        steps = [tuple(a + (b - a) * t / 4 for a, b in zip(start, end, strict=True)) for t in range(1, 4)]
        if all(math.dist(c, COLOURS[o.colour]) > 110 for c in steps for o in objects):
            return end


def _scale(rng: random.Random, size: str, *, lone: bool, position: str) -> float:
    """A radius for the size word: a lone large shape may be far larger than one among others."""
    low, high = SCALES[size]
    if lone and size == "large":
        high = LONE_LARGE_MAX if position == "centre" else CENTRED_ABOVE
    return rng.uniform(low, high)


def render(scene: Scene, size: int | None = None) -> Image.Image:
    """Draw the scene as an RGB image of size×size pixels (default: the scene's canvas), 2× supersampled."""
    size = scene.canvas if size is None else size
    rng = random.Random(scene.seed)
    big = size * 2
    if scene.gradient is None:
        image = Image.new("RGB", (big, big), scene.background)
    else:
        image = _fade(scene.background, scene.gradient, rng.uniform(0, 2 * math.pi), big)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fx, fy = POSITIONS[obj.position]
        if obj.scale is None:
            cx = (fx + rng.uniform(-0.04, 0.04)) * big
            cy = (fy + rng.uniform(-0.04, 0.04)) * big
            r = RADIUS[obj.size] * big * rng.uniform(0.9, 1.1)
        else:
            # Moved a little, but kept whole inside the picture however large it is.
            r = obj.scale
            cx = min(max(fx + rng.uniform(-0.05, 0.05), r), 1 - r) * big
            cy = min(max(fy + rng.uniform(-0.05, 0.05), r), 1 - r) * big
            r *= big
        _draw_shape(draw, obj.shape, cx, cy, r, COLOURS[obj.colour])
    image = image.resize((size, size), Image.Resampling.BOX)
    if scene.noisy:
        pixels = np.asarray(image, dtype=np.float32)
        noise = np.random.default_rng(scene.seed).normal(0.0, 18.0, pixels.shape)
        image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    return image


def _fade(start: tuple[int, int, int], end: tuple[int, int, int], angle: float, side: int) -> Image.Image:
    """A side×side picture fading linearly from `start` to `end` along the direction `angle`."""
    axis = np.linspace(-0.5, 0.5, side, dtype=np.float32)
    along = axis[None, :] * math.cos(angle) + axis[:, None] * math.sin(angle)
    t = ((along - along.min()) / (along.max() - along.min()))[..., None]
    pixels = np.asarray(start, np.float32) * (1 - t) + np.asarray(end, np.float32) * t
    return Image.fromarray(pixels.round().astype(np.uint8))


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
            new = replace(obj, colour=rng.choice([c for c in COLOURS if c != obj.colour]))
        elif attribute == "shape":
            new = replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
        elif attribute == "size":
            new = replace(obj, size="large" if obj.size == "small" else "small")
        else:
            new = replace(obj, position=rng.choice([p for p in POSITIONS if p not in taken]))
        if (new.colour, new.shape) not in excluded:
            break
    if new.scale is not None and attribute in ("size", "position"):
        # A varied scene's radius follows its size word and has to fit its new place.
        new = replace(new, scale=_scale(rng, new.size, lone=len(objects) == 1, position=new.position))
    objects[i] = new
    background = _background(rng, objects)
    if scene.canvas == 64 and scene.gradient is None and all(o.scale is None for o in objects):
        return Scene(tuple(objects), background, scene.noisy, rng.randrange(2**31))
    gradient = None if scene.gradient is None else _gradient(rng, objects, background)
    return Scene(tuple(objects), background, scene.noisy, rng.randrange(2**31), scene.canvas, gradient)


def with_shape(scene: Scene, index: int, shape: str) -> Scene:
    """The scene with object `index` drawn as `shape`; nothing else changes, the render seed included.

    The copies of a scene in every shape differ only in shape: what telling
    shapes apart is measured on.
    """
    objects = list(scene.objects)
    objects[index] = replace(objects[index], shape=shape)
    return replace(scene, objects=tuple(objects))


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


@dataclass(frozen=True)
class Mention:
    """What a caption says of one object; None: the attribute is not named."""

    shape: str | None
    colour: str | None
    size: str | None
    position: str | None

    def fits(self, obj: SceneObject) -> bool:
        return (
            (self.shape is None or self.shape == obj.shape)
            and (self.colour is None or self.colour == obj.colour)
            and (self.size is None or self.size == obj.size)
            and (self.position is None or self.position == obj.position)
        )

    def words(self, *, noun: bool) -> str:
        """'a small red circle on the left'; without a shape, 'a red shape' (`noun`) or 'a red'."""
        words = ["a", *(w for w in (self.size, self.colour, self.shape) if w is not None)]
        if self.shape is None and noun:
            words.append("shape")
        if self.position is not None:
            words.append(POSITION_PHRASES[self.position])
        return " ".join(words)


@dataclass(frozen=True)
class Description:
    """A caption and what it claims, so whether it is true of any scene can be checked.

    A `complete` description names every object with every attribute: it is
    true only of scenes holding exactly those objects. Otherwise it is true of
    every scene holding (at least) objects that fit its mentions, one object each.
    """

    text: str
    mentions: tuple[Mention, ...]
    complete: bool

    def holds_for(self, scene: Scene) -> bool:
        objects = scene.objects
        if len(self.mentions) > len(objects) or (self.complete and len(self.mentions) != len(objects)):
            return False
        fitting = [[i for i, o in enumerate(objects) if m.fits(o)] for m in self.mentions]
        if not all(fitting):
            return False
        return any(
            all(i in f for i, f in zip(chosen, fitting, strict=True))
            for chosen in permutations(range(len(objects)), len(self.mentions))
        )


def describe(scene: Scene, rng: random.Random, *, full: bool | None = None, about: int | None = None) -> Description:
    """A caption of the scene in one of many phrasings, with what it claims.

    With `full` (or, when None, 40% of the time) every object is named with
    every attribute, in random order; otherwise some objects may be left out
    and sizes, positions, and either the colours or the shapes may be left out
    (a shape left out reads "a red shape" or "a red", as a zero-shot label
    "red" does in "a photo of a {}."). `about` is an object every partial
    caption names with its shape. A random prefix ("a photo of ", ...) and
    sometimes a full stop.
    """
    order = list(range(len(scene.objects)))
    rng.shuffle(order)
    if full if full is not None else rng.random() < 0.4:
        mentions = [Mention(o.shape, o.colour, o.size, o.position) for o in (scene.objects[i] for i in order)]
        complete, noun = True, False
    else:
        keep = order[: rng.randint(1, len(order))]
        if about is not None and about not in keep:
            keep[0] = about
        with_size, with_position = rng.random() < 0.5, rng.random() < 0.5
        drop = rng.random()
        with_colour, with_shape = drop >= 0.2, drop < 0.2 or drop >= 0.4 or about is not None
        mentions = [
            Mention(
                o.shape if with_shape else None,
                o.colour if with_colour else None,
                o.size if with_size else None,
                o.position if with_position else None,
            )
            for o in (scene.objects[i] for i in keep)
        ]
        complete, noun = False, rng.random() < 0.5
    text = " and ".join(m.words(noun=noun) for m in mentions)
    stop = "." if rng.random() < 0.3 else ""
    return Description(rng.choice(_PREFIXES) + text + stop, tuple(mentions), complete)


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


def varied_set(
    seed: int,
    count: int,
    *,
    exclude: Iterable[tuple[str, str]] = (),
    require: Iterable[tuple[str, str]] = (),
    objects: int | None = None,
) -> list[Scene]:
    """`count` varied scenes (of `objects` objects each, or 1 to 3) drawn from a generator seeded with `seed`."""
    rng = random.Random(seed)
    exclude, require = tuple(exclude), tuple(require)
    return [varied_scene(rng, exclude=exclude, require=require, count=objects) for _ in range(count)]

"""Measure the demo CLIP on held-out generated scenes: what it knows of colour and of shape.

    python -m demo.eval_clip [--checkpoint models/weights/demo.pt] [--model demo] [--count 200]

Zero-shot classification, as `POST /v1/classify` does it (the image against
"a photo of a {}." for each label, the best first), over `2 * count` lone
shapes of any colour, shape, size (small to nearly the whole picture),
position, background (plain or a fade, with or without noise) and canvas
(48 to 256 pixels): the colour over the 8 colour labels, the shape over the 4
shape labels, and the pair over the 32 "colour shape" labels.

Text→image Recall@1 among scenes that differ only in shape: `count` scenes,
each drawn in all four shapes of one of its objects (everything else equal,
the render included); each copy's canonical caption must rank that copy
first of the four (chance: 0.25). Once for lone shapes, once for scenes of
1 to 3 objects.

Text→image Recall@1 as first measured (scenes like the training ones of the
first demo model: two sizes, plain or noisy, 64 pixels): `count` scenes never
seen, and `count` scenes each holding a colour–shape pair held out of
training. The query is each scene's canonical caption; a hit is a top-ranked
image whose own canonical caption equals the query (two scenes can share one).

Scenes with colour–shape pairs held out of training are left out of the
first measures, and measured apart (printed after them). The model is loaded
through the service's own loader (load_clip).
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo.scenes import COLOURS, HELD_OUT_COMBOS, SHAPES, Scene, render, scene_set, varied_set, with_shape
from models.clip import DEMO_CHECKPOINT, DEMO_MODEL, DEMO_VIT_MODEL, ClipTowers, load_clip

EVAL_SEED = 1_000_003
UNSEEN_SEED = 2_000_003
LONE_SEED = 4_000_037
SHAPE_SEED = 5_000_011
# The default template of POST /v1/classify.
TEMPLATE = "a photo of a {}."

TARGETS = {"colour": 0.95, "shape": 0.90, "colour+shape": 0.85, "shape-only R@1": 0.90}


def encode_images(towers: ClipTowers, scenes: list[Scene], chunk: int = 256) -> np.ndarray:
    """Unit image rows of the scenes, each drawn at its own canvas size and prepared as the service does."""
    return np.concatenate(
        [
            towers.image.encode([towers.image.preprocess(render(s)) for s in scenes[start : start + chunk]])
            for start in range(0, len(scenes), chunk)
        ]
    )


def recall_at_1(towers: ClipTowers, scenes: list[Scene]) -> float:
    """Fraction of scenes whose caption ranks a caption-equivalent image first."""
    captions = [s.caption() for s in scenes]
    images = encode_images(towers, scenes)
    texts = towers.text.encode(captions)
    best = np.argmax(texts @ images.T, axis=1)
    return float(np.mean([captions[j] == captions[i] for i, j in enumerate(best)]))


@dataclass(frozen=True)
class ZeroShot:
    """Zero-shot accuracy over lone shapes, per attribute."""

    colour: float
    shape: float
    pair: float


def zero_shot(towers: ClipTowers, scenes: list[Scene]) -> ZeroShot:
    """Accuracy of classifying each lone shape's colour, shape and colour+shape, as /v1/classify ranks labels."""
    images = encode_images(towers, scenes)
    objects = [s.objects[0] for s in scenes]

    def accuracy(labels: list[str], truth: list[str]) -> float:
        rows = towers.text.encode([TEMPLATE.format(label) for label in labels])
        best = np.argmax(images @ rows.T, axis=1)
        return float(np.mean([labels[j] == t for j, t in zip(best, truth, strict=True)]))

    pairs = [f"{c} {s}" for c in COLOURS for s in SHAPES]
    return ZeroShot(
        colour=accuracy(list(COLOURS), [o.colour for o in objects]),
        shape=accuracy(list(SHAPES), [o.shape for o in objects]),
        pair=accuracy(pairs, [f"{o.colour} {o.shape}" for o in objects]),
    )


def shape_groups(scenes: list[Scene], seed: int = SHAPE_SEED) -> list[tuple[list[Scene], list[bool]]]:
    """Each scene drawn in all four shapes of one of its objects, and which copies are queried.

    A copy whose changed object is a colour–shape pair held out of training
    stays in its group as an image but is not queried.
    """
    rng = random.Random(seed)
    groups = []
    for scene in scenes:
        index = rng.randrange(len(scene.objects))
        colour = scene.objects[index].colour
        copies = [with_shape(scene, index, shape) for shape in SHAPES]
        groups.append((copies, [(colour, shape) not in HELD_OUT_COMBOS for shape in SHAPES]))
    return groups


def shape_recall_at_1(towers: ClipTowers, groups: list[tuple[list[Scene], list[bool]]]) -> float:
    """Fraction of queried copies whose canonical caption ranks that copy first within its group."""
    copies = [copy for group, _ in groups for copy in group]
    images = encode_images(towers, copies).reshape(len(groups), len(SHAPES), -1)
    texts = towers.text.encode([c.caption() for c in copies]).reshape(len(groups), len(SHAPES), -1)
    best = np.argmax(np.einsum("gqd,gid->gqi", texts, images), axis=2)
    hits = [int(best[g, i]) == i for g, (_, queried) in enumerate(groups) for i in range(len(SHAPES)) if queried[i]]
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument(
        "--model", default=DEMO_MODEL, help=f"the checkpoint's config: {DEMO_MODEL} or {DEMO_VIT_MODEL}"
    )
    args = parser.parse_args()
    n = args.count
    towers = load_clip(args.model, str(args.checkpoint), "cpu", fallback_to_demo=False)

    lone = zero_shot(towers, varied_set(LONE_SEED, 2 * n, exclude=HELD_OUT_COMBOS, objects=1))
    shape_lone = shape_recall_at_1(towers, shape_groups(varied_set(SHAPE_SEED, n, objects=1)))
    shape_multi = shape_recall_at_1(towers, shape_groups(varied_set(SHAPE_SEED + 1, n)))
    seen = recall_at_1(towers, scene_set(EVAL_SEED, n, exclude=HELD_OUT_COMBOS))
    unseen = recall_at_1(towers, scene_set(UNSEEN_SEED, n, require=HELD_OUT_COMBOS))
    unseen_lone = zero_shot(towers, varied_set(LONE_SEED + 1, n, require=HELD_OUT_COMBOS, objects=1))

    rows = [
        (f"zero-shot colour, {2 * n} lone shapes (8 labels)", lone.colour, TARGETS["colour"]),
        (f"zero-shot shape, {2 * n} lone shapes (4 labels)", lone.shape, TARGETS["shape"]),
        (f"zero-shot colour+shape, {2 * n} lone shapes (32 labels)", lone.pair, TARGETS["colour+shape"]),
        (f"shape-only text->image R@1, {n} lone shapes x 4 shapes", shape_lone, TARGETS["shape-only R@1"]),
        (f"shape-only text->image R@1, {n} scenes of 1-3 objects x 4 shapes", shape_multi, TARGETS["shape-only R@1"]),
        (f"text->image R@1, {n} held-out scenes (as first measured)", seen, None),
        (f"text->image R@1, {n} scenes with unseen colour-shape (as first measured)", unseen, None),
        (f"zero-shot colour+shape, {n} lone shapes of unseen colour-shape pairs", unseen_lone.pair, None),
    ]
    for label, value, target in rows:
        goal = f"  (target >= {target:.2f})" if target is not None else ""
        print(f"{label:<72} {value:.3f}{goal}")


if __name__ == "__main__":
    main()

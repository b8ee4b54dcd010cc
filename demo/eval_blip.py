"""Measure the demo BLIP models on held-out generated scenes.

    python -m demo.eval_blip caption [--captioner demo] [--count 200]
    python -m demo.eval_blip rerank [--itm demo] [--count 200] [--top 10]

`caption`: the share of scenes whose generated caption names the right colour
and shape of every object, and no other object (beam search, 3 beams), over
`count` held-out scenes like the training ones of the first demo models,
rendered at the demo BLIP models' input size (64x64). Then the share of
`count` lone shapes of any size (small to nearly the whole picture), position,
background and canvas (48 to 256 pixels) captioned as exactly one object of the
right colour and shape, overall and by the shape's radius.

`rerank`: a gallery of `count` images, half of them held-out scenes and half
their near-copies (one attribute of one object changed: colour, shape, size or
position), queried with each image's canonical caption. Text→image Recall@1 of
the demo CLIP alone, and of CLIP's top `top` reordered by the ITM probability.
A hit is a first image whose own canonical caption equals the query.
Models are loaded through the service's own loaders.
"""

from __future__ import annotations

import argparse
import random
import re
from collections import Counter

import numpy as np

from demo.blip_config import DEMO_IMAGE_SIZE
from demo.scenes import COLOURS, HELD_OUT_COMBOS, SHAPES, Scene, perturb, render, scene_set, varied_set
from models.blip import BlipCaptioner, BlipMatcher, CaptionJob, CaptionOptions, MatchJob, load_captioner, load_itm
from models.clip import DEMO_CHECKPOINT, DEMO_MODEL, ClipTowers, load_clip

EVAL_SEED = 1_000_003
LONE_SEED = 4_000_037
RERANK_SEED = 3_000_017
_PAIR = re.compile(rf"\b({'|'.join(COLOURS)})\s+(?:(?:small|large)\s+)?({'|'.join(SHAPES)})\b")


def named_objects(caption: str) -> Counter[tuple[str, str]]:
    """The (colour, shape) pairs a caption names, as in "a large blue square"."""
    return Counter(_PAIR.findall(caption.lower()))


def caption_is_right(caption: str, scene: Scene, *, exact: bool = True) -> bool:
    """True when the caption names each object's colour and shape (with `exact`, and no other object)."""
    named, truth = named_objects(caption), Counter((o.colour, o.shape) for o in scene.objects)
    return named == truth if exact else not truth - named


def captions(captioner: BlipCaptioner, scenes: list[Scene], size: int | None = None) -> list[str]:
    """Beam-search captions (the service's default options) of the scenes, drawn at `size` or their own canvas."""
    options = CaptionOptions()
    out: list[str] = []
    for start in range(0, len(scenes), 50):
        part = scenes[start : start + 50]
        out += captioner.caption([CaptionJob(captioner.preprocess(render(s, size)), options) for s in part])
    return out


def lone_shapes(count: int, seed: int = LONE_SEED) -> list[Scene]:
    """`count` held-out lone shapes of any size, position, background and canvas."""
    return varied_set(seed, count, exclude=HELD_OUT_COMBOS, objects=1)


def rerank_gallery(count: int, seed: int = RERANK_SEED) -> list[Scene]:
    """`count` scenes: count/2 held-out scenes, each followed by its near-copy."""
    rng = random.Random(seed)
    gallery: list[Scene] = []
    for scene in scene_set(seed, count // 2, exclude=HELD_OUT_COMBOS):
        gallery += [scene, perturb(scene, rng, exclude=HELD_OUT_COMBOS)]
    return gallery


def recall_at_1(towers: ClipTowers, gallery: list[Scene], match: BlipMatcher | None = None, top: int = 10) -> float:
    """Text→image Recall@1 of CLIP, or of CLIP's top `top` reranked by `match` (a BlipMatcher)."""
    captions = [s.caption() for s in gallery]
    images = [render(s, DEMO_IMAGE_SIZE) for s in gallery]
    image_rows = towers.image.encode([towers.image.preprocess(im) for im in images])
    text_rows = towers.text.encode(captions)
    similarity = text_rows @ image_rows.T
    hits = 0
    for i, query in enumerate(captions):
        order = np.argsort(-similarity[i], kind="stable")
        best = int(order[0])
        if match is not None:
            candidates = [int(j) for j in order[:top]]
            scores = match.match([MatchJob(match.preprocess(images[j]), query) for j in candidates])
            best = candidates[int(np.argmax(scores))]
        hits += captions[best] == query
    return hits / len(captions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["caption", "rerank"])
    parser.add_argument("--captioner", default="demo")
    parser.add_argument("--itm", default="demo")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    if args.what == "caption":
        captioner = load_captioner(args.captioner, "cpu")
        scenes = scene_set(EVAL_SEED, args.count, exclude=HELD_OUT_COMBOS)
        texts = captions(captioner, scenes, DEMO_IMAGE_SIZE)
        right = [caption_is_right(c, s, exact=False) for c, s in zip(texts, scenes, strict=True)]
        exact = [caption_is_right(c, s) for c, s in zip(texts, scenes, strict=True)]
        for caption, scene, ok in list(zip(texts, scenes, exact, strict=True))[:5]:
            print(f"{'ok   ' if ok else 'wrong'} {caption!r}  (truth: {scene.caption()!r})")
        print(f"{args.count} held-out scenes, captions that name every object's colour and shape: {np.mean(right):.3f}")
        print(f"{args.count} held-out scenes, ... and name no other object:                 {np.mean(exact):.3f}")
        lone = lone_shapes(args.count)
        texts = captions(captioner, lone)
        one = np.array([caption_is_right(c, s) for c, s in zip(texts, lone, strict=True)])
        several = np.array([sum(named_objects(c).values()) > 1 for c in texts])
        radius = np.array([s.objects[0].scale or 0.0 for s in lone])
        wrong = [(c, s) for c, s, ok in zip(texts, lone, one, strict=True) if not ok]
        for caption, scene in wrong[:5]:
            print(f"wrong {caption!r}  (truth: {scene.caption()!r}, radius {scene.objects[0].scale:.2f})")
        print(
            f"{args.count} lone shapes of any size, captioned as one object of the right colour and shape: "
            f"{one.mean():.3f} (named more than one object: {several.mean():.3f})"
        )
        for low, high in ((0.0, 0.14), (0.14, 0.25), (0.25, 1.0)):
            part = (radius >= low) & (radius < high)
            print(
                f"  radius {low:.2f}-{min(high, 0.45):.2f} of the side ({part.sum():3d} shapes): {one[part].mean():.3f}"
            )
    else:
        towers = load_clip(DEMO_MODEL, str(DEMO_CHECKPOINT), "cpu", fallback_to_demo=False)
        matcher = load_itm(args.itm, "cpu")
        gallery = rerank_gallery(args.count)
        print(f"text->image Recall@1 over {len(gallery)} images (scenes + near-copies):")
        print(f"  CLIP alone:                     {recall_at_1(towers, gallery):.3f}")
        print(f"  CLIP top-{args.top} + ITM rerank:       {recall_at_1(towers, gallery, matcher, args.top):.3f}")


if __name__ == "__main__":
    main()

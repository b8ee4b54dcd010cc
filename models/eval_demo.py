"""Measure the demo CLIP: text→image Recall@1 on held-out generated scenes.

    python -m models.eval_demo [--checkpoint models/weights/demo.pt] [--count 200]

Two figures: scenes like the training ones (never seen, same colour–shape
pairs), and scenes that each contain a colour–shape pair held out of training
entirely. The query is each scene's canonical caption; a hit is a top-ranked
image whose own canonical caption equals the query (two scenes can share one).
The model is loaded through the service's own loader (load_clip).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.clip import DEMO_CHECKPOINT, DEMO_MODEL, ClipTowers, load_clip
from models.scenes import HELD_OUT_COMBOS, Scene, render, scene_set

EVAL_SEED = 1_000_003
UNSEEN_SEED = 2_000_003


def recall_at_1(towers: ClipTowers, scenes: list[Scene]) -> float:
    """Fraction of scenes whose caption ranks a caption-equivalent image first."""
    captions = [s.caption() for s in scenes]
    images = towers.image.encode([towers.image.preprocess(render(s)) for s in scenes])
    texts = towers.text.encode(captions)
    best = np.argmax(texts @ images.T, axis=1)
    return float(np.mean([captions[j] == captions[i] for i, j in enumerate(best)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEMO_CHECKPOINT)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    towers = load_clip(DEMO_MODEL, str(args.checkpoint), "cpu", fallback_to_demo=False)
    seen = scene_set(EVAL_SEED, args.count, exclude=HELD_OUT_COMBOS)
    unseen = scene_set(UNSEEN_SEED, args.count, require=HELD_OUT_COMBOS)
    print(f"text->image Recall@1, {args.count} held-out scenes:              {recall_at_1(towers, seen):.3f}")
    print(f"text->image Recall@1, {args.count} scenes with unseen colour-shape: {recall_at_1(towers, unseen):.3f}")


if __name__ == "__main__":
    main()

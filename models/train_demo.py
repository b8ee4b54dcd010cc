"""Train the bundled demo CLIP on synthetic scenes (contrastive InfoNCE, as CLIP's ITC).

    python -m models.train_demo --steps 2500 --out models/weights/demo.pt

The model is built from `models/configs/demo.json` through open_clip's public
API, so the checkpoint loads exactly like any other open_clip checkpoint. It is
saved in fp16 to keep the committed file small; open_clip casts it back to the
model's fp32 parameters on load.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from models.clip import DEMO_MODEL, register_bundled_configs
from models.scenes import HELD_OUT_COMBOS, Scene, perturb, random_scene, render, training_caption


def training_batch(rng: random.Random, batch_size: int) -> tuple[list[Scene], list[str]]:
    """A batch whose first part is scene/near-copy pairs with full captions (hard
    negatives for one another), the rest random scenes with captions of any phrasing."""
    pairs = batch_size * 5 // 16
    scenes: list[Scene] = []
    for _ in range(pairs):
        scene = random_scene(rng, exclude=HELD_OUT_COMBOS)
        scenes += [scene, perturb(scene, rng, exclude=HELD_OUT_COMBOS)]
    captions = [training_caption(s, rng, full=True) for s in scenes]
    rest = [random_scene(rng, exclude=HELD_OUT_COMBOS) for _ in range(batch_size - len(scenes))]
    return scenes + rest, captions + [training_caption(s, rng) for s in rest]


def train(steps: int, batch_size: int, lr: float, seed: int, out: Path, threads: int | None) -> None:
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    rng = random.Random(seed)
    register_bundled_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(DEMO_MODEL)
    tokenizer = open_clip.get_tokenizer(DEMO_MODEL)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    warmup = max(1, steps // 20)
    labels = torch.arange(batch_size)
    started = time.monotonic()
    for step in range(steps):
        # Linear warm-up, then cosine decay to zero.
        scale = (
            (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        scenes, captions = training_batch(rng, batch_size)
        images = torch.stack([preprocess(render(s)) for s in scenes])
        texts = tokenizer(captions)
        image_features, text_features, logit_scale = model(images, texts)[:3]
        logits = logit_scale * image_features @ text_features.T
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        with torch.no_grad():
            # CLIP clamps the temperature so logits cannot blow up.
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == steps - 1:
            elapsed = time.monotonic() - started
            print(f"step {step:5d}/{steps}  loss {loss.item():.4f}  lr {lr * scale:.2e}  {elapsed:6.0f}s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, out)
    print(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB) after {time.monotonic() - started:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("models/weights/demo.pt"))
    args = parser.parse_args()
    train(args.steps, args.batch_size, args.lr, args.seed, args.out, args.threads)


if __name__ == "__main__":
    main()

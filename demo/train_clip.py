"""Train the bundled demo CLIP on synthetic scenes (contrastive InfoNCE, as CLIP's ITC).

    python -m demo.train_clip --steps 3000 --seed 0 --out models/weights/demo.pt

The model is built from `models/configs/demo.json` through open_clip's public
API, so the checkpoint loads exactly like any other open_clip checkpoint. It is
saved in fp16 to keep the committed file small; open_clip casts it back to the
model's fp32 parameters on load.

Each batch holds three kinds of scenes, all drawn from the varied range of
`demo.scenes.varied_scene` (any size, fades, noise, canvases of 48 to 128
pixels; demo.eval_clip measures up to 256):

- shape groups: a scene drawn in each shape of one of its objects, nothing
  else changed (same colour, size, place, background and render), so only the
  shape word tells the copies apart;
- near-copy pairs: a scene and a copy with one attribute of one object
  changed (colour, shape, size or position), with full captions;
- random scenes, with captions of any phrasing: partial ones may leave out
  objects, sizes, positions, colours or shapes ("a photo of a circle.").

A caption may be true of several images of a batch ("a red circle" of every
scene holding one): the loss treats every image a caption is true of (and
every caption true of an image) as a match, sharing the target among them,
instead of pushing true pairs apart as a one-hot target would.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import open_clip
import torch

from demo.scenes import (
    HELD_OUT_COMBOS,
    SHAPES,
    TRAINING_CANVASES,
    Description,
    Scene,
    describe,
    perturb,
    render,
    varied_scene,
    with_shape,
)
from models.clip import DEMO_MODEL, DEMO_VIT_MODEL, register_bundled_configs
from models.pixels import PixelSpec, normalise, pixel_spec, resize_crop


def _scene(rng: random.Random) -> Scene:
    return varied_scene(rng, exclude=HELD_OUT_COMBOS, canvases=TRAINING_CANVASES)


def training_batch(rng: random.Random, batch_size: int) -> tuple[list[Scene], list[Description]]:
    """A quarter of the batch in shape groups, a quarter in near-copy pairs, the rest random scenes."""
    scenes: list[Scene] = []
    descriptions: list[Description] = []
    while len(scenes) < batch_size // 4:
        base = _scene(rng)
        index = rng.randrange(len(base.objects))
        colour = base.objects[index].colour
        for shape in SHAPES:
            if (colour, shape) not in HELD_OUT_COMBOS and len(scenes) < batch_size // 4:
                copy = with_shape(base, index, shape)
                scenes.append(copy)
                descriptions.append(describe(copy, rng, about=index))
    while len(scenes) < batch_size // 2:
        scene = _scene(rng)
        for s in (scene, perturb(scene, rng, exclude=HELD_OUT_COMBOS)):
            scenes.append(s)
            descriptions.append(describe(s, rng, full=True))
    while len(scenes) < batch_size:
        scene = _scene(rng)
        scenes.append(scene)
        descriptions.append(describe(scene, rng))
    return scenes[:batch_size], descriptions[:batch_size]


def contrastive_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric cross-entropy with every true pair a match.

    `logits` and `truth` are (texts, images); each row and column of `truth`
    holds at least one true pair (a caption is true of its own scene), and
    the target of a row is spread evenly over its true pairs.
    """
    text_to_image = truth / truth.sum(dim=1, keepdim=True)
    image_to_text = truth.T / truth.T.sum(dim=1, keepdim=True)
    loss_t = -(text_to_image * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_i = -(image_to_text * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    return (loss_t + loss_i) / 2


def pixels(scenes: list[Scene], spec: PixelSpec) -> torch.Tensor:
    """The scenes as the service's image tower sees them: drawn at their canvas, resized and cropped."""
    return normalise(torch.stack([resize_crop(render(s), spec) for s in scenes]), spec, torch.float32)


def train(
    steps: int, batch_size: int, lr: float, seed: int, out: Path, threads: int | None, name: str = DEMO_MODEL
) -> None:
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    rng = random.Random(seed)
    register_bundled_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    spec = pixel_spec(preprocess)
    assert spec is not None  # open_clip's plain eval transform
    tokenizer = open_clip.get_tokenizer(name)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    warmup = max(1, steps // 20)
    started = time.monotonic()
    for step in range(steps):
        # Linear warm-up, then cosine decay to zero.
        scale = (
            (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        scenes, descriptions = training_batch(rng, batch_size)
        truth = torch.tensor([[d.holds_for(s) for s in scenes] for d in descriptions], dtype=torch.float32)
        texts = tokenizer([d.text for d in descriptions])
        image_features, text_features, logit_scale = model(pixels(scenes, spec), texts)[:3]
        loss = contrastive_loss(logit_scale * text_features @ image_features.T, truth)
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
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("models/weights/demo.pt"))
    parser.add_argument(
        "--model", default=DEMO_MODEL, help=f"the bundled config to train: {DEMO_MODEL} or {DEMO_VIT_MODEL}"
    )
    args = parser.parse_args()
    train(args.steps, args.batch_size, args.lr, args.seed, args.out, args.threads, args.model)


if __name__ == "__main__":
    main()

"""Train the bundled demo BLIP models on synthetic scenes.

    python -m demo.train_blip caption --steps 8000 --seed 0   # -> models/weights/blip-caption-demo
    python -m demo.train_blip itm --steps 6000 --seed 0       # -> models/weights/blip-itm-demo (after caption)

`caption` trains BlipForConditionalGeneration, its image encoder started from
the demo CLIP's image tower, with BLIP's language-modelling loss on each
scene's canonical caption (sometimes after a prefix such as "a photo of", so
prompts can be continued); the scenes are the first demo models' ones and
varied ones (any size, lone shapes up to nearly the whole picture, fades,
canvases of 48 to 128 pixels). `itm` trains BlipForImageTextRetrieval's
image–text matching head, starting from the captioner's image encoder and text
layers, with hard negatives: each scene comes with a near-copy that differs in
one attribute of one object (colour, shape, size or position), each full
caption is paired with its image (match), the near-copy, a copy with one more
change and a random scene (no match), and a partial caption with its image
(match); a ranking term asks each full caption to score its own image first.
Both models use `demo_config()` and the demo WordPiece vocabulary and are
written with `save_pretrained`, so they load with `from_pretrained` like any
BLIP checkpoint. Colour–shape pairs held out of the demo CLIP's training are
held out here too.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (
    BlipForConditionalGeneration,
    BlipForImageTextRetrieval,
    BlipProcessor,
    BlipVisionModel,
    PreTrainedModel,
)

from demo.blip_config import demo_config, demo_processor
from demo.scenes import (
    HELD_OUT_COMBOS,
    TRAINING_CANVASES,
    Scene,
    perturb,
    random_scene,
    render,
    training_caption,
    varied_scene,
)
from models.blip import DEMO_CAPTIONER_DIR, DEMO_ITM_DIR, BlipTask, itm_logits_from_embeds, text_config

_CAPTION_PREFIXES = ("a photo of ", "an image of ", "a picture of ", "there is ")


def caption_text(scene: Scene, rng: random.Random) -> str:
    """The canonical caption, after one of the prefixes a third of the time."""
    prefix = rng.choice(_CAPTION_PREFIXES) if rng.random() < 1 / 3 else ""
    return prefix + scene.caption()


def pixels(processor: BlipProcessor, scenes: list[Scene]) -> torch.Tensor:
    """The scenes drawn at their canvas and prepared by the processor (resized to the model's input)."""
    images = [render(s) for s in scenes]
    out: torch.Tensor = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    return out


def caption_scene(rng: random.Random) -> Scene:
    """A scene like the first demo models' (64 pixels) 40% of the time, else a varied one, half of those lone.

    Lone shapes of every size, up to nearly the whole picture, teach the
    captioner that one large shape is one object.
    """
    draw = rng.random()
    if draw < 0.4:
        return random_scene(rng, exclude=HELD_OUT_COMBOS)
    lone = 1 if draw < 0.7 else None
    return varied_scene(rng, exclude=HELD_OUT_COMBOS, count=lone, canvases=TRAINING_CANVASES)


def caption_loss(
    model: BlipForConditionalGeneration, processor: BlipProcessor, rng: random.Random, batch_size: int
) -> torch.Tensor:
    scenes = [caption_scene(rng) for _ in range(batch_size)]
    tokens = processor.tokenizer([caption_text(s, rng) for s in scenes], padding=True, return_tensors="pt")
    input_ids = tokens["input_ids"].clone()
    # BLIP's decoder starts from its own token ([DEC]) where the tokenizer writes [CLS].
    input_ids[:, 0] = text_config(model).bos_token_id
    labels = input_ids.masked_fill(tokens["attention_mask"] == 0, -100)
    out = model(
        pixel_values=pixels(processor, scenes),
        input_ids=input_ids,
        attention_mask=tokens["attention_mask"],
        labels=labels,
    )
    loss: torch.Tensor = out.loss
    return loss


@dataclass
class ItmBatch:
    """Per scene A, four images: A, a near-copy B (one attribute of one object
    changed), C (B with one more change) and a random scene R; and five rows:
    A, B, C and R with A's full caption cA (a match only for A), then A with a
    partial caption of A (a match too)."""

    images: list[Scene]  # A, B, C, R per group
    texts: list[str]  # cA, pA per group
    labels: list[int]  # five per group: 1, 0, 0, 0, 1


ROWS_PER_GROUP = 5


def _differs(scene: Scene, others: list[Scene]) -> bool:
    return all(scene.caption() != o.caption() for o in others)


def itm_batch(rng: random.Random, groups: int) -> ItmBatch:
    batch = ItmBatch([], [], [])
    for _ in range(groups):
        a = random_scene(rng, exclude=HELD_OUT_COMBOS)
        b = perturb(a, rng, exclude=HELD_OUT_COMBOS)
        while not _differs(c := perturb(b, rng, exclude=HELD_OUT_COMBOS), [a]):
            pass  # a second change that undid the first
        while not _differs(r := random_scene(rng, exclude=HELD_OUT_COMBOS), [a]):
            pass
        batch.images += [a, b, c, r]
        # Full captions in the canonical order (as queries are measured), after a prefix at times.
        batch.texts += [caption_text(a, rng), training_caption(a, rng, full=False)]
        batch.labels += [1, 0, 0, 0, 1]
    return batch


def itm_loss(
    model: BlipForImageTextRetrieval, processor: BlipProcessor, rng: random.Random, batch_size: int
) -> torch.Tensor:
    """BLIP's ITM cross-entropy over (image, text) rows with hard negatives, plus a
    ranking term: for a full caption, its image must score above the three others."""
    batch = itm_batch(rng, max(1, batch_size // ROWS_PER_GROUP))
    groups = len(batch.images) // 4
    embeds = model.vision_model(pixel_values=pixels(processor, batch.images)).last_hidden_state
    # Rows per group: (A, cA), (B, cA), (C, cA), (R, cA), (A, pA); each image is encoded once.
    order = torch.tensor([4 * g + i for g in range(groups) for i in (0, 1, 2, 3, 0)])
    texts = [batch.texts[2 * g + t] for g in range(groups) for t in (0, 0, 0, 0, 1)]
    tokens = processor.tokenizer(texts, padding=True, return_tensors="pt")
    logits = itm_logits_from_embeds(model, embeds[order], tokens["input_ids"], tokens["attention_mask"]).float()
    loss = F.cross_entropy(logits, torch.tensor(batch.labels))
    margins = (logits[:, 1] - logits[:, 0]).view(groups, ROWS_PER_GROUP)[:, :4]
    return loss + F.cross_entropy(margins, torch.zeros(groups, dtype=torch.long))


def vision_from_demo_clip(vision: BlipVisionModel, checkpoint: Path) -> None:
    """Load the demo CLIP's image tower into a BLIP vision model of the same shape.

    BLIP starts its image encoder from a pre-trained ViT; ours starts from the
    demo CLIP's, which already tells shapes apart. The two are the same
    pre-norm ViT (patch convolution, class and position embeddings, blocks of
    attention with one packed q/k/v projection and a GELU MLP, a final norm),
    except that CLIP normalises the embeddings once more before the first
    block (`ln_pre`); BLIP has no such layer, and fine-tuning absorbs it.
    """
    clip = {
        k.removeprefix("visual."): v.float()
        for k, v in torch.load(checkpoint, map_location="cpu")["state_dict"].items()
        if k.startswith("visual.")
    }
    state = {
        "embeddings.class_embedding": clip["class_embedding"].view(1, 1, -1),
        "embeddings.position_embedding": clip["positional_embedding"].unsqueeze(0),
        "embeddings.patch_embedding.weight": clip["conv1.weight"],
        "embeddings.patch_embedding.bias": torch.zeros(clip["conv1.weight"].shape[0]),
        "post_layernorm.weight": clip["ln_post.weight"],
        "post_layernorm.bias": clip["ln_post.bias"],
    }
    names = {
        "layer_norm1": "ln_1",
        "self_attn.qkv": "attn.in_proj",
        "self_attn.projection": "attn.out_proj",
        "layer_norm2": "ln_2",
        "mlp.fc1": "mlp.c_fc",
        "mlp.fc2": "mlp.c_proj",
    }
    for i in range(len(vision.encoder.layers)):
        for ours, theirs in names.items():
            for part in ("weight", "bias"):
                source = (
                    f"transformer.resblocks.{i}.{theirs}_{part}"
                    if theirs == "attn.in_proj"
                    else (f"transformer.resblocks.{i}.{theirs}.{part}")
                )
                state[f"encoder.layers.{i}.{ours}.{part}"] = clip[source]
    vision.load_state_dict(state)


def itm_from_captioner(captioner_dir: Path) -> BlipForImageTextRetrieval:
    """An ITM model whose image encoder and text encoder start as the captioner's.

    BLIP itself shares the text encoder's and decoder's cross-attention and
    feed-forward layers in pre-training; starting from the trained captioner
    gives the ITM head an image encoder that already tells shapes apart.
    """
    captioner = BlipForConditionalGeneration.from_pretrained(captioner_dir, dtype=torch.float32)
    model = BlipForImageTextRetrieval(demo_config())
    model.vision_model.load_state_dict(captioner.vision_model.state_dict())
    model.text_encoder.load_state_dict(captioner.text_decoder.bert.state_dict())
    # The image encoder already tells shapes apart; training only the text side
    # and the head keeps that, and each step costs less.
    model.vision_model.requires_grad_(False)
    return model


def train(
    task: BlipTask,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    out: Path,
    *,
    bf16: bool,
    init_from: Path | None,
    vision_from: Path | None,
    vision_lr_scale: float,
    threads: int | None = None,
) -> None:
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    rng = random.Random(seed)
    processor = demo_processor()
    model: PreTrainedModel
    if task is BlipTask.CAPTION:
        if init_from is not None:
            # Training goes on from a trained captioner (by default the bundled one): what it knows
            # stays, and the wider scenes teach it the rest in far fewer steps than from scratch.
            model = BlipForConditionalGeneration.from_pretrained(init_from, dtype=torch.float32)
        else:
            model = BlipForConditionalGeneration(demo_config())
            if vision_from is not None:
                vision_from_demo_clip(model.vision_model, vision_from)
    else:
        model = itm_from_captioner(init_from) if init_from is not None else BlipForImageTextRetrieval(demo_config())
    model.train()
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            # The pre-trained image encoder learns at a lower rate, so its features survive the start.
            groups.setdefault((n.startswith("vision_model."), p.ndim >= 2 and "embedding" not in n), []).append(p)
    optimizer = torch.optim.AdamW(
        [
            {"params": params, "weight_decay": 0.05 if decayed else 0.0, "lr_scale": vision_lr_scale if vision else 1.0}
            for (vision, decayed), params in groups.items()
        ],
        lr=lr,
    )
    warmup = max(1, steps // 20)
    started = time.monotonic()
    for step in range(steps):
        # Linear warm-up, then cosine decay to zero.
        scale = (
            (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * scale * group["lr_scale"]
        # bf16 autocast halves the step time on CPUs with native bf16; the weights stay float32.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if isinstance(model, BlipForConditionalGeneration):
                loss = caption_loss(model, processor, rng, batch_size)
            else:
                assert isinstance(model, BlipForImageTextRetrieval)
                loss = itm_loss(model, processor, rng, batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            elapsed = time.monotonic() - started
            print(f"step {step:5d}/{steps}  loss {loss.item():.4f}  lr {lr * scale:.2e}  {elapsed:6.0f}s", flush=True)
    # Stored in float16 to keep the committed files small; loading casts back to float32.
    model.eval().to(torch.float16)  # type: ignore[no-untyped-call]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"saved {out} ({size / 1e6:.1f} MB) after {time.monotonic() - started:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", type=BlipTask, choices=list(BlipTask))
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="default: 1e-3 for caption, 5e-4 for itm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--out", type=Path, default=None, help="default: the bundled demo directory for the task")
    parser.add_argument("--fp32", action="store_true", help="train in float32 (default: bf16 autocast)")
    parser.add_argument("--vision-lr-scale", type=float, default=0.5, help="caption: the image encoder's share of --lr")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=DEMO_CAPTIONER_DIR,
        help="caption: go on training this captioner; itm: start the image and text encoders from it "
        "('none': from scratch)",
    )
    parser.add_argument(
        "--vision-from",
        type=Path,
        default=None,
        help="caption with --init-from none: start the image encoder from this ViT demo CLIP checkpoint "
        "(python -m demo.train_clip --model demo-vit)",
    )
    args = parser.parse_args()
    out = args.out or (DEMO_CAPTIONER_DIR if args.task is BlipTask.CAPTION else DEMO_ITM_DIR)
    init_from = None if str(args.init_from) == "none" else args.init_from
    lr = args.lr if args.lr is not None else (1e-3 if args.task is BlipTask.CAPTION else 5e-4)
    train(
        args.task,
        args.steps,
        args.batch_size,
        lr,
        args.seed,
        out,
        bf16=not args.fp32,
        init_from=init_from,
        vision_from=args.vision_from,
        threads=args.threads,
        vision_lr_scale=args.vision_lr_scale,
    )


if __name__ == "__main__":
    main()

"""BLIP towers loaded through transformers' public API: a captioner and an ITM scorer.

`load_captioner` and `load_itm` take a model spec, as the `--captioner` and
`--itm` settings do: a Hugging Face hub id (`Salesforce/blip-image-captioning-base`,
downloaded and cached when online), a local directory written by
`save_pretrained`, or `demo` for the tiny models trained on this project's
synthetic scenes (`python -m demo.train_blip`). Every spec goes through
`from_pretrained`, so the demo models load exactly like real weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Generic, TypeVar

import torch
from PIL import Image
from transformers import (
    BlipForConditionalGeneration,
    BlipForImageTextRetrieval,
    BlipProcessor,
    BlipTextConfig,
    PreTrainedModel,
)

from models.devices import resolve_device
from models.errors import ModelLoadError

log = logging.getLogger(__name__)

DEMO = "demo"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEMO_CAPTIONER_DIR = WEIGHTS_DIR / "blip-caption-demo"
DEMO_ITM_DIR = WEIGHTS_DIR / "blip-itm-demo"
MAX_PROMPT_TOKENS = 32


# --- loading -----------------------------------------------------------------------------------


class BlipTask(StrEnum):
    CAPTION = "caption"
    ITM = "itm"


@dataclass(frozen=True)
class BlipInfo:
    task: BlipTask
    spec: str  # as configured: hub id, directory, or `demo`
    source: str  # what was loaded: the directory or hub id
    device: str


def resolve_spec(spec: str, task: BlipTask) -> str:
    """The directory or hub id a spec names; `demo` is the bundled directory for the task."""
    if spec == DEMO:
        return str(DEMO_CAPTIONER_DIR if task is BlipTask.CAPTION else DEMO_ITM_DIR)
    return spec


def _load(
    spec: str, task: BlipTask, device: str
) -> tuple[BlipForConditionalGeneration | BlipForImageTextRetrieval, BlipProcessor, BlipInfo]:
    source = resolve_spec(spec, task)
    looks_local = source.startswith((".", "/", "~")) or Path(source).expanduser().exists()
    if looks_local and not Path(source).expanduser().is_dir():
        raise ModelLoadError(f"BLIP {task} model {spec!r}: {source} is not a directory written by save_pretrained")
    path = str(Path(source).expanduser()) if looks_local else source
    cls = BlipForConditionalGeneration if task is BlipTask.CAPTION else BlipForImageTextRetrieval
    target = resolve_device(device)
    try:
        processor = BlipProcessor.from_pretrained(path)
        # float32 whatever the checkpoint holds (the demo ones are stored in float16).
        model = cls.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError) as exc:
        where = "the directory" if looks_local else "the Hugging Face hub (is the network reachable?)"
        raise ModelLoadError(f"cannot load BLIP {task} model {spec!r} from {where}: {exc}") from exc
    model.eval().to(target)  # type: ignore[no-untyped-call]
    log.info("loaded BLIP %s model %s on %s", task, path, target)
    return model, processor, BlipInfo(task, spec, path, str(target))


# --- the towers --------------------------------------------------------------------------------


class Decoding(StrEnum):
    BEAM = "beam"
    SAMPLE = "sample"


@dataclass(frozen=True)
class CaptionOptions:
    """How to generate: items with equal options share one `generate` call."""

    max_new_tokens: int = 30
    decoding: Decoding = Decoding.BEAM
    num_beams: int = 3
    temperature: float = 1.0
    top_p: float = 0.9
    prompt: str | None = None


@dataclass(frozen=True)
class CaptionJob:
    pixels: torch.Tensor
    options: CaptionOptions


ModelT = TypeVar("ModelT", BlipForConditionalGeneration, BlipForImageTextRetrieval)


class _BlipTower(Generic[ModelT]):
    """A loaded BLIP model with its processor; `preprocess` turns an image into its input."""

    def __init__(self, model: ModelT, processor: BlipProcessor, info: BlipInfo) -> None:
        self.model: ModelT = model
        self.processor = processor
        self.info = info
        self._device = next(model.parameters()).device

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        pixels: torch.Tensor = self.processor.image_processor(image.convert("RGB"), return_tensors="pt")[
            "pixel_values"
        ][0]
        return pixels


class BlipCaptioner(_BlipTower[BlipForConditionalGeneration]):
    """BlipForConditionalGeneration with its processor: preprocessed images in, captions out."""

    @property
    def max_positions(self) -> int:
        return text_config(self.model).max_position_embeddings

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens the prompt takes (without the special ones)."""
        return len(self.processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def caption(self, jobs: Sequence[CaptionJob]) -> list[str]:
        """One caption per job; jobs with the same options run as one batch."""
        captions: list[str | None] = [None] * len(jobs)
        groups: dict[CaptionOptions, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.options, []).append(i)
        for options, members in groups.items():
            texts = self._generate(torch.stack([jobs[i].pixels for i in members]), options)
            for i, text in zip(members, texts, strict=True):
                captions[i] = text
        return [c or "" for c in captions]

    @torch.inference_mode()
    def _generate(self, pixels: torch.Tensor, options: CaptionOptions) -> list[str]:
        input_ids = None
        if options.prompt:
            # As BlipProcessor does: [CLS] prompt [SEP]; generate() swaps [CLS] for
            # the decoder's start token and drops [SEP], so the caption continues the prompt.
            ids = self.processor.tokenizer(options.prompt, return_tensors="pt")["input_ids"]
            input_ids = ids.repeat(len(pixels), 1).to(self._device)
        pixels = pixels.to(self._device, self.model.dtype)
        if options.decoding is Decoding.SAMPLE:
            out = self.model.generate(
                pixels,
                input_ids,
                max_new_tokens=options.max_new_tokens,
                do_sample=True,
                num_beams=1,
                temperature=options.temperature,
                top_p=options.top_p,
            )
        else:
            out = self.model.generate(
                pixels, input_ids, max_new_tokens=options.max_new_tokens, do_sample=False, num_beams=options.num_beams
            )
        texts: list[str] = self.processor.batch_decode(out, skip_special_tokens=True)  # type: ignore[no-untyped-call]
        return [" ".join(t.split()) for t in texts]


@dataclass(frozen=True)
class MatchJob:
    pixels: torch.Tensor
    text: str


class BlipMatcher(_BlipTower[BlipForImageTextRetrieval]):
    """BlipForImageTextRetrieval's ITM head: the probability that an image and a text match."""

    @torch.inference_mode()
    def match(self, jobs: Sequence[MatchJob]) -> list[float]:
        """ITM probabilities, one per (image, text) job."""
        # Text past the model's positions is cut off rather than overflowing them.
        limit = text_config(self.model).max_position_embeddings
        tokens = self.processor.tokenizer(
            [job.text for job in jobs], padding=True, truncation=True, max_length=limit, return_tensors="pt"
        ).to(self._device)
        pixels = torch.stack([job.pixels for job in jobs]).to(self._device, self.model.dtype)
        logits = itm_logits(self.model, pixels, tokens["input_ids"], tokens["attention_mask"])
        probabilities: list[float] = torch.softmax(logits.float(), dim=-1)[:, 1].tolist()
        return probabilities


def text_config(model: PreTrainedModel) -> BlipTextConfig:
    """The text half of a BLIP model's configuration."""
    config = model.config.text_config
    assert isinstance(config, BlipTextConfig)
    return config


def itm_logits(
    model: BlipForImageTextRetrieval, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """(n, 2) ITM logits (no match, match), as `model(..., use_itm_head=True)` computes them.

    Spelled out so the image attention mask is made on the model's device (the
    library's forward makes it on the CPU).
    """
    image_embeds = model.vision_model(pixel_values=pixels).last_hidden_state
    return itm_logits_from_embeds(model, image_embeds, input_ids, attention_mask)


def itm_logits_from_embeds(
    model: BlipForImageTextRetrieval, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """As itm_logits, from the vision model's output (one row per text)."""
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
    text = model.text_encoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=image_mask,
    ).last_hidden_state
    logits: torch.Tensor = model.itm_head(text[:, 0, :])
    return logits


def load_captioner(spec: str, device: str = "auto") -> BlipCaptioner:
    """Load a captioning model (see the module docstring for `spec`).

    Raises:
        ModelLoadError: the model cannot be found, downloaded or read.
    """
    model, processor, info = _load(spec, BlipTask.CAPTION, device)
    assert isinstance(model, BlipForConditionalGeneration)
    return BlipCaptioner(model, processor, info)


def load_itm(spec: str, device: str = "auto") -> BlipMatcher:
    """Load an image–text matching model (see the module docstring for `spec`).

    Raises:
        ModelLoadError: the model cannot be found, downloaded or read.
    """
    model, processor, info = _load(spec, BlipTask.ITM, device)
    assert isinstance(model, BlipForImageTextRetrieval)
    return BlipMatcher(model, processor, info)

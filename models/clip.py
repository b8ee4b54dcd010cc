"""CLIP towers loaded through open_clip's public API.

`load_clip` resolves a model name and a weights spec, loads the model once and
returns two towers (image and text) that share one interface: `encode(batch)`
returns L2-normalised float32 rows.

Two pipelines (docs/gpu.md): `fast` (the default) prepares uint8 pixels at the
model's size (JPEGs decoded at reduced scale on the CPU, or on the GPU with
nvJPEG), normalises them inside the batched forward pass and replays the text
tower from CUDA graphs; `reference` runs open_clip's own transform on the full
decode and the text tower eagerly. On CUDA the weights are fp16/bf16 (open_clip's
`precision`), not fp32 under autocast, which re-casts every weight every call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer
from open_clip.transformer import text_global_pool
from PIL import Image

from models import hub
from models.devices import resolve_device
from models.errors import ModelLoadError
from models.gpu_images import DeviceJpegDecoder, fits_device_decoder
from models.images import THUMBNAIL_SIZE, crop_extreme_aspect, decode_image, make_thumbnail, prepare_all

# Re-exported: the options live in models.options, which imports without torch.
from models.options import Pipeline as Pipeline
from models.options import Precision as Precision
from models.pixels import PixelSpec, normalise, pixel_spec, resize_crop
from models.text_graphs import TextGraphs
from models.tokenizer import fast_tokenizer, is_plain_text

log = logging.getLogger(__name__)

DEMO_MODEL = "demo"
# The demo model's first architecture (a small ViT, whose checkpoints know colour but hardly shape),
# kept so such a checkpoint can still be loaded by name.
DEMO_VIT_MODEL = "demo-vit"
CONFIG_DIR = Path(__file__).parent / "configs"
DEMO_CHECKPOINT = Path(__file__).parent / "weights" / "demo.pt"
# Weights used when --pretrained is not given.
DEFAULT_PRETRAINED: dict[str, str] = {"ViT-B-32": "laion2b_s34b_b79k", DEMO_MODEL: str(DEMO_CHECKPOINT)}
NO_WEIGHTS = "none"
# What a user must know while the demo model serves: said at start-up, on the page and in the README.
DEMO_NOTICE = (
    "a toy CLIP trained on generated coloured shapes, not on photographs; "
    "load real weights with --pretrained (see the README, 'Real weights')"
)

_registry_lock = threading.Lock()


class ImageTower(Protocol):
    """The image encoder of a two-tower model."""

    def prepare(self, data: bytes, *, max_pixels: int) -> torch.Tensor:
        """Decode and preprocess one image (raises InvalidImageError)."""
        ...

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def encode(self, batch: Sequence[torch.Tensor]) -> np.ndarray:
        """Encode preprocessed images into an (n, dim) float32 array of unit rows."""
        ...


@runtime_checkable
class ImagePreparer(Protocol):
    """An image tower that prepares a whole request at once (e.g. decoding its JPEGs on the GPU in one call)."""

    async def prepare_images(
        self, images: Sequence[tuple[str, bytes]], *, max_pixels: int, thumbnails: bool
    ) -> tuple[list[torch.Tensor], list[bytes]]:
        """Pixels for each (name, bytes) image and, if asked, a JPEG thumbnail of each (else b"").

        Raises:
            InvalidImageError: naming the first image that cannot be used.
        """
        ...


class TextTower(Protocol):
    """The text encoder of a two-tower model."""

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        """Encode texts into an (n, dim) float32 array of unit rows."""
        ...

    def count_tokens(self, batch: Sequence[str]) -> list[int]:
        """Tokens each text takes in the model's context (after truncation)."""
        ...

    @property
    def context_length(self) -> int:
        """The most tokens (start and end included) the model reads; longer texts are cut."""
        ...

    def tokens_needed(self, batch: Sequence[str]) -> list[int]:
        """Tokens each text would take uncut, start and end included (> context_length: it is cut, and
        the figure is exact); for a text that fits, the figure may be a bound that fits too."""
        ...


class WeightsKind(StrEnum):
    TAG = "tag"
    HF_HUB = "hf-hub"
    FILE = "file"
    NONE = "none"


@dataclass(frozen=True)
class Placement:
    """Where and in which number format the forward passes run."""

    device: torch.device
    precision: Precision

    @property
    def weights_dtype(self) -> torch.dtype:
        """The type of the weights and of the pixels fed to the image tower.

        Half types halve the bytes every forward pass reads. On CUDA open_clip's
        own fp16/bf16 mode keeps LayerNorm in fp32, as OpenAI's CLIP ran.
        """
        if self.precision is Precision.FP16:
            return torch.float16
        return torch.bfloat16 if self.precision is Precision.BF16 else torch.float32


def resolve_precision(precision: Precision | str, device: torch.device) -> Precision:
    """`auto`: fp16 weights on CUDA, bf16 on CPUs with native bf16 instructions, else fp32."""
    precision = Precision(precision)
    if precision is Precision.AUTO:
        if device.type == "cuda":
            return Precision.FP16
        native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return Precision.BF16 if native_bf16 else Precision.FP32
    if precision is Precision.FP16 and device.type != "cuda":
        raise ModelLoadError("fp16 is for GPUs; use bf16 or fp32 on the CPU")
    return precision


@dataclass(frozen=True)
class ModelInfo:
    """What is serving: shown by /ready and /v1/stats."""

    name: str
    pretrained: str
    dim: int
    device: str
    precision: str
    fallback_reason: str | None = None


def register_bundled_configs() -> None:
    """Make the bundled model configs (e.g. `demo`) known to open_clip; idempotent."""
    with _registry_lock:
        if DEMO_MODEL not in open_clip.list_models():
            open_clip.add_model_config(CONFIG_DIR)


def model_dim(name: str) -> int:
    """The embedding dimension of an open_clip model config, without loading weights."""
    register_bundled_configs()
    config = open_clip.get_model_config(name)
    if config is None:
        raise ModelLoadError(f"unknown model {name!r}; open_clip knows: {', '.join(open_clip.list_models())}")
    return int(config["embed_dim"])


def classify_weights(name: str, pretrained: str) -> WeightsKind:
    """Say what kind of weights spec `pretrained` is, or raise ModelLoadError if none."""
    if pretrained.startswith("hf-hub:"):
        return WeightsKind.HF_HUB
    if name not in open_clip.list_models():
        raise ModelLoadError(f"unknown model {name!r}; open_clip knows: {', '.join(open_clip.list_models())}")
    if pretrained.lower() == NO_WEIGHTS:
        return WeightsKind.NONE
    if Path(pretrained).is_file():
        return WeightsKind.FILE
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained in tags:
        return WeightsKind.TAG
    raise ModelLoadError(
        f"--pretrained {pretrained!r} is not a pretrained tag of {name!r} (known: {', '.join(tags) or 'none'}), "
        "an hf-hub: id, 'none', or an existing checkpoint file"
    )


class ClipImageTower:
    """Image encoder: bytes → prepared tensor (prepare) → embeddings (encode).

    A prepared tensor is either open_clip's float (3, S, S) input (the
    reference pipeline) or uint8 (3, S, S) pixels, on the host or already on
    the device (the fast pipeline), which `encode` normalises for the whole
    batch at once. One batch holds one kind.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        placement: Placement,
        pipeline: Pipeline = Pipeline.FAST,
    ) -> None:
        self._model = model
        self._preprocess = preprocess
        self._placement = placement
        # A transform other than open_clip's plain eval one has no fast twin: it stays the reference.
        self.spec: PixelSpec | None = pixel_spec(preprocess) if pipeline is Pipeline.FAST else None
        self.device_decoder = (
            DeviceJpegDecoder(self.spec, placement.device)
            if self.spec is not None and placement.device.type == "cuda"
            else None
        )
        self._staging: torch.Tensor | None = None
        self._lock = threading.Lock()  # guards the staging buffer, reused by every batch

    @property
    def _reduce_to(self) -> tuple[int, int] | None:
        return None if self.spec is None else (self.spec.size, self.spec.size)

    def prepare(self, data: bytes, *, max_pixels: int) -> torch.Tensor:
        """Decode and preprocess one image; CPU work meant to run in a worker thread."""
        return self.preprocess(decode_image(data, max_pixels=max_pixels, reduce_to=self._reduce_to))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        image = crop_extreme_aspect(image)
        return self._preprocess(image) if self.spec is None else resize_crop(image, self.spec)

    async def prepare_images(
        self, images: Sequence[tuple[str, bytes]], *, max_pixels: int, thumbnails: bool
    ) -> tuple[list[torch.Tensor], list[bytes]]:
        """Pixels (and thumbnails) for a request's images: JPEGs nvJPEG takes on the GPU, the rest on the CPU.

        Raises:
            InvalidImageError: naming the first image that cannot be used.
        """
        on_device: list[tuple[torch.Tensor, bytes] | None] = [None] * len(images)
        decoder = self.device_decoder
        if decoder is not None:
            # Header checks and one nvJPEG call for the whole request (thumbnails made from the same
            # decode), in a thread: the call blocks until the pixels are ready, and the event loop
            # keeps serving meanwhile.
            jpegs = [data for _, data in images]
            on_device = await asyncio.to_thread(_decode_on_device, decoder, jpegs, max_pixels, thumbnails)
        reduce_to = self._reduce_to
        if thumbnails and reduce_to is not None:
            reduce_to = (reduce_to[0], max(reduce_to[1], THUMBNAIL_SIZE))

        def prepare(data: bytes) -> tuple[torch.Tensor, bytes]:
            image = decode_image(data, max_pixels=max_pixels, reduce_to=reduce_to)
            return self.preprocess(image), make_thumbnail(image) if thumbnails else b""

        jobs = [(name, data) for (name, data), decoded in zip(images, on_device, strict=True) if decoded is None]
        done = iter(await prepare_all(jobs, prepare))
        prepared = [next(done) if decoded is None else decoded for decoded in on_device]
        return [pixels for pixels, _ in prepared], [thumb for _, thumb in prepared]

    def encode(self, batch: Sequence[torch.Tensor]) -> np.ndarray:
        with self._lock, torch.inference_mode():
            features = self._model.encode_image(self._pixels(batch))  # type: ignore[operator]
            return _unit_rows(features)

    def _pixels(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """The batch as the model's input on its device."""
        place = self._placement
        raw = [t.dtype == torch.uint8 for t in batch]
        if not any(raw):  # the reference pipeline's float tensors
            floats = torch.stack(list(batch))
            if place.device.type == "cuda":
                floats = floats.pin_memory()  # lets the copy to the GPU run asynchronously
            return floats.to(place.device, dtype=place.weights_dtype, non_blocking=True)
        if not all(raw) or self.spec is None:
            raise ValueError("a batch mixes uint8 and float pixels, or uint8 pixels reached a reference-pipeline tower")
        device = place.device
        host = [i for i, t in enumerate(batch) if t.device.type == "cpu"]
        resident = [i for i, t in enumerate(batch) if t.device.type != "cpu"]  # decoded on the GPU
        pixels: torch.Tensor | None = None
        if host:
            staged = self._staging_buffer(len(host), batch[host[0]].shape)
            torch.stack([batch[i] for i in host], out=staged)
            # uint8 over the bus (a quarter of float32), from pinned memory on CUDA. The copy is
            # done before the next batch reuses the buffer: encode waits for its rows under the lock.
            pixels = staged.to(device, non_blocking=True)
        if resident:
            on_device = torch.stack([batch[i] for i in resident])
            if pixels is not None:
                merged = torch.empty((len(batch), *on_device.shape[1:]), dtype=torch.uint8, device=device)
                merged[host], merged[resident] = pixels, on_device
                on_device = merged
            pixels = on_device
        assert pixels is not None  # a batch is never empty
        return normalise(pixels, self.spec, place.weights_dtype)

    def _staging_buffer(self, n: int, shape: torch.Size) -> torch.Tensor:
        """A reused host buffer for n uint8 images, page-locked on CUDA (pinning afresh per batch costs more)."""
        buffer = self._staging
        if buffer is None or buffer.shape[0] < n or buffer.shape[1:] != shape:
            buffer = torch.empty((max(n, 64), *shape), dtype=torch.uint8)
            if self._placement.device.type == "cuda":
                buffer = buffer.pin_memory()
            self._staging = buffer
        return buffer[:n]


def _decode_on_device(
    decoder: DeviceJpegDecoder, images: Sequence[bytes], max_pixels: int, thumbnails: bool
) -> list[tuple[torch.Tensor, bytes] | None]:
    """Device pixels and, if asked, a thumbnail (else b"") for each image the device decoder
    takes, None for the rest (in order)."""
    fits = [i for i, data in enumerate(images) if fits_device_decoder(data, max_pixels=max_pixels)]
    taken = [images[i] for i in fits]
    decoded: list[tuple[torch.Tensor, bytes] | None]
    if thumbnails:
        decoded = decoder.decode_with_thumbnails(taken)
    else:
        decoded = [(pixels, b"") if pixels is not None else None for pixels in decoder.decode(taken)]
    out: list[tuple[torch.Tensor, bytes] | None] = [None] * len(images)
    for i, item in zip(fits, decoded, strict=True):
        out[i] = item
    return out


class ClipTextTower:
    """Text encoder: strings → embeddings, with the trimmed-context fast path where it is exact."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Callable[[list[str]], torch.Tensor],
        placement: Placement,
        pipeline: Pipeline = Pipeline.FAST,
    ) -> None:
        self._model = model
        self._tokenizer = fast_tokenizer(tokenizer) if pipeline is Pipeline.FAST else tokenizer
        self._placement = placement
        # Trimming the padded context is exact only for open_clip's own causal
        # text transformer pooled at the end-of-text token (argmax of the ids).
        self.trims_context = (
            type(model) is open_clip.CLIP
            and getattr(model, "text_pool_type", None) == "argmax"
            and getattr(model, "attn_mask", None) is not None
            and isinstance(tokenizer, SimpleTokenizer)
        )
        self.graphs = (
            TextGraphs(partial(encode_text_trimmed, model), placement.device, int(model.context_length))  # type: ignore[arg-type]
            if self.trims_context and pipeline is Pipeline.FAST and placement.device.type == "cuda"
            else None
        )

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenizer(list(texts))

    def count_tokens(self, batch: Sequence[str]) -> list[int]:
        tokens = self.tokenize(batch)
        # Padding is id 0 after the end-of-text token; real tokens may be 0 too ("!"), so count up to the last non-zero.
        nonzero = tokens != 0
        last = tokens.shape[1] - 1 - torch.flip(nonzero.int(), dims=[1]).argmax(dim=1)
        return [int(n) for n in (last + 1).tolist()]

    @property
    def context_length(self) -> int:
        return int(getattr(self._tokenizer, "context_length", 0) or 77)

    def tokens_needed(self, batch: Sequence[str]) -> list[int]:
        context = self.context_length
        if isinstance(self._tokenizer, SimpleTokenizer):
            return [self._simple_tokens_needed(text, context) for text in batch]
        # Other tokenizers: tokenize with room for any text, then count as count_tokens does.
        wide = max((len(text.encode()) for text in batch), default=0) + context
        tokens = self._tokenizer(list(batch), context_length=wide)  # type: ignore[call-arg]
        nonzero = tokens != 0
        last = tokens.shape[1] - 1 - torch.flip(nonzero.int(), dims=[1]).argmax(dim=1)
        return [int(n) for n in (last + 1).tolist()]

    def _simple_tokens_needed(self, text: str, context: int) -> int:
        """Tokens `text` takes with open_clip's byte-level BPE, or a bound on it when that fits `context`.

        A token covers at least one byte, so a short text cannot be cut and is
        not tokenized here. For printable ASCII the bound is tighter: cleaning
        only collapses whitespace and lowers case, and no token holds
        whitespace, so only the other bytes count (the demo model's 32-token
        context made every query of more than 30 bytes a tokenization on the event loop).
        """
        plain = is_plain_text(text)
        bound = (len(text) - sum(map(str.isspace, text)) if plain else len(text.encode())) + 2
        if bound <= context:
            return bound
        return len(self._tokenizer.encode(text)) + 2  # type: ignore[attr-defined]

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        tokens = self.tokenize(batch)
        with torch.inference_mode():
            if not self.trims_context:
                features = self._model.encode_text(tokens.to(self._placement.device))  # type: ignore[operator]
                return _unit_rows(features)
            # Trimmed on the host, before the copy: finding the length on the device would wait for it.
            tokens = tokens[:, : used_context(tokens)]
            graphed = self.graphs(tokens) if self.graphs is not None else None
            if graphed is not None:
                return _unit_rows(graphed)
            on_device = tokens.to(self._placement.device)
            return _unit_rows(encode_text_trimmed(self._model, on_device, on_device.shape[1]))


def used_context(tokens: torch.Tensor) -> int:
    """Positions up to and including the batch's last end-of-text token (the largest id of each row)."""
    return int(tokens.argmax(dim=-1).max()) + 1


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """open_clip's CLIP.encode_text, run only up to the batch's last end-of-text token.

    With a causal mask no token attends to the padding after it, and the pooled
    feature is read at the end-of-text token (the largest id), so cutting the
    padding changes nothing but the cost. tests/models/test_clip.py checks
    equality with the public path. `length` (>= used_context(tokens)) skips
    finding it, which on a GPU would wait for the device.
    """
    if length is None:
        length = used_context(tokens)
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()  # type: ignore[union-attr,operator]
    x = model.token_embedding(tokens).to(cast_dtype)  # type: ignore[operator]
    x = x + model.positional_embedding[:length].to(cast_dtype)  # type: ignore[index]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])  # type: ignore[index,operator]
    x = model.ln_final(x)  # type: ignore[operator]
    pooled: torch.Tensor = text_global_pool(x, tokens, "argmax")
    projection = model.text_projection
    if isinstance(projection, torch.nn.Linear):
        projected: torch.Tensor = projection(pooled)
    else:
        projected = pooled @ projection  # type: ignore[operator]
    return projected


def zero_shot_probabilities(image: np.ndarray, labels: np.ndarray, logit_scale: float) -> np.ndarray:
    """CLIP's zero-shot classifier: softmax over logit_scale * cosine(image, label prompt)."""
    logits = logit_scale * (labels @ image).astype(np.float64)
    exp = np.exp(logits - logits.max())
    probabilities: np.ndarray = exp / exp.sum()
    return probabilities


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    rows: np.ndarray = F.normalize(features.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)
    return rows


@dataclass(frozen=True)
class ClipTowers:
    """A loaded CLIP model as two towers plus what clients need to know about it."""

    image: ImageTower
    text: TextTower
    info: ModelInfo
    logit_scale: float


def set_torch_threads(threads: int | None) -> None:
    """Threads torch uses per forward pass on CPU (process-wide); None keeps torch's default."""
    if threads is not None:
        torch.set_num_threads(threads)


def load_clip(
    name: str,
    pretrained: str | None,
    device: str,
    *,
    fallback_to_demo: bool,
    precision: Precision | str = Precision.AUTO,
    pipeline: Pipeline | str = Pipeline.FAST,
) -> ClipTowers:
    """Load an open_clip model.

    Args:
        name: open_clip model name (`ViT-B-32`, ..., or the bundled `demo`).
        pretrained: an open_clip pretrained tag, an `hf-hub:org/repo` id, a local
            checkpoint path, or `none` for random weights; None means the model's default.
        device: `auto`, `cpu`, `cuda`, `cuda:N`.
        fallback_to_demo: when a tag or hub id cannot be fetched (e.g. no network),
            log one line and serve the bundled demo model instead of failing.
        precision: `fp32` (equal to open_clip's reference to 1e-5), `bf16`, `fp16`
            (GPU), or `auto` (see resolve_precision).
        pipeline: `fast` (uint8 pixels, JPEGs decoded on the GPU, CUDA graphs for
            text) or `reference` (open_clip's transform and eager forward passes).

    Raises:
        ModelLoadError: the model cannot be loaded, with the reason.
    """
    register_bundled_configs()
    spec = pretrained if pretrained is not None else DEFAULT_PRETRAINED.get(name)
    if spec is None:
        raise ModelLoadError(
            f"model {name!r} has no default weights: give --pretrained (a tag, hf-hub: id, path or none)"
        )
    torch_device = resolve_device(device)
    placement = Placement(torch_device, resolve_precision(precision, torch_device))
    kind = classify_weights(name, spec)
    fetched = kind in (WeightsKind.TAG, WeightsKind.HF_HUB)
    # Where the hub cannot be reached, only its local cache is read: a failure is then one line, at once.
    unreachable = hub.unreachable_reason() if fetched else None
    try:
        if unreachable is None:
            with _open_clip_quiet():
                return _load(name, spec, kind, placement, Pipeline(pipeline))
        with hub.offline(), _open_clip_quiet(offline=True):
            return _load(name, spec, kind, placement, Pipeline(pipeline))
    except ModelLoadError as exc:
        if not (fallback_to_demo and fetched):
            if unreachable is not None:
                raise ModelLoadError(f"{_not_cached(name, spec, unreachable)}: {exc}") from exc
            raise
        reason = _not_cached(name, spec, unreachable) if unreachable is not None else str(exc).splitlines()[0]
    log.warning(
        "%s; serving the bundled demo model instead: %s (set CLIPSEARCH_MODEL__FALLBACK_TO_DEMO=false to fail instead)",
        reason,
        DEMO_NOTICE,
    )
    with _open_clip_quiet():
        towers = _load(DEMO_MODEL, str(DEMO_CHECKPOINT), WeightsKind.FILE, placement, Pipeline(pipeline))
    return replace(towers, info=replace(towers.info, fallback_reason=reason))


class _QuietPackage(logging.Filter):
    """Drops the records a package logs below `level` (with the root logger's own calls, as open_clip does)."""

    def __init__(self, directory: Path, level: int) -> None:
        super().__init__()
        self._directory = str(directory)
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self._level or not record.pathname.startswith(self._directory)


@contextmanager
def _open_clip_quiet(offline: bool = False) -> Iterator[None]:
    """Meanwhile, open_clip's ten lines of progress per load are kept for debug logging only (load_clip
    says what was loaded in one), and offline its errors too: they restate the failure load_clip explains."""
    level = logging.CRITICAL + 1 if offline else logging.WARNING
    if log.isEnabledFor(logging.DEBUG):
        level = logging.NOTSET
    quiet = _QuietPackage(Path(open_clip.__file__).parent, level)
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _not_cached(name: str, spec: str, unreachable: str) -> str:
    return (
        f"cannot fetch weights {spec} for {name}: {unreachable}, and they are not in the local cache {hub.cache_dir()}"
    )


def _demo_checkpoint_hint(name: str, path: str) -> str | None:
    """Which demo model name a demo checkpoint of the other architecture loads with, if it is one."""
    if name not in (DEMO_MODEL, DEMO_VIT_MODEL):
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a torch file at all: open_clip's own error says enough
        return None
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    keys = {str(k).removeprefix("module.") for k in state}
    if name == DEMO_MODEL and "visual.transformer.resblocks.0.attn.in_proj_weight" in keys:
        return f"it is a checkpoint of the earlier demo architecture (a ViT): load it with --model {DEMO_VIT_MODEL}"
    if name == DEMO_VIT_MODEL and "visual.layer1.0.conv1.weight" in keys:
        return f"it is a checkpoint of the current demo architecture: load it with --model {DEMO_MODEL}"
    return None


def _load(name: str, spec: str, kind: WeightsKind, placement: Placement, pipeline: Pipeline) -> ClipTowers:
    device = placement.device
    # On CUDA open_clip makes the half-precision model itself (LayerNorm kept in fp32);
    # on the CPU bf16 stays what it was: the whole model cast after loading.
    precision = str(placement.precision) if device.type == "cuda" else "fp32"
    if kind is WeightsKind.NONE:
        log.warning("serving %s with RANDOM weights (--pretrained none): for benchmarks only", name)
    try:
        if kind is WeightsKind.HF_HUB:
            # open_clip reads both config and weights from the hub repo.
            model, _, preprocess = open_clip.create_model_and_transforms(spec, device=device, precision=precision)
            tokenizer = open_clip.get_tokenizer(spec)
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=None if kind is WeightsKind.NONE else spec, device=device, precision=precision
            )
            tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:  # open_clip raises bare RuntimeErrors and hub errors alike
        hint = _demo_checkpoint_hint(name, spec) if kind is WeightsKind.FILE else None
        raise ModelLoadError(f"cannot load {name} with weights {spec}: {hint or exc}") from exc
    logit_scale = float(model.logit_scale.exp().item())
    if device.type == "cpu":
        model = model.to(placement.weights_dtype)
    model = model.eval()
    with torch.inference_mode():
        probe = model.encode_text(tokenizer(["probe"]).to(device))
    dim = int(probe.shape[-1])
    info = ModelInfo(
        # A hub repo brings its own architecture: the repo id names the model.
        name=spec if kind is WeightsKind.HF_HUB else name,
        pretrained=spec,
        dim=dim,
        device=str(device),
        precision=str(placement.precision),
    )
    log.info("loaded %s (%s) on %s in %s, %d-d embeddings", name, spec, device, placement.precision, dim)
    return ClipTowers(
        image=ClipImageTower(model, preprocess, placement, pipeline),
        text=ClipTextTower(model, tokenizer, placement, pipeline),
        info=info,
        logit_scale=logit_scale,
    )

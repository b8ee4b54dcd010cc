from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import constants as hf_constants
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from demo.scenes import render, scene_set
from harness.server import free_port
from models.clip import (
    DEMO_MODEL,
    ClipImageTower,
    ClipTextTower,
    Placement,
    Precision,
    encode_text_trimmed,
    load_clip,
    register_bundled_configs,
    resolve_precision,
    used_context,
    zero_shot_probabilities,
)
from models.errors import ModelLoadError
from models.pixels import normalise
from models.text_graphs import BATCH_BUCKETS, bucket, pad_tokens
from tests.models.photos import photo_jpegs
from tests.models.test_tokenizer import ANY_TEXT, ASCII_PRINTABLE, TOKENIZER_CASES

TEXTS = ["a red circle", "a small blue star on the left and a large green square at the top", "wow!", "!!", "x"]
NON_ASCII = ["café crème brûlée", "東京の夜景", "🐱 on a sofa", "Zürich — Straße", "ÅÄÖ åäö"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised demo-architecture model saved like any open_clip checkpoint."""
    register_bundled_configs()
    torch.manual_seed(1234)
    model = open_clip.create_model(DEMO_MODEL)
    path = tmp_path_factory.mktemp("ckpt") / "random-demo.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_checkpoint_path_loads_and_embeds_exactly_like_open_clips_reference_pipeline(checkpoint):
    towers = load_clip(DEMO_MODEL, str(checkpoint), "cpu", fallback_to_demo=False, precision="fp32")
    model, _, preprocess = open_clip.create_model_and_transforms(DEMO_MODEL, pretrained=str(checkpoint))
    model.eval()
    tokenizer = open_clip.get_tokenizer(DEMO_MODEL)
    images = [render(scene, size=96) for scene in scene_set(5, 4)]
    with torch.no_grad():
        ref_images = F.normalize(model.encode_image(torch.stack([preprocess(i) for i in images])), dim=-1).numpy()
        ref_texts = F.normalize(model.encode_text(tokenizer(TEXTS)), dim=-1).numpy()
    ours_images = towers.image.encode([towers.image.prepare(png(i), max_pixels=10**7) for i in images])
    ours_texts = towers.text.encode(TEXTS)
    np.testing.assert_allclose(ours_images, ref_images, atol=1e-5)
    np.testing.assert_allclose(ours_texts, ref_texts, atol=1e-5)
    assert ours_images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours_texts, axis=1), 1.0, atol=1e-5)
    assert towers.info.pretrained == str(checkpoint) and towers.info.dim == 64
    assert towers.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))


@pytest.mark.parametrize("name", [DEMO_MODEL, "ViT-B-32"])
def test_the_trimmed_text_path_equals_open_clips_encode_text(name):
    register_bundled_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(name).eval()
    tokens = open_clip.get_tokenizer(name)(TEXTS)
    with torch.no_grad():
        full = model.encode_text(tokens)
        trimmed = encode_text_trimmed(model, tokens)
    np.testing.assert_allclose(trimmed.numpy(), full.numpy(), atol=1e-5)


def test_bf16_weights_on_the_cpu_stay_within_a_cosine_of_0999_of_fp32(checkpoint):
    exact = load_clip(DEMO_MODEL, str(checkpoint), "cpu", fallback_to_demo=False, precision="fp32")
    half = load_clip(DEMO_MODEL, str(checkpoint), "cpu", fallback_to_demo=False, precision="bf16")
    assert half.info.precision == "bf16"
    images = [half.image.preprocess(render(scene)) for scene in scene_set(8, 4)]
    for a, b in [
        (exact.text.encode(TEXTS), half.text.encode(TEXTS)),
        (exact.image.encode(images), half.image.encode(images)),
    ]:
        assert b.dtype == np.float32
        assert np.min(np.sum(a * b, axis=1)) > 0.999


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"), [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")]
)
def test_auto_precision_is_bf16_on_a_cpu_with_native_bf16_and_fp32_otherwise(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"


# The demo model reads 32 tokens: start, 30 words, end fill it exactly; 50 words are cut.
EDGE_TEXTS = ["red " * 30, "a blue square " * 17, "ein roter Kreis 🔴 " * 8]


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-5), ("auto", None)])
def test_texts_at_and_past_the_full_context_embed_like_open_clips_reference(checkpoint, precision, tolerance):
    towers = load_clip(DEMO_MODEL, str(checkpoint), "cpu", fallback_to_demo=False, precision=precision)
    model, _, _ = open_clip.create_model_and_transforms(DEMO_MODEL, pretrained=str(checkpoint))
    tokenizer = open_clip.get_tokenizer(DEMO_MODEL)
    assert towers.text.tokens_needed(EDGE_TEXTS[:1]) == [32] and towers.text.context_length == 32
    assert all(n > 32 for n in towers.text.tokens_needed(EDGE_TEXTS[1:]))
    with torch.no_grad():
        reference = F.normalize(model.eval().encode_text(tokenizer(EDGE_TEXTS)), dim=-1).numpy()
    ours = towers.text.encode(EDGE_TEXTS)
    if tolerance is not None:
        np.testing.assert_allclose(ours, reference, atol=tolerance)
    else:  # the default precision (bf16 on CPUs with native bf16): its own, looser bar
        assert np.min(np.sum(ours * reference, axis=1)) > 0.999


def test_the_default_precision_embeds_images_within_a_cosine_of_0999_of_open_clips_reference(checkpoint):
    towers = load_clip(DEMO_MODEL, str(checkpoint), "cpu", fallback_to_demo=False)
    model, _, preprocess = open_clip.create_model_and_transforms(DEMO_MODEL, pretrained=str(checkpoint))
    images = [render(scene, size=96) for scene in scene_set(6, 4)]
    with torch.no_grad():
        reference = F.normalize(model.eval().encode_image(torch.stack([preprocess(i) for i in images])), dim=-1)
    ours = towers.image.encode([towers.image.prepare(png(i), max_pixels=10**7) for i in images])
    assert np.min(np.sum(ours * reference.numpy(), axis=1)) > 0.999


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(ModelLoadError, match="fp16 is for GPUs"):
        resolve_precision("fp16", torch.device("cpu"))


def test_the_text_tower_uses_the_trimmed_path_for_clip_models(checkpoint):
    towers = load_clip(DEMO_MODEL, str(checkpoint), "cpu", fallback_to_demo=False)
    assert towers.text.trims_context  # type: ignore[attr-defined]


def test_random_weights_are_served_when_asked_for():
    towers = load_clip(DEMO_MODEL, "none", "cpu", fallback_to_demo=False)
    assert towers.info.pretrained == "none"


def test_an_unknown_model_name_is_refused_with_the_known_ones():
    with pytest.raises(ModelLoadError, match=r"unknown model 'ViT-Nope'.*ViT-B-32"):
        load_clip("ViT-Nope", "none", "cpu", fallback_to_demo=True)


def test_an_unknown_pretrained_spec_is_refused_with_the_known_tags():
    with pytest.raises(ModelLoadError, match=r"not a pretrained tag of 'ViT-B-32'.*laion2b_s34b_b79k"):
        load_clip("ViT-B-32", "no-such-tag-or-file", "cpu", fallback_to_demo=True)


def test_unfetchable_default_weights_fall_back_to_the_demo_model():
    # tests/conftest.py sets HF_HUB_OFFLINE, so the download fails at once.
    towers = load_clip("ViT-B-32", None, "cpu", fallback_to_demo=True)
    assert towers.info.name == DEMO_MODEL
    assert towers.info.fallback_reason is not None and "laion2b_s34b_b79k" in towers.info.fallback_reason


def test_without_fallback_unfetchable_weights_fail_with_a_clear_message():
    with pytest.raises(ModelLoadError, match="cannot load ViT-B-32 with weights laion2b_s34b_b79k"):
        load_clip("ViT-B-32", None, "cpu", fallback_to_demo=False)


def test_an_hf_hub_id_is_fetched_from_the_hub_and_fails_clearly_offline():
    with pytest.raises(
        ModelLoadError, match=r"cannot load .* with weights hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    ):
        load_clip("ViT-B-32", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "cpu", fallback_to_demo=False)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """The hub at an address where nothing listens, HF_HUB_OFFLINE unset, an empty cache: a host without network."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return tmp_path / "hub-cache"


def test_without_network_the_fallback_is_one_warning_at_once_not_a_minute_of_hub_retries(no_network, caplog):
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    towers = load_clip("ViT-B-32", None, "cpu", fallback_to_demo=True)
    assert time.monotonic() - started < 20  # huggingface_hub's retries took 47 s here
    assert towers.info.name == DEMO_MODEL
    assert "127.0.0.1 cannot be reached" in (towers.info.fallback_reason or "")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "serving the bundled demo model instead" in warnings[0]
    assert "trained on generated coloured shapes" in warnings[0]
    assert "not in the local cache" in warnings[0]
    assert not [r for r in caplog.records if r.name.startswith("huggingface_hub") or r.name == "root"]


def test_without_network_and_without_fallback_the_error_says_the_hub_is_unreachable(no_network):
    with pytest.raises(ModelLoadError, match=r"127\.0\.0\.1 cannot be reached.*not in the local cache"):
        load_clip("ViT-B-32", None, "cpu", fallback_to_demo=False)


def test_without_network_weights_in_the_local_hub_cache_are_served(no_network, checkpoint):
    # As copied from a connected host's ~/.cache/huggingface/hub: config and weights of one hub repo.
    snapshot = no_network / "models--someone--demo-copy" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (no_network / "models--someone--demo-copy" / "refs").mkdir()
    (no_network / "models--someone--demo-copy" / "refs" / "main").write_text("0" * 40)
    register_bundled_configs()
    config = {"model_cfg": open_clip.get_model_config(DEMO_MODEL), "preprocess_cfg": {}}
    (snapshot / "open_clip_config.json").write_text(json.dumps(config))
    state = torch.load(checkpoint, map_location="cpu")["state_dict"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "open_clip_model.safetensors"))

    towers = load_clip("ViT-B-32", "hf-hub:someone/demo-copy", "cpu", fallback_to_demo=True, precision="fp32")
    assert (towers.info.name, towers.info.fallback_reason) == ("hf-hub:someone/demo-copy", None)
    reference = load_clip(DEMO_MODEL, str(checkpoint), "cpu", fallback_to_demo=False, precision="fp32")
    np.testing.assert_allclose(towers.text.encode(TEXTS), reference.text.encode(TEXTS), atol=1e-5)


def test_a_safetensors_checkpoint_file_loads_like_the_torch_one(checkpoint, tmp_path):
    # The README's air-gapped recipe: copy open_clip_model.safetensors over and name it with --pretrained.
    state = torch.load(checkpoint, map_location="cpu")["state_dict"]
    path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    towers = load_clip(DEMO_MODEL, str(path), "cpu", fallback_to_demo=False, precision="fp32")
    reference = load_clip(DEMO_MODEL, str(checkpoint), "cpu", fallback_to_demo=False, precision="fp32")
    np.testing.assert_allclose(towers.text.encode(TEXTS), reference.text.encode(TEXTS), atol=1e-5)


def test_asking_for_cuda_without_a_gpu_is_a_load_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        load_clip(DEMO_MODEL, "none", "cuda", fallback_to_demo=False)


def test_zero_shot_probabilities_are_a_softmax_over_scaled_cosines():
    image = np.array([1.0, 0.0], dtype=np.float32)
    labels = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    probabilities = zero_shot_probabilities(image, labels, logit_scale=2.0)
    assert probabilities.sum() == pytest.approx(1.0)
    assert probabilities[0] == pytest.approx(np.exp(2) / (np.exp(2) + 1))


@pytest.mark.parametrize(("name", "pretrained"), [("ViT-B-32", "none"), (DEMO_MODEL, None)])
def test_the_fast_pipeline_embeds_real_photographs_like_open_clips_transform(name, pretrained):
    torch.manual_seed(0)  # the random ViT-B-32 weights
    fast = load_clip(name, pretrained, "cpu", fallback_to_demo=False, precision="fp32")
    reference = load_clip(name, pretrained, "cpu", fallback_to_demo=False, precision="fp32", pipeline="reference")
    reference.image._model = fast.image._model  # type: ignore[attr-defined]  # one set of random weights
    jpegs = list(photo_jpegs().values())
    ours = fast.image.encode([fast.image.prepare(data, max_pixels=10**8) for data in jpegs])
    _, _, preprocess = open_clip.create_model_and_transforms(name)
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in jpegs]
    theirs = reference.image.encode([preprocess(image) for image in images])
    cosines = np.sum(ours * theirs, axis=1)
    assert np.min(cosines) >= 0.995, cosines
    # The bar means something: two different photographs are further apart than that.
    others = theirs @ theirs.T
    assert np.max(others[~np.eye(len(jpegs), dtype=bool)]) < 0.995


def test_the_reference_pipeline_prepares_with_open_clips_own_transform():
    towers = load_clip(DEMO_MODEL, None, "cpu", fallback_to_demo=False, pipeline="reference")
    _, _, preprocess = open_clip.create_model_and_transforms(DEMO_MODEL)
    data = photo_jpegs()["coffee"]
    prepared = towers.image.prepare(data, max_pixels=10**8)
    assert prepared.dtype == torch.float32
    np.testing.assert_array_equal(prepared.numpy(), preprocess(Image.open(io.BytesIO(data)).convert("RGB")).numpy())
    assert towers.text.graphs is None  # type: ignore[attr-defined]


def test_the_fast_pipeline_hands_uint8_pixels_to_the_batch():
    towers = load_clip(DEMO_MODEL, None, "cpu", fallback_to_demo=False)
    prepared = towers.image.prepare(photo_jpegs()["rocket"], max_pixels=10**8)
    assert prepared.dtype == torch.uint8 and prepared.shape == (3, 64, 64)
    with pytest.raises(ValueError, match="mixes"):
        towers.image.encode([prepared, prepared.float()])


def test_half_precision_weights_made_by_open_clip_stay_within_a_cosine_of_0999_of_fp32():
    # What load_clip does on CUDA (open_clip's fp16 mode), run on the CPU in bf16.
    register_bundled_configs()
    torch.manual_seed(3)
    exact, _, preprocess = open_clip.create_model_and_transforms(DEMO_MODEL, precision="fp32")
    half, _, _ = open_clip.create_model_and_transforms(DEMO_MODEL, precision="bf16")
    half.load_state_dict(exact.state_dict())
    tokenizer = open_clip.get_tokenizer(DEMO_MODEL)
    towers = []
    for model, precision in [(exact, Precision.FP32), (half, Precision.BF16)]:
        place = Placement(torch.device("cpu"), precision)
        towers.append((ClipImageTower(model.eval(), preprocess, place), ClipTextTower(model, tokenizer, place)))
    images = [render(scene) for scene in scene_set(8, 4)]
    (image32, text32), (image16, text16) = towers
    pixels = [image32.preprocess(i) for i in images]
    assert image16._pixels(pixels).dtype == torch.bfloat16
    pairs = [
        (
            image32.encode([image32.preprocess(i) for i in images]),
            image16.encode([image16.preprocess(i) for i in images]),
        ),
        (text32.encode(TEXTS + NON_ASCII), text16.encode(TEXTS + NON_ASCII)),
    ]
    for a, b in pairs:
        assert np.min(np.sum(a * b, axis=1)) > 0.999


@pytest.mark.parametrize("name", [DEMO_MODEL, "ViT-B-32"])
def test_tokens_padded_to_a_cuda_graph_bucket_encode_like_open_clips_encode_text(name):
    # The CPU twin of TextGraphs: the padded batch it copies into a graph, run eagerly.
    register_bundled_configs()
    torch.manual_seed(0)
    model = open_clip.create_model(name).eval()
    tokens = open_clip.get_tokenizer(name)(TEXTS + NON_ASCII)
    length = used_context(tokens)
    rows, padded_length = bucket(len(tokens), BATCH_BUCKETS), bucket(length, (16, 24, 32, 77))
    assert rows == 16 and padded_length is not None and padded_length > length
    padded = pad_tokens(tokens[:, :length], rows, padded_length)
    with torch.no_grad():
        full = model.encode_text(tokens)
        graphed = encode_text_trimmed(model, padded, padded_length)[: len(tokens)]
    np.testing.assert_allclose(graphed.numpy(), full.numpy(), atol=1e-5)


def test_buckets_are_the_smallest_that_fit_and_none_past_the_largest():
    assert [bucket(n, BATCH_BUCKETS) for n in (1, 3, 64, 65, 256)] == [1, 4, 64, 128, 256]
    assert bucket(257, BATCH_BUCKETS) is None


def test_used_context_counts_up_to_the_last_end_of_text_token():
    tokens = open_clip.get_tokenizer(DEMO_MODEL)(["a b c", "a"])
    assert used_context(tokens) == 5  # start, three words, end


def test_uint8_batches_go_through_one_reused_staging_buffer_and_embed_as_if_stacked_afresh():
    # The CPU twin of the pinned buffer the CUDA path reuses for every batch.
    towers = load_clip(DEMO_MODEL, None, "cpu", fallback_to_demo=False, precision="fp32")
    tower = towers.image
    assert isinstance(tower, ClipImageTower) and tower.spec is not None
    jpegs = list(photo_jpegs().values())
    first = [tower.prepare(data, max_pixels=10**8) for data in jpegs]
    second = list(reversed(first))[:3]
    rows_first = tower.encode(first)
    buffer = tower._staging
    assert buffer is not None
    rows_second = tower.encode(second)
    assert tower._staging is buffer  # reused, not made again
    for rows, batch in [(rows_first, first), (rows_second, second)]:
        with torch.no_grad():
            fresh = tower._model.encode_image(normalise(torch.stack(batch), tower.spec, torch.float32))  # type: ignore[operator]
        np.testing.assert_allclose(rows, F.normalize(fresh, dim=-1).numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def demo_text_tower(checkpoint):
    return load_clip(DEMO_MODEL, str(checkpoint), "cpu", fallback_to_demo=False).text


# Texts that cleaning changes (NFC, lower(), HTML unescaping), at and around the demo model's 32 tokens.
CLEANED_TEXTS = ["\u0958" * 9, "\u0958" * 12, "\u0130" * 20, "\ufb01" * 40, "fish &amp; chips " * 3]


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(ASCII_PRINTABLE, ANY_TEXT, st.sampled_from(TOKENIZER_CASES + CLEANED_TEXTS)))
def test_tokens_needed_never_misses_a_cut_and_is_exact_for_texts_that_are_cut(demo_text_tower, text):
    exact = len(open_clip.get_tokenizer(DEMO_MODEL).encode(text)) + 2
    [needed] = demo_text_tower.tokens_needed([text])
    context = demo_text_tower.context_length
    if exact > context:
        assert needed == exact
    else:
        assert exact <= needed <= context

"""The BLIP loading path and towers, with tiny random checkpoints saved here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    BlipConfig,
    BlipForConditionalGeneration,
    BlipForImageTextRetrieval,
    BlipTextConfig,
    BlipVisionConfig,
)

from demo.blip_config import demo_config, demo_processor, demo_vocabulary
from models.blip import (
    DEMO_CAPTIONER_DIR,
    DEMO_ITM_DIR,
    CaptionJob,
    CaptionOptions,
    Decoding,
    MatchJob,
    load_captioner,
    load_itm,
)
from models.errors import ModelLoadError


def tiny_config() -> BlipConfig:
    config = demo_config()
    assert isinstance(config.vision_config, BlipVisionConfig) and isinstance(config.text_config, BlipTextConfig)
    config.vision_config.num_hidden_layers = 1
    config.text_config.num_hidden_layers = 1
    return config


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A randomly initialised captioner and ITM model, written as real checkpoints are."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("blip")
    paths = {}
    for name, cls in [("caption", BlipForConditionalGeneration), ("itm", BlipForImageTextRetrieval)]:
        cls(tiny_config()).save_pretrained(root / name)
        demo_processor().save_pretrained(root / name)
        paths[name] = root / name
    return paths


def images() -> list[Image.Image]:
    return [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (40, 64), (30, 30, 200))]


def test_a_captioner_saved_with_save_pretrained_loads_by_path_and_matches_the_library(saved):
    captioner = load_captioner(str(saved["caption"]), "cpu")
    assert captioner.info.source == str(saved["caption"])
    jobs = [CaptionJob(captioner.preprocess(im), CaptionOptions(max_new_tokens=6, num_beams=2)) for im in images()]
    ours = captioner.caption(jobs)
    # The reference: transformers' own documented use of the same files.
    model = BlipForConditionalGeneration.from_pretrained(saved["caption"]).eval()
    processor = demo_processor().from_pretrained(saved["caption"])
    inputs = processor(images=images(), return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=6, num_beams=2)
    assert ours == [" ".join(t.split()) for t in processor.batch_decode(out, skip_special_tokens=True)]


def test_a_prompt_starts_the_caption(saved):
    captioner = load_captioner(str(saved["caption"]), "cpu")
    job = CaptionJob(captioner.preprocess(images()[0]), CaptionOptions(max_new_tokens=3, prompt="a photo of"))
    assert captioner.caption([job])[0].startswith("a photo of")


def test_jobs_with_different_options_are_run_separately_and_returned_in_order(saved):
    captioner = load_captioner(str(saved["caption"]), "cpu")
    pixels = captioner.preprocess(images()[0])
    beam = CaptionOptions(max_new_tokens=4)
    sampled = CaptionOptions(max_new_tokens=2, decoding=Decoding.SAMPLE)
    together = captioner.caption([CaptionJob(pixels, beam), CaptionJob(pixels, sampled), CaptionJob(pixels, beam)])
    alone = captioner.caption([CaptionJob(pixels, beam)])
    assert together[0] == together[2] == alone[0]
    assert len(together[1].split()) <= 2 * 2  # at most 2 tokens, each a word or a piece


def test_an_itm_model_saved_with_save_pretrained_loads_by_path_and_matches_the_library(saved):
    matcher = load_itm(str(saved["itm"]), "cpu")
    texts = ["a red circle", "a blue square on the left"]
    ours = matcher.match([MatchJob(matcher.preprocess(im), t) for im, t in zip(images(), texts, strict=True)])
    model = BlipForImageTextRetrieval.from_pretrained(saved["itm"]).eval()
    processor = demo_processor().from_pretrained(saved["itm"])
    with torch.inference_mode():
        for im, text, probability in zip(images(), texts, ours, strict=True):
            inputs = processor(images=im, text=text, return_tensors="pt")
            logits = model(**inputs, use_itm_head=True).itm_score
            assert probability == pytest.approx(float(torch.softmax(logits, dim=-1)[0, 1]), abs=1e-5)


def test_a_missing_directory_fails_to_load_with_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="is not a directory written by save_pretrained"):
        load_captioner(str(tmp_path / "nothing-here"), "cpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_asking_for_cuda_without_a_gpu_is_the_same_load_error_as_for_clip(device):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match=f"device '{device}' was asked for, but torch sees no CUDA device"):
        load_captioner("demo", device)


def test_an_unknown_device_is_a_load_error_naming_it():
    with pytest.raises(ModelLoadError, match="unknown device 'tpu'"):
        load_itm("demo", "tpu")


def test_a_hub_id_that_cannot_be_downloaded_fails_with_a_clear_error():
    # The suite runs with HF_HUB_OFFLINE=1, as this machine has no network.
    with pytest.raises(ModelLoadError, match="cannot load BLIP itm model 'Salesforce/blip-itm-base-coco' from the"):
        load_itm("Salesforce/blip-itm-base-coco", "cpu")


def test_the_demo_vocabulary_spells_unknown_words_instead_of_losing_them():
    tokenizer = demo_processor().tokenizer
    assert "[UNK]" not in tokenizer.tokenize("a zebra")
    assert tokenizer.decode(tokenizer("a large blue square")["input_ids"], skip_special_tokens=True) == (
        "a large blue square"
    )
    assert len(demo_vocabulary()) < 100


@pytest.mark.parametrize("directory", [DEMO_CAPTIONER_DIR, DEMO_ITM_DIR])
def test_the_bundled_demo_checkpoints_are_small(directory):
    assert sum(f.stat().st_size for f in directory.iterdir()) <= 10 * 1024 * 1024

from __future__ import annotations

import io

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from models.clip import DEMO_MODEL, register_bundled_configs
from models.pixels import PixelSpec, normalise, pixel_spec, resize_crop, resize_crop_tensor
from tests.models.photos import photo_jpegs

VIT_TRANSFORM = open_clip.image_transform(224, is_train=False)  # ViT-B-32's eval transform
VIT = pixel_spec(VIT_TRANSFORM)


def rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_the_spec_of_open_clips_eval_transform_is_read_from_it():
    assert PixelSpec(224, "bicubic", open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD) == VIT
    register_bundled_configs()
    _, _, demo = open_clip.create_model_and_transforms(DEMO_MODEL)
    assert pixel_spec(demo) == PixelSpec(64, "bicubic", open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)


@pytest.mark.parametrize("resize_mode", ["longest", "squash"])
def test_transforms_without_a_fast_twin_have_no_spec(resize_mode):
    assert pixel_spec(open_clip.image_transform(224, is_train=False, resize_mode=resize_mode)) is None
    assert pixel_spec(lambda image: torch.zeros(3)) is None


@pytest.mark.parametrize("size", [(640, 480), (480, 640), (300, 301), (224, 224), (1000, 3)])
def test_resize_crop_then_normalise_equals_open_clips_transform(size):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    assert VIT is not None
    pixels = resize_crop(image, VIT)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 224, 224)
    ours = normalise(pixels[None], VIT, torch.float32)[0]
    # Pillow resamples the crop's box with the same coefficients up to float rounding: at most one level of 255.
    np.testing.assert_allclose(ours.numpy(), VIT_TRANSFORM(image).numpy(), atol=1.01 / 255 / 0.26)


def test_the_tensor_resize_matches_pillows_on_real_photographs():
    assert VIT is not None
    for name, data in photo_jpegs().items():
        reference = resize_crop(rgb(data), VIT).int()
        decoded = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        ours = resize_crop_tensor(decoded[None], VIT)[0].int()
        assert ours.shape == reference.shape, name
        difference = (ours - reference).abs()
        # libjpeg-turbo in torchvision and in Pillow differ by a level here and there; the resamplers agree.
        assert difference.float().mean() < 0.25 and difference.max() <= 6, name


def test_normalise_gives_the_asked_type_on_the_batchs_device():
    assert VIT is not None
    batch = torch.full((2, 3, 224, 224), 255, dtype=torch.uint8)
    out = normalise(batch, VIT, torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.device == batch.device
    expected = (1 - torch.tensor(VIT.mean)) / torch.tensor(VIT.std)
    np.testing.assert_allclose(out[0, :, 0, 0].float().numpy(), expected.numpy(), rtol=1e-2)

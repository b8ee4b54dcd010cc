"""The demo BLIP models' architecture and vocabulary, for training them (demo/train_blip.py) and in tests.

The service never imports this: the bundled demo weights are saved with their
config and processor (models/weights/blip-*-demo), and load like any checkpoint.
"""

from __future__ import annotations

from transformers import BertTokenizer, BlipConfig, BlipImageProcessor, BlipProcessor

from demo.scenes import COLOURS, POSITION_PHRASES, SHAPES, SIZES

DEMO_IMAGE_SIZE = 64
_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")


def demo_vocabulary() -> dict[str, int]:
    """WordPiece vocabulary of the demo models: special tokens, every caption word, and letters.

    The words are those the scene generator writes; single letters (and their
    `##` continuations) let any other lower-case word be spelt out rather than
    become [UNK].
    """
    words = {"a", "an", "photo", "of", "image", "picture", "there", "is", "and", "on", "the", "at", "in"}
    words.update(SHAPES, COLOURS, SIZES)
    for phrase in POSITION_PHRASES.values():
        words.update(phrase.split())
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = [*_SPECIALS, *sorted(words), *(c for c in letters if c not in words), *(f"##{c}" for c in letters)]
    return {token: i for i, token in enumerate(tokens)}


def demo_processor() -> BlipProcessor:
    """BlipProcessor of the demo models: 64x64 images, CLIP's normalisation, the demo vocabulary."""
    tokenizer = BertTokenizer(vocab=demo_vocabulary(), do_lower_case=True, bos_token="[DEC]")
    images = BlipImageProcessor(size={"height": DEMO_IMAGE_SIZE, "width": DEMO_IMAGE_SIZE})
    return BlipProcessor(image_processor=images, tokenizer=tokenizer)  # type: ignore[no-untyped-call]


def demo_config() -> BlipConfig:
    """A small BlipConfig (about 1.4M parameters) for 64x64 scenes and the demo vocabulary."""
    vocab = demo_vocabulary()
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 128,
        "encoder_hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "bos_token_id": vocab["[DEC]"],
        "eos_token_id": vocab["[SEP]"],
        "sep_token_id": vocab["[SEP]"],
        "pad_token_id": vocab["[PAD]"],
    }
    vision = {
        # The demo CLIP's image tower, whose weights the captioner starts from.
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "image_size": DEMO_IMAGE_SIZE,
        "patch_size": 8,
        # transformers' default (1e-10) suits fine-tuning, not training from scratch.
        "initializer_range": 0.02,
    }
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=128, image_text_hidden_size=128)

from __future__ import annotations

import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models import tokenizer as fast
from models.tokenizer import FastTokenizer, fast_tokenizer

TOKENIZER_CASES = [
    "a red circle",
    "  A  Red\tCircle\r\n ",
    "fish &amp; chips",
    "caf\u00e9 \u201cquoted\u201d",
    "\u00e2\u0080\u0099 mojibake",
    "\x00\x1b[31mred\x7f",
    "ein roter Kreis \U0001f534 \u8d64\u3044\u5186",
    "<start_of_text> a red <END_OF_TEXT> circle",
    "it's a dog's life, isn't it? they'll say we'd",
    "",
]
ASCII_PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
ANY_TEXT = st.text(max_size=40)


def fast_copy(name: str = "ViT-B-32") -> FastTokenizer:
    tokenizer = fast_tokenizer(open_clip.get_tokenizer(name))
    assert isinstance(tokenizer, FastTokenizer)
    return tokenizer


REFERENCE_TOKENIZER = open_clip.get_tokenizer("ViT-B-32")
FAST_TOKENIZER = fast_copy()


@settings(max_examples=500, deadline=None)
@given(
    texts=st.lists(st.one_of(ASCII_PRINTABLE, ANY_TEXT, st.sampled_from(TOKENIZER_CASES)), min_size=1, max_size=4),
    context=st.sampled_from([None, 5, 16, 77]),
)
def test_the_fast_tokenizer_gives_open_clips_token_ids_for_any_texts_and_context(texts, context):
    assert torch.equal(FAST_TOKENIZER(texts, context), REFERENCE_TOKENIZER(texts, context))
    for text in texts:
        assert FAST_TOKENIZER.encode(text) == REFERENCE_TOKENIZER.encode(text)


def test_a_text_past_the_context_is_cut_and_ends_with_the_end_token_as_open_clip_does():
    text = "a red circle " * 40
    tokens = FAST_TOKENIZER([text])
    assert tokens.shape == (1, 77) and int(tokens[0, -1]) == REFERENCE_TOKENIZER.eot_token_id
    assert torch.equal(tokens, REFERENCE_TOKENIZER([text]))


def test_the_word_cache_starts_again_when_full_and_the_ids_stay_the_same(monkeypatch):
    tokenizer = fast_copy()
    monkeypatch.setattr(fast, "MAX_CACHED_WORDS", 3)
    texts = [f"word{i} and more words" for i in range(20)] + ["<end_of_text> again"]
    assert torch.equal(tokenizer(texts), REFERENCE_TOKENIZER(texts))
    assert len(tokenizer._word_ids) <= 3
    assert len(tokenizer.cache) <= 3 + len(tokenizer._special)


def test_the_fast_tokenizer_is_a_copy_and_leaves_other_tokenizers_alone():
    original = open_clip.get_tokenizer("ViT-B-32")
    copy = fast_tokenizer(original)
    assert isinstance(copy, FastTokenizer) and copy is not original
    copy(["a red circle"])
    assert original.clean_fn is open_clip.tokenizer._clean_lower and "a" not in original.cache
    other = open_clip.get_tokenizer("ViT-B-32")
    other.clean_fn = open_clip.tokenizer._clean_whitespace
    assert fast_tokenizer(other) is other


@pytest.mark.parametrize("name", ["ViT-B-32", "demo"])
def test_every_model_the_service_loads_gets_the_fast_tokenizer_with_its_own_context(name):
    from models.clip import register_bundled_configs

    register_bundled_configs()
    tokenizer = fast_copy(name)
    assert tokenizer.context_length == open_clip.get_tokenizer(name).context_length

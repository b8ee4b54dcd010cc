"""The search answers' JSON, written straight from the store's hits, is what the response models would write."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from index.types import Hit, VectorField
from service.schemas import (
    BatchSearchResponse,
    SearchHit,
    SearchResponse,
    batch_search_response_json,
    search_response_json,
)

# What metadata can hold once the store has it: JSON values, nested.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    # Any text, surrogates aside (JSON text cannot carry a lone one).
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
hits = st.builds(
    Hit,
    id=st.text(min_size=1, max_size=20),
    score=st.floats(-1, 1),
    metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    matched=st.sampled_from(VectorField),
)


def as_models(found: list[Hit], truncated: bool) -> str:
    return SearchResponse.of(found, truncated=truncated).model_dump_json()


@given(st.lists(hits, max_size=12), st.booleans())
def test_the_answer_parses_to_what_the_response_model_writes(found: list[Hit], truncated: bool) -> None:
    written = search_response_json(found, truncated=truncated)

    assert json.loads(written) == json.loads(as_models(found, truncated))


@given(st.lists(st.lists(hits, max_size=4), min_size=1, max_size=4), st.data())
def test_a_batch_answer_parses_to_what_the_batch_model_writes(found: list[list[Hit]], data: st.DataObject) -> None:
    truncated = data.draw(st.lists(st.booleans(), min_size=len(found), max_size=len(found)))
    models = BatchSearchResponse(results=[[SearchHit.of(h) for h in hits] for hits in found], truncated=truncated)

    assert json.loads(batch_search_response_json(found, truncated)) == json.loads(models.model_dump_json())


def test_a_plain_answer_is_byte_for_byte_the_models_json() -> None:
    found = [
        Hit("img-1", 0.3125, {"album": "shapes", "tags": ["red", "ü"], "n": 3}),
        Hit("img-2", -0.5, {"caption": "a cat"}, VectorField.CAPTION),
    ]

    assert search_response_json(found, truncated=True) == as_models(found, True).encode()


def test_an_integer_beyond_64_bits_in_metadata_is_still_answered() -> None:
    big: dict[str, Any] = {"serial": 2**70}

    written = search_response_json([Hit("img-1", 0.5, big)])

    assert json.loads(written)["results"][0]["metadata"] == {"serial": 2**70}
    assert json.loads(batch_search_response_json([[Hit("img-1", 0.5, big)]], [False]))["results"][0][0]["metadata"] == {
        "serial": 2**70
    }


def test_a_plain_batch_answer_is_byte_for_byte_the_models_json() -> None:
    found = [[Hit("img-1", 0.25, {"album": "shapes"})], [], [Hit("img-2", 0.5, {}, VectorField.CAPTION)]]
    models = BatchSearchResponse(
        results=[[SearchHit.of(h) for h in hits] for hits in found], truncated=[True, False, False]
    )

    assert batch_search_response_json(found, [True, False, False]) == models.model_dump_json().encode()


def test_plain_hits_are_written_without_building_the_response_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_models(*_: object, **__: object) -> None:
        raise AssertionError("the models were built")

    monkeypatch.setattr(SearchHit, "of", no_models)
    monkeypatch.setattr(SearchResponse, "of", no_models)
    found = [Hit("img-1", 0.5, {"n": 1})]

    assert json.loads(search_response_json(found))["results"][0]["id"] == "img-1"
    assert json.loads(batch_search_response_json([found], [False]))["results"][0][0]["id"] == "img-1"

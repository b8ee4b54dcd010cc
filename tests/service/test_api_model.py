"""The HTTP API against a plain in-memory model (Hypothesis stateful testing, a shorter run than the store's).

Uploads with hostile metadata sent as raw JSON text (NaN, 1e999, 2**70, deep
nesting, dotted and over-long keys), deletes, gets, listings, filtered text
searches and similar-by-id, each compared with the model after every step. The
rule: never a 5xx, a refused write changes nothing, and every stored item reads
back and filters the way the model says.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from service.app import create_app
from service.settings import Settings, StoreSettings
from tests.fakes import COLOURS, colour_vector, fake_towers, image_bytes
from tests.index.test_store_model import acceptable, model_matches

IDS = ["p", "q", "r", "s"]
GOOD = [
    "{}",
    '{"album": "a"}',
    '{"album": "b", "n": 1}',
    '{"tags": ["a", "b"], "n": 1.0}',
    '{"n": true}',
    '{"exif": {"camera": "x"}}',
]
HOSTILE = [
    '{"x": NaN}',
    '{"x": Infinity}',
    '{"x": 1e999}',
    '{"x": 1180591620717411303424}',
    '{"a.b": 1}',
    '{"' + "k" * 100 + '": 1}',
    '{"x": "\\ud800"}',
    '{"a":' * 256 + "1" + "}" * 256,
    "[1, 2]",
    "{oops",
]
FILTERS: list[dict[str, Any]] = [
    {"album": "a"},
    {"album": {"in": ["a", "b"]}},
    {"n": 1},
    {"n": True},
    {"n": "1"},
    {"tags": "a"},
    {"tags": '["a", "b"]'},
    {"exif.camera": "x"},
    {"big": 123456789012345678901234567890},
    {"x": 1e308},
    {"k" * 10_000: 1},
    {"a.b c": 1},
]


def parse(raw: str) -> Any:
    try:
        return json.loads(raw, parse_constant=lambda name: float(name.lower().replace("infinity", "inf")))
    except (ValueError, RecursionError):
        return None


class ApiAgainstModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stack = ExitStack()
        tmp = self.stack.enter_context(TemporaryDirectory())
        app = create_app(Settings(store=StoreSettings(data_dir=Path(tmp) / "data")), towers=fake_towers())
        self.client = self.stack.enter_context(TestClient(app, raise_server_exceptions=False))
        self.model: dict[str, tuple[np.ndarray, dict[str, Any]]] = {}

    def teardown(self) -> None:
        self.stack.close()

    def _ok(self, response: Any) -> Any:
        assert response.status_code < 500, response.text
        return response

    @rule(item_id=st.sampled_from(IDS), rgb=st.tuples(*[st.integers(0, 255)] * 3), raw=st.sampled_from(GOOD + HOSTILE))
    def add(self, item_id: str, rgb: tuple[int, int, int], raw: str) -> None:
        response = self._ok(
            self.client.post(
                "/v1/images", files=[("files", ("i.png", image_bytes(rgb)))], data={"ids": item_id, "metadata": raw}
            )
        )
        meta = parse(raw)
        if meta is None or not acceptable(meta) or raw in HOSTILE:
            assert response.status_code in (400, 413, 422), response.text
            assert response.json()["error"]["message"]
            return
        assert response.status_code == 201, response.text
        self.model.pop(item_id, None)
        self.model[item_id] = (colour_vector([c / 255 for c in rgb]), meta)

    @rule(item_id=st.sampled_from(IDS))
    def delete(self, item_id: str) -> None:
        response = self._ok(self.client.delete(f"/v1/images/{item_id}"))
        assert response.status_code == (204 if self.model.pop(item_id, None) is not None else 404)

    @rule(item_id=st.sampled_from(IDS))
    def get(self, item_id: str) -> None:
        response = self._ok(self.client.get(f"/v1/images/{item_id}"))
        if item_id in self.model:
            assert response.json()["metadata"] == self.model[item_id][1]
        else:
            assert response.status_code == 404

    @rule()
    def listing(self) -> None:
        items = self._ok(self.client.get("/v1/images")).json()["items"]
        assert [(i["id"], i["metadata"]) for i in items] == [(k, meta) for k, (_, meta) in self.model.items()]

    @rule(colour=st.sampled_from(sorted(COLOURS)), flt=st.sampled_from([None, *FILTERS]), k=st.integers(1, 5))
    def search(self, colour: str, flt: dict[str, Any] | None, k: int) -> None:
        body: dict[str, Any] = {"query": f"a {colour} thing", "k": k}
        if flt is not None:
            body["filter"] = flt
        response = self._ok(self.client.post("/v1/search/text", json=body))
        fields = [] if flt is None else list(flt.items())
        bad = any(len(f) > 256 or " " in f or (isinstance(v, int) and abs(v) >= 2**63) for f, v in fields)
        if bad:
            assert response.status_code == 400, response.text
            return
        assert response.status_code == 200, response.text
        query = colour_vector(COLOURS[colour])
        conditions = [(f, v["in"] if isinstance(v, dict) else [v]) for f, v in fields]
        expected = sorted(
            (
                (float(vector @ query), item_id)
                for item_id, (vector, meta) in self.model.items()
                if all(model_matches(meta, f, wanted) for f, wanted in conditions)
            ),
            reverse=True,
        )[:k]
        results = response.json()["results"]
        assert [r["score"] for r in results] == pytest.approx([score for score, _ in expected], abs=1e-5)
        assert {r["id"] for r in results} <= set(self.model)
        if len({round(score, 4) for score, _ in expected}) == len(expected):
            assert [r["id"] for r in results] == [item_id for _, item_id in expected]

    @invariant()
    def total_agrees(self) -> None:
        assert self.client.get("/v1/stats").json()["count"] == len(self.model)


ApiAgainstModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("API_MODEL_EXAMPLES", "20")),
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_api_behaves_like_a_plain_dictionary_under_any_sequence_of_requests = ApiAgainstModel.TestCase

from __future__ import annotations

import base64

import numpy as np
import pytest


def embed(client, **body):
    return client.post("/v1/embeddings", json={"model": "fake", **body})


def test_a_single_string_gives_one_embedding_in_openais_shape(client):
    body = embed(client, input="red").json()
    assert body["object"] == "list" and body["model"] == "fake"
    assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    assert len(body["data"][0]["embedding"]) == 8
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_base64_encodes_the_same_float32_vectors(client):
    floats = embed(client, input=["red", "blue"]).json()["data"]
    packed = embed(client, input=["red", "blue"], encoding_format="base64").json()["data"]
    for f, p in zip(floats, packed, strict=True):
        decoded = np.frombuffer(base64.b64decode(p["embedding"]), dtype="<f4")
        np.testing.assert_allclose(decoded, f["embedding"], atol=1e-7)
    assert np.linalg.norm(floats[0]["embedding"]) == pytest.approx(1.0, abs=1e-5)


def test_the_model_alias_is_accepted(client):
    assert client.post("/v1/embeddings", json={"model": "clipsearch", "input": "red"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "text-embedding-3-small", "input": "red"}, 404, "is not served here; use 'fake'"),
        ({"model": "fake", "input": "red", "dimensions": 3}, 422, "dimensions must be 8"),
        ({"model": "fake", "input": []}, 422, "input must hold 1 to 256 texts"),
        ({"model": "fake", "input": [" "]}, 422, "an input text is blank"),
        ({"model": "fake", "input": [[1, 2, 3]]}, 422, "input"),
        ({"model": "fake", "input": "red", "encoding_format": "hex"}, 422, "encoding_format"),
    ],
)
def test_bad_embedding_requests_get_a_clear_4xx(client, body, status, message):
    response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]

from __future__ import annotations

import pytest

from tests.fakes import image_bytes


def classify(client, colour, labels, **extra):
    return client.post("/v1/classify", files={"file": ("q.png", image_bytes(colour))}, data={"labels": labels, **extra})


def test_classify_ranks_the_matching_label_first_with_probabilities_summing_to_one(client):
    labels = classify(client, "blue", ["red", "blue", "green"]).json()["labels"]
    assert labels[0]["label"] == "blue"
    assert sum(label["probability"] for label in labels) == pytest.approx(1.0, abs=1e-6)
    assert labels[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_classify_fills_the_template_with_each_label(client):
    labels = classify(client, "red", ["red", "green"], template="a {} shape").json()["labels"]
    assert labels[0]["label"] == "red"


@pytest.mark.parametrize(
    ("labels", "extra", "message"),
    [
        (["red", " "], {}, "a label is blank"),
        (["red"], {"template": "no placeholder"}, "template must contain {}"),
    ],
)
def test_bad_classify_requests_get_422(client, labels, extra, message):
    response = classify(client, "red", labels, **extra)
    assert response.status_code == 422
    assert message in response.json()["error"]["message"]


def test_classify_without_labels_gets_422(client):
    response = client.post("/v1/classify", files={"file": ("q.png", image_bytes("red"))})
    assert response.status_code == 422
    assert "labels: Field required" in response.json()["error"]["message"]


def test_text_embeddings_are_unit_vectors_one_per_text(client):
    body = client.post("/v1/embed/text", json={"texts": ["red", "blue"]}).json()
    assert body["model"] == "fake" and body["dim"] == 8
    assert len(body["embeddings"]) == 2
    for row in body["embeddings"]:
        assert sum(x * x for x in row) == pytest.approx(1.0, abs=1e-5)


def test_image_embeddings_match_what_search_by_image_and_the_store_use(client):
    green = ("g.png", image_bytes((20, 200, 60)))
    client.post("/v1/images", files=[("files", green)], data={"ids": "green"})
    client.post("/v1/images", files=[("files", ("r.png", image_bytes("red")))], data={"ids": "red"})
    embedded = client.post("/v1/embed/image", files=[("files", green)]).json()["embeddings"][0]
    stored = client.get("/v1/images/green/embedding").json()["embeddings"][0]
    assert embedded == pytest.approx(stored, abs=1e-6)
    results = client.post("/v1/search/image", files={"file": green}).json()["results"]
    assert results[0]["id"] == "green"
    assert results[0]["score"] == pytest.approx(sum(a * b for a, b in zip(embedded, stored, strict=True)), abs=1e-5)


def test_embedding_no_texts_gets_422(client):
    assert client.post("/v1/embed/text", json={"texts": []}).status_code == 422

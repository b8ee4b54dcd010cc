from __future__ import annotations

import re

from tests.fakes import image_bytes


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match.group(1) == name:
            got = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
            if got == wanted:
                return float(match.group(3))
    raise AssertionError(f"no sample {name}{{{wanted}}}")


def test_metrics_count_requests_by_route_template_and_status(client):
    client.post("/v1/images", files=[("files", ("r.png", image_bytes("red")))], data={"ids": ["r"]})
    client.get("/v1/images/r")
    client.get("/v1/images/ghost")
    client.get("/v1/images/another-ghost")
    client.post("/v1/search/text", json={"query": "red"})
    client.post("/v1/search/text", json={"query": "blue"})
    text = client.get("/metrics").text
    assert sample(text, "clipsearch_requests_total", method="POST", route="/v1/images", status="201") == 1
    assert sample(text, "clipsearch_requests_total", method="GET", route="/v1/images/{item_id}", status="200") == 1
    assert sample(text, "clipsearch_requests_total", method="GET", route="/v1/images/{item_id}", status="404") == 2
    assert sample(text, "clipsearch_requests_total", method="POST", route="/v1/search/text", status="200") == 2
    assert sample(text, "clipsearch_request_seconds_count", method="POST", route="/v1/search/text") == 2
    assert sample(text, "clipsearch_request_seconds_count", method="GET", route="/v1/images/{item_id}") == 3


def test_metrics_show_batches_queue_index_size_and_load_time(client):
    client.post("/v1/images", files=[("files", (f"{c}.png", image_bytes(c))) for c in ["red", "blue"]])
    client.post("/v1/search/text", json={"query": "red"})
    text = client.get("/metrics").text
    assert sample(text, "clipsearch_batch_size_sum", tower="image") == 2
    assert sample(text, "clipsearch_batch_size_count", tower="text") == 1
    assert sample(text, "clipsearch_batch_wait_seconds_count", tower="image") == 2
    assert sample(text, "clipsearch_inference_seconds_count", tower="text") == 1
    assert sample(text, "clipsearch_queue_depth", tower="text") == 0
    assert sample(text, "clipsearch_index_items") == 2
    assert sample(text, "clipsearch_model_load_seconds") > 0

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import typer
from pydantic import ValidationError

from clipsearch.cli import build_settings
from models.clip import set_torch_threads
from service.settings import Settings


def test_defaults_serve_vit_b_32_on_port_8000():
    settings = Settings()
    assert (settings.model.name, settings.model.pretrained, settings.port) == ("ViT-B-32", None, 8000)


def test_environment_variables_use_one_prefix_and_double_underscores(monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_PORT", "9001")
    monkeypatch.setenv("CLIPSEARCH_MODEL__NAME", "demo")
    monkeypatch.setenv("CLIPSEARCH_STORE__DATA_DIR", "/tmp/somewhere")
    monkeypatch.setenv("CLIPSEARCH_BATCHING__MAX_BATCH_SIZE", "1")
    settings = Settings()
    assert settings.port == 9001
    assert settings.model.name == "demo"
    assert settings.store.data_dir == Path("/tmp/somewhere")
    assert settings.batching.max_batch_size == 1


def test_command_line_options_override_the_environment_and_keep_the_rest(monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_MODEL__NAME", "demo")
    monkeypatch.setenv("CLIPSEARCH_MODEL__DEVICE", "cpu")
    settings = build_settings({"model.pretrained": "none", "port": 1234, "host": None})
    assert (settings.model.name, settings.model.pretrained, settings.model.device) == ("demo", "none", "cpu")
    assert settings.port == 1234 and settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    "values",
    [
        {"batching": {"max_batch_size": 0}},
        {"port": 70000},
        {"log_level": "chatty"},
        {"batching": {"max_batch_wait_ms": -1}},
        {"workers": 2},  # SQLite: one process per data directory
        {"store": {"backend": "milvus", "encoding": "pq"}},
        {"store": {"backend": "milvus", "milvus_collection": "drop; me"}},
    ],
)
def test_unsafe_values_are_refused(values):
    with pytest.raises(ValidationError):
        Settings(**values)


def test_the_cli_reports_a_bad_value_as_a_bad_parameter():
    with pytest.raises(typer.BadParameter, match="max_batch_size"):
        build_settings({"batching.max_batch_size": 0})


def test_torch_threads_are_set_only_when_asked_for():
    before = torch.get_num_threads()
    set_torch_threads(None)
    assert torch.get_num_threads() == before
    set_torch_threads(1)
    assert torch.get_num_threads() == 1
    set_torch_threads(before)


def test_blip_models_are_off_by_default_and_when_their_variable_is_blank(monkeypatch):
    assert (Settings().blip.captioner, Settings().blip.itm) == (None, None)
    monkeypatch.setenv("CLIPSEARCH_BLIP__CAPTIONER", "")
    monkeypatch.setenv("CLIPSEARCH_BLIP__ITM", "demo")
    settings = Settings()
    assert (settings.blip.captioner, settings.blip.itm) == (None, "demo")


def test_the_serve_options_name_the_blip_models():
    settings = build_settings({"blip.captioner": "Salesforce/blip-image-captioning-base", "blip.itm": "/models/itm"})
    assert (settings.blip.captioner, settings.blip.itm) == ("Salesforce/blip-image-captioning-base", "/models/itm")


def test_the_milvus_store_is_configured_from_the_environment(monkeypatch):
    monkeypatch.setenv("CLIPSEARCH_STORE__BACKEND", "milvus")
    monkeypatch.setenv("CLIPSEARCH_STORE__MILVUS_URI", "http://milvus:19530")
    monkeypatch.setenv("CLIPSEARCH_STORE__MILVUS_TOKEN", "root:Milvus")
    monkeypatch.setenv("CLIPSEARCH_STORE__MILVUS_CONSISTENCY", "session")
    monkeypatch.setenv("CLIPSEARCH_WORKERS", "4")
    settings = Settings()
    store = settings.store
    assert (store.backend, store.milvus_uri, store.milvus_consistency) == ("milvus", "http://milvus:19530", "session")
    assert store.milvus_token is not None and store.milvus_token.get_secret_value() == "root:Milvus"
    assert "root:Milvus" not in repr(settings)  # the token stays out of logs
    assert settings.workers == 4


def test_the_milvus_store_defaults_to_strong_consistency_and_sqlite_to_one_process():
    settings = Settings()
    assert settings.store.backend == "sqlite" and settings.workers == 1
    assert settings.store.milvus_consistency == "strong"

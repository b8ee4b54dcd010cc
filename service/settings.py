"""The one settings object. Environment variables use the prefix CLIPSEARCH_ and
`__` between a group and its field: CLIPSEARCH_MODEL__NAME, CLIPSEARCH_STORE__DATA_DIR."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from index.ann import IndexSpec
from index.metadata import MAX_METADATA_BYTES
from index.milvus import COLLECTION_PATTERN, Consistency
from index.options import Encoding, IndexType, StoreBackend
from models.options import Pipeline, Precision


class ModelSettings(BaseModel):
    name: str = Field("ViT-B-32", description="open_clip model name, or `demo` for the bundled demo model")
    pretrained: str | None = Field(
        None,
        description="open_clip pretrained tag, `hf-hub:org/repo`, a checkpoint path, or `none`; "
        "unset: the model's default (ViT-B-32: laion2b_s34b_b79k)",
    )
    device: str = Field("auto", description="`auto` (CUDA when present), `cpu`, `cuda`, `cuda:N`")
    precision: Precision = Field(
        Precision.AUTO,
        description="fp32 (exactly open_clip's numbers), bf16, fp16 (GPU), or auto: "
        "fp16 weights on CUDA, bf16 on CPUs with native bf16, else fp32",
    )
    pipeline: Pipeline = Field(
        Pipeline.FAST,
        description="fast: uint8 pixels at the model's size (JPEGs decoded at reduced scale, or on the GPU), "
        "normalised on the device, CUDA graphs for text; reference: open_clip's own transform and eager "
        "forward passes (see docs/gpu.md)",
    )
    fallback_to_demo: bool = Field(
        True, description="serve the bundled demo model when the weights cannot be fetched (no network)"
    )
    text_cache_size: int = Field(4096, ge=0, description="query embeddings kept in an LRU cache; 0 turns it off")
    torch_threads: int | None = Field(
        None, ge=1, le=1024, description="threads per forward pass on CPU; unset: torch's default (all cores)"
    )


class BlipSettings(BaseModel):
    captioner: str | None = Field(
        None,
        description="BLIP captioning model: a hub id (Salesforce/blip-image-captioning-base), a directory "
        "written by save_pretrained, or `demo`; unset: captioning is off",
    )
    itm: str | None = Field(
        None,
        description="BLIP image-text matching model for reranking: a hub id (Salesforce/blip-itm-base-coco), "
        "a directory, or `demo`; unset: reranking is off",
    )
    device: str = Field("auto", description="`auto` (CUDA when present), `cpu`, `cuda`, `cuda:N`")

    @field_validator("captioner", "itm")
    @classmethod
    def _blank_is_off(cls, value: str | None) -> str | None:
        # `CLIPSEARCH_BLIP__CAPTIONER=` (as docker-compose passes an unset variable) means off.
        if value is None or not value.strip():
            return None
        return value.strip()


class StoreSettings(BaseModel):
    backend: StoreBackend = Field(
        StoreBackend.SQLITE,
        description="sqlite: SQLite + FAISS in data_dir, one process; milvus: a Milvus server or cluster, "
        "any number of API processes (thumbnails and originals still live in data_dir)",
    )
    data_dir: Path = Field(Path("data"), description="directory of the durable store")
    keep_originals: bool = Field(False, description="keep each uploaded file, served at /v1/images/{id}/original")
    index: IndexType = Field(
        IndexType.AUTO, description="flat (exact), hnsw, ivf, or auto (flat below auto_threshold, ivf above)"
    )
    encoding: Encoding = Field(Encoding.FLAT, description="ANN vector storage: flat (float32), sq8 or pq")
    auto_threshold: int = Field(100_000, ge=1, description="collection size at which auto switches to ivf")
    hnsw_m: int = Field(32, ge=4, le=256, description="HNSW graph degree")
    hnsw_ef_construction: int = Field(64, ge=8, le=2048, description="HNSW build breadth")
    hnsw_ef_search: int = Field(96, ge=1, le=4096, description="HNSW search breadth (recall vs latency)")
    ivf_nlist: int | None = Field(None, ge=1, description="IVF lists; unset: about 4 x sqrt(n)")
    ivf_nprobe: int = Field(32, ge=1, description="IVF lists searched per query (recall vs latency)")
    pq_bytes: int = Field(64, ge=1, description="bytes per vector with the pq encoding")
    far_query_effort: int | None = Field(
        None,
        ge=1,
        le=64,
        description="search breadth (ef_search, nprobe) multiplier for a query far from the stored vectors, "
        "such as a text query among images; 1: off; unset: 16 for hnsw, 2 for ivf",
    )
    recall_check_interval_s: float = Field(
        60.0, ge=0, description="seconds between recall self-checks of the ANN index on recent queries; 0: off"
    )
    milvus_uri: str = Field("http://127.0.0.1:19530", description="the Milvus server or cluster (its proxy)")
    milvus_token: SecretStr | None = Field(None, description="Milvus token (`user:password` or an API key)")
    milvus_collection: str | None = Field(
        None, description="collection name; unset: derived from the model name and dimension"
    )
    milvus_consistency: Consistency = Field(
        Consistency.STRONG,
        description="strong: every search sees every acknowledged write, from any API process (costs Milvus's "
        "time tick, 200 ms by default, per read); session: this process's own writes; bounded, eventually",
    )
    milvus_timeout_s: float = Field(10.0, gt=0, le=600, description="longest one Milvus call may take before a 503")

    @field_validator("milvus_collection")
    @classmethod
    def _collection_name(cls, value: str | None) -> str | None:
        if value is not None and not COLLECTION_PATTERN.fullmatch(value):
            raise ValueError("a Milvus collection name is letters, digits and _, not starting with a digit")
        return value

    @model_validator(mode="after")
    def _milvus_keeps_float32(self) -> StoreSettings:
        if self.backend is StoreBackend.MILVUS and self.encoding is not Encoding.FLAT:
            raise ValueError(f"the Milvus store keeps float32 vectors: encoding {self.encoding} is for sqlite only")
        return self

    def index_spec(self) -> IndexSpec:
        return IndexSpec(
            type=self.index,
            encoding=self.encoding,
            hnsw_m=self.hnsw_m,
            hnsw_ef_construction=self.hnsw_ef_construction,
            hnsw_ef_search=self.hnsw_ef_search,
            ivf_nlist=self.ivf_nlist,
            ivf_nprobe=self.ivf_nprobe,
            pq_bytes=self.pq_bytes,
            auto_threshold=self.auto_threshold,
            far_query_effort=self.far_query_effort,
        )


class BatchingSettings(BaseModel):
    max_batch_size: int = Field(32, ge=1, le=4096, description="largest forward pass; 1 turns batching off")
    max_batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="how long a batch waits for more items")
    max_queue: int = Field(1024, ge=1, le=1_000_000, description="items waiting per tower before 429")


class LimitSettings(BaseModel):
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1, description="largest image file")
    max_files: int = Field(64, ge=1, description="most files in one request")
    max_image_pixels: int = Field(40_000_000, ge=1, description="largest decoded image (width x height)")
    max_text_chars: int = Field(2000, ge=1, description="longest query or label text")
    max_k: int = Field(1000, ge=1, description="most results one search returns")
    max_metadata_bytes: int = Field(
        16 * 1024, ge=2, le=MAX_METADATA_BYTES, description="largest metadata object, as JSON (UTF-8 bytes)"
    )
    max_json_bytes: int = Field(
        1024 * 1024, ge=1024, le=256 * 1024 * 1024, description="largest JSON request body (413 beyond, unread)"
    )
    max_labels: int = Field(1000, ge=1, description="most labels in one classify request")
    max_texts: int = Field(256, ge=1, description="most texts in one embed request")
    max_rerank: int = Field(100, ge=1, le=10_000, description="most candidates one search may rerank with ITM")
    request_timeout_s: float = Field(120.0, gt=0, le=3600, description="longest a request may take before a 503")
    max_batch_queries: int = Field(256, ge=1, le=100_000, description="most queries in one batch search request")

    @property
    def max_form_part_bytes(self) -> int:
        """The largest text field a multipart form may carry: metadata or a label, with room to say which."""
        return max(self.max_metadata_bytes, 4 * self.max_text_chars) + 64 * 1024

    @property
    def max_form_fields(self) -> int:
        """Text fields a multipart form may carry: labels, or an id and metadata per file, and a few options."""
        return max(self.max_labels, 2 * self.max_files) + 16

    @property
    def max_request_bytes(self) -> int:
        """The largest multipart body worth reading: every file at its limit, plus the form fields."""
        fields = max(self.max_files * self.max_metadata_bytes, self.max_labels * 4 * self.max_text_chars)
        return self.max_files * self.max_upload_bytes + fields + 1024 * 1024


MIN_KEY_LENGTH = 16


class AuthSettings(BaseModel):
    api_keys: list[str] = Field(
        default_factory=list, description="accepted API keys (JSON list in the environment); none: no auth"
    )
    api_keys_file: Path | None = Field(None, description="file with one API key per line (# comments)")
    protect_reads: bool = Field(False, description="require a key for searches and reads too, not only writes")

    @field_validator("api_keys")
    @classmethod
    def _long_enough(cls, keys: list[str]) -> list[str]:
        for key in keys:
            if len(key.strip()) < MIN_KEY_LENGTH:
                raise ValueError(f"API keys must be at least {MIN_KEY_LENGTH} characters long")
        return [key.strip() for key in keys]

    def keys(self) -> list[str]:
        """Every accepted key: the listed ones and those in the keys file."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            lines = self.api_keys_file.read_text().splitlines()
            keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if any(len(key) < MIN_KEY_LENGTH for key in keys):
            raise ValueError(f"API keys must be at least {MIN_KEY_LENGTH} characters long")
        return keys


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLIPSEARCH_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256, description="API processes (milvus store only)")
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    freeze_heap: bool = Field(
        True,
        description="while serving, leave the objects alive after loading out of garbage collection and collect "
        "the young generation every 10,000 allocations (docs/design.md); off: Python's defaults, for an app "
        "embedded in a larger process",
    )
    model: ModelSettings = ModelSettings()
    blip: BlipSettings = BlipSettings()
    store: StoreSettings = StoreSettings()
    batching: BatchingSettings = BatchingSettings()
    limits: LimitSettings = LimitSettings()
    auth: AuthSettings = AuthSettings()

    @model_validator(mode="after")
    def _one_process_per_data_directory(self) -> Settings:
        if self.workers > 1 and self.store.backend is StoreBackend.SQLITE:
            raise ValueError(
                f"workers={self.workers} needs the Milvus store: a SQLite data directory is served by one process "
                "(it is locked while open); run one worker, or --store milvus"
            )
        return self

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        levels = ("critical", "error", "warning", "info", "debug")
        if value.lower() not in levels:
            raise ValueError(f"log_level must be one of {', '.join(levels)}")
        return value.lower()

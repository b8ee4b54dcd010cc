"""Ray against the single-process paths, each pair measured in the same run.

    python -m bench.ray [--images 1024] [--model ViT-B-32] [--pretrained none] [--batch 32]
                        [--items 10000] [--seconds 20] [--connections 32] [--skip-embed | --skip-serve]

Bulk embedding: 640x480 JPEG photos of generated scenes in a folder, embedded
by the single-process local indexer (clipsearch.bulk.index_paths into a data
directory, torch's default threads), then by `clipsearch embed`'s pipeline
(scaleout.ray_embed.embed into shards) on a local Ray of 2 CPUs with a pool of
1 and of 2 actors (0.5 CPU each, so 1 torch thread each). Each is timed from
the call to the end, model loading included (`wall`); `net` takes away the
same path's time on a single image (its start-up: the model load and, on Ray,
the actors and the plan). Ray's own start is not counted.

Text search: `POST /v1/search/text` driven by wrk (unique queries, the query
cache off; bench.server_throughput's driver) against the single-process
service (`clipsearch serve`), then the Serve application (scaleout.serve_app)
with 1 API replica and 1, then 2, replicas of each tower (0.4 CPU each). All
three search the same SQLite store of `--items` random vectors: one API
replica may open it, and the figures compare the towers, not the stores.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import fill_store, photos, unit_rows
from bench.server_throughput import WrkResult, measure
from harness.server import ServerProcess, free_port
from models.clip import model_dim


def single_process(folder: Path, data_dir: Path, model: str, pretrained: str, batch: int) -> tuple[int, float]:
    from clipsearch.bulk import LocalSink, index_paths
    from index.store import SqliteFaissStore
    from service.app import load_towers
    from service.settings import ModelSettings, Settings, StoreSettings

    started = time.monotonic()
    settings = Settings(model=ModelSettings(name=model, pretrained=pretrained), store=StoreSettings(data_dir=data_dir))
    towers = load_towers(settings)
    store = SqliteFaissStore(data_dir, towers.info.dim, towers.info.name, settings.store.index_spec())
    sink = LocalSink(towers, store, max_pixels=settings.limits.max_image_pixels, keep_originals=False, batch_size=batch)
    summary = index_paths([folder], sink, batch)
    sink.close()
    store.close()
    return summary.indexed, time.monotonic() - started


def on_ray(folder: Path, out: Path, *, model: str, pretrained: str, batch: int, actors: int) -> tuple[int, float]:
    from models.clip import model_dim
    from scaleout.ray_embed import Placement, ShardWriter, embed
    from service.settings import ModelSettings

    started = time.monotonic()
    from clipsearch.bulk import find_images, read

    summary = embed(
        find_images([folder]),
        read=read,
        model=ModelSettings(name=model, pretrained=pretrained),
        max_pixels=40_000_000,
        placement=Placement(actors=actors, gpus_per_actor=0.0, cpus_per_actor=0.5),
        batch_size=batch,
        out=ShardWriter(out, model, model_dim(model), 10_000),
    )
    return summary.embedded, time.monotonic() - started


def serve_rates(data_dir: Path, args: argparse.Namespace) -> dict[str, WrkResult]:
    """q/s of text search: the single-process service, then the Serve app with 1 and 2 tower replicas."""
    from ray import serve

    from scaleout.serve_app import Replicas, start
    from service.settings import ModelSettings, Settings, StoreSettings

    fill_store(data_dir, unit_rows(args.items, model_dim(args.model)), args.model)
    results = {}
    env = {"CLIPSEARCH_MODEL__TEXT_CACHE_SIZE": "0"}
    with ServerProcess(data_dir, "--model", args.model, "--pretrained", args.pretrained, env=env) as server:
        results["single process (clipsearch serve)"] = measure(server.url, args.seconds, args.connections, 2)
    for replicas in (1, 2):
        settings = Settings(
            port=free_port(),
            model=ModelSettings(name=args.model, pretrained=args.pretrained, text_cache_size=0),
            store=StoreSettings(data_dir=data_dir),
        )
        start(settings, Replicas(towers=replicas, api=1, cpus_per_tower=0.4))
        try:
            url = f"http://127.0.0.1:{settings.port}"
            results[f"Ray Serve, {replicas} replica(s) of each tower"] = measure(url, args.seconds, args.connections, 2)
        finally:
            serve.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=32)
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-embed", action="store_true")
    skip.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args()

    import ray

    from scaleout.ray_embed import local_ray_init_options

    print(
        f"{args.model} (pretrained {args.pretrained}), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at the start"
    )
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(**local_ray_init_options(num_cpus=2))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if not args.skip_embed:
                embed_rates(Path(tmp), args)
            if not args.skip_serve:
                results = serve_rates(Path(tmp) / "search", args)
                baseline = results["single process (clipsearch serve)"].rate
                print(f"\ntext search, wrk, {args.connections} connections, {args.seconds:.0f} s, {args.items} items")
                print(f"{'':48} {'q/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'vs single':>10}")
                for name, r in results.items():
                    print(
                        f"{name:48} {r.rate:8.1f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} {r.non_2xx + r.socket_errors:8d} "
                        f"{r.rate / baseline:9.2f}x"
                    )
    finally:
        ray.shutdown()
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


def embed_rates(root: Path, args: argparse.Namespace) -> None:
    folder, one = root / "photos", root / "one"
    folder.mkdir()
    one.mkdir()
    for i, data in enumerate(photos(args.images)):
        (folder / f"{i:05d}.jpg").write_bytes(data)
    (one / "first.jpg").write_bytes((folder / "00000.jpg").read_bytes())
    runs: dict[str, Callable[[Path, Path], tuple[int, float]]] = {
        "single process (clipsearch index --data-dir)": lambda source, dest: single_process(
            source, dest, args.model, args.pretrained, args.batch
        )
    }
    for actors in (1, 2):
        runs[f"Ray Data, {actors} actor(s) (clipsearch embed)"] = functools.partial(
            on_ray, model=args.model, pretrained=args.pretrained, batch=args.batch, actors=actors
        )
    results = {}
    for n, (name, run) in enumerate(runs.items()):
        # The same path on one image first: its start-up (model load, actors, Ray Data's plan).
        _, startup = run(one, root / f"warm{n}")
        count, seconds = run(folder, root / f"out{n}")
        assert count == args.images, (name, count)
        # A run not much longer than the start-up has no net rate to speak of (a smoke run): nan.
        net = count / (seconds - startup) if seconds - startup >= 1.0 else float("nan")
        results[name] = (count / seconds, net, startup)
    baseline = results["single process (clipsearch index --data-dir)"][1]
    print(f"\nbulk embedding, {args.images} 640x480 JPEGs, batch {args.batch}")
    print(f"{'':48} {'wall img/s':>11} {'start-up s':>11} {'net img/s':>10} {'net vs single':>14}")
    for name, (wall, net, startup) in results.items():
        print(f"{name:48} {wall:11.1f} {startup:11.1f} {net:10.1f} {net / baseline:13.2f}x")


if __name__ == "__main__":
    main()

"""``tgir index`` and ``tgir search``: embed a catalogue with a bundle, then answer queries against it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click

from tgir.cli.common import open_bundle, progress_bar
from tgir.data.registry import DATASETS
from tgir.errors import TgirUserError
from tgir.runtime.index import SEARCH_METHODS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_BACKEND = click.Choice(["auto", "onnxruntime", "tensorrt", "torch", "c"])
_BACKEND_HELP = ("What runs the bundle: auto (TensorRT for a bundle with engines, else ONNX Runtime), onnxruntime, "
                 "tensorrt, torch (the source checkpoint) or c (libtgir, the C runtime).")


def catalogue(images: str | None, dataset: str | None, data: str | None,
              split: str) -> tuple[list[str], list[str], dict]:
    """``(paths, ids, info)`` of the images to index: a folder (ids = relative paths) or a split's gallery."""
    if bool(images) == bool(data):
        raise TgirUserError("give either --images DIR or --data DIR (with --dataset)")
    if images:
        root = Path(images)
        if not root.is_dir():
            raise TgirUserError(f"{root}: no such folder of images")
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise TgirUserError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        return [str(p) for p in paths], [str(p.relative_to(root)) for p in paths], {"root": str(root.resolve())}
    from tgir.data.registry import load_split

    loaded = load_split(dataset, data, split)
    root = Path(data).resolve()
    paths = [str(Path(loaded.images[i].path).resolve()) for i in loaded.gallery.tolist()]
    ids = [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else p for p in paths]
    return paths, ids, {"root": str(root), "dataset": dataset, "split": split}


@click.command("index")
@click.option("--bundle", required=True, type=click.Path(file_okay=False), help="Bundle that embeds the images.")
@click.option("--images", type=click.Path(file_okay=False), help="Folder of catalogue images (searched recursively).")
@click.option("--data", type=click.Path(file_okay=False), help="Dataset root: index its split's gallery instead.")
@click.option("--dataset", type=click.Choice(sorted(DATASETS)), default="css2d", show_default=True,
              help="Format of the dataset under --data.")
@click.option("--split", default="test", show_default=True, help="Split whose gallery is indexed (with --data).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Index folder.")
@click.option("--backend", type=_BACKEND, default="auto", show_default=True,
              help=f"{_BACKEND_HELP} Search with the same backend: the C runtime embeds differently from an "
                   "INT8 bundle's graphs.")
@click.option("--threads", default=0, show_default=True, help="ONNX Runtime intra-op threads (0: one per core).")
def index(bundle, images, data, dataset, split, out_dir, backend, threads) -> None:
    """Embed a catalogue into a gallery index (resumable: rerun the same command after an interruption)."""
    from tgir.manifest import require_writable
    from tgir.runtime.index import build_index, bundle_fingerprint

    paths, ids, info = catalogue(images, dataset, data, split)
    if (Path(out_dir) / "index.json").is_file():
        raise TgirUserError(f"{out_dir}: already holds a finished index; remove it or choose another --out")
    require_writable(out_dir, folder=True)  # before opening the bundle, which takes seconds
    with open_bundle(bundle, backend, threads) as runner, progress_bar("indexing") as report:
        info = {**info, "bundle": str(Path(bundle).resolve()), "backend": runner.backend}
        # the fingerprint the searching runtime will compute: the C runtime's AOTInductor objects
        # embed in the fp32 space even for an INT8 bundle
        fingerprint = bundle_fingerprint(runner.manifest, backend=runner.index_backend)
        built = build_index(lambda part: runner.encode_images(part), paths, ids, out_dir, fingerprint, info, report)
    click.echo(json.dumps({"out": out_dir, "images": len(built), "dim": int(built.embeddings.shape[1])}))


@click.command("search")
@click.option("--bundle", required=True, type=click.Path(file_okay=False), help="Bundle the index was built with.")
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Gallery index folder.")
@click.option("--image", required=True, type=click.Path(dir_okay=False), help="Reference image.")
@click.option("--text", required=True, help="The change, e.g. 'make the red circle big'.")
@click.option("-k", "k", default=10, show_default=True, help="Results to return.")
@click.option("--search", "method", type=click.Choice(SEARCH_METHODS), default="exact", show_default=True,
              help="exact: numpy; faiss: FAISS flat index (faiss-cpu); int8: int8 scoring + exact re-rank. "
                   "All return the same results.")
@click.option("--grid", type=click.Path(dir_okay=False), help="Also draw the reference, text and top-k into a PNG.")
@click.option("--backend", type=_BACKEND, default="auto", show_default=True,
              help=f"{_BACKEND_HELP} Use the backend the index was built with.")
@click.option("--threads", default=0, show_default=True, help="ONNX Runtime intra-op threads (0: one per core).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def search(bundle, index_dir, image, text, k, method, grid, backend, threads, as_json) -> None:
    """Rank the indexed catalogue for a reference image modified by a text."""
    from tgir.manifest import require_writable
    from tgir.runtime.base import QueryTextWarning
    from tgir.runtime.index import GalleryIndex

    gallery = GalleryIndex.load(index_dir)
    if grid:
        require_writable(grid)  # before the search, not after it
    with open_bundle(bundle, backend, threads) as runner:
        runner.attach(gallery)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", QueryTextWarning)
            query = runner.encode_queries([image], [text])
        for w in caught:
            click.echo(f"tgir: warning: {w.message}", err=True)
        gallery.threads = threads
        found = gallery.search(query, k, method)
    root = Path(gallery.info.get("root", "."))
    rows = [{"rank": r + 1, "id": i, "score": float(s), "path": str(root / i)}
            for r, (i, s) in enumerate(zip(found.ids[0], found.scores[0], strict=True))]
    if grid:
        from tgir.runtime.grid import draw_grid

        draw_grid(image, text, rows, grid)
    if as_json:
        click.echo(json.dumps({"query": {"image": image, "text": text}, "results": rows, "grid": grid}))
        return
    for row in rows:
        click.echo(f"{row['rank']:>3}  {row['score']:.4f}  {row['id']}")
    if grid:
        click.echo(f"grid written to {grid}", err=True)

"""Broken copies of the bundle in $TGIR_TEST_BUNDLE for test_runtime's bad-bundle checks (standard
library only; ctest runs it as the setup fixture of test_runtime). Each copy links the bundle's files
and rewrites manifest.json; changes to the graphs' contract recompute contract_sha256 as tgir's
manifest writer does, so that only the change under test is wrong. Writes nothing without a bundle
(test_runtime then skips)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys


def contract_sha256(graphs: dict) -> str:
    return hashlib.sha256(json.dumps(graphs, sort_keys=True).encode()).hexdigest()


def make(src: str, out: str, name: str, change=None, rehash: bool = False, links: dict | None = None) -> None:
    """`out`/`name`: every file of `src` linked (aoti/ file by file), `links` overriding some, and the
    manifest after `change`."""
    with open(os.path.join(src, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["contract_sha256"] == contract_sha256(manifest["graphs"]), "unexpected contract digest"
    folder = os.path.join(out, name)
    os.makedirs(os.path.join(folder, "aoti"))
    for top in os.listdir(src):
        if top == "aoti":
            for so in os.listdir(os.path.join(src, "aoti")):
                rel = f"aoti/{so}"
                os.symlink(os.path.join(src, (links or {}).get(rel, rel)), os.path.join(folder, rel))
        elif top != "manifest.json":
            os.symlink(os.path.join(src, top), os.path.join(folder, top))
    if change:
        change(manifest)
    if rehash:
        manifest["contract_sha256"] = contract_sha256(manifest["graphs"])
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def setter(*path_and_value):
    *path, value = path_and_value

    def change(manifest: dict) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return change


def main() -> int:
    src, out = os.environ.get("TGIR_TEST_BUNDLE", ""), sys.argv[1]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    if not src:
        return 0
    src = os.path.abspath(src)
    make(src, out, "text_length_2e61", setter("graphs", "text_encoder", "inputs", 0, "shape", ["batch", 2**61]), True)
    make(src, out, "text_length_2e40", setter("graphs", "text_encoder", "inputs", 0, "shape", ["batch", 2**40]), True)
    make(src, out, "swapped_package", links={"aoti/composer.so": "aoti/text_encoder.so"})
    make(src, out, "aoti_device_int", setter("aoti", "device", 5))
    make(src, out, "aoti_torch_int", setter("aoti", "torch", 5))
    make(src, out, "aoti_isa_list", setter("aoti", "cpu_isa", ["avx2"]))
    make(src, out, "aoti_isa_unknown", setter("aoti", "cpu_isa", "avx2 no_such_isa"))
    make(src, out, "aoti_isa_amx", setter("aoti", "cpu_isa", "avx512 avx512_vnni amx_tile"))
    make(src, out, "schema_version_str", setter("schema_version", "2"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

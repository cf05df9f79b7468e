"""Render a kustomization the way `kustomize build` does, for the fields this repo uses.

The Go kustomize binary is not packaged for the registries this project installs from, so the
test suite renders the base and the example overlay with this instead. It supports
`resources` (files and directories), `namespace`, `labels` (pairs, metadata only), `images`,
`replicas` and `patches` (strategic merge of maps; lists of named items merged by name), and
refuses any other field, so a kustomization it cannot render faithfully fails loudly.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas",
             "patches"}  # fmt: skip
# Kinds that live outside namespaces: kustomize leaves their namespace alone.
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}

Resource = dict[str, Any]


class KustomizeError(Exception):
    pass


def build(path: Path) -> list[Resource]:
    kfile = path / "kustomization.yaml"
    spec = yaml.safe_load(kfile.read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported fields {sorted(unknown)}")
    resources = _load_resources(path, spec.get("resources", []))
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{kfile}: only `patches: - path:` is supported")
        _apply_patch(resources, yaml.safe_load((path / patch["path"]).read_text()))
    for group in spec.get("labels", []):
        if set(group) - {"pairs"}:
            raise KustomizeError(f"{kfile}: labels support `pairs` only")
        for res in resources:
            res.setdefault("metadata", {}).setdefault("labels", {}).update(group["pairs"])
    for image in spec.get("images", []):
        _set_image(resources, image)
    for rep in spec.get("replicas", []):
        _set_replicas(resources, rep["name"], rep["count"])
    if "namespace" in spec:
        for res in resources:
            if res["kind"] not in _CLUSTER_SCOPED:
                res.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return resources


def _load_resources(path: Path, entries: list[str]) -> list[Resource]:
    resources: list[Resource] = []
    for entry in entries:
        target = (path / entry).resolve()
        if target.is_dir():
            resources.extend(build(target))
        else:
            resources.extend(d for d in yaml.safe_load_all(target.read_text()) if d)
    return resources


def _apply_patch(resources: list[Resource], patch: Resource) -> None:
    for res in resources:
        if res["kind"] == patch["kind"] and res["metadata"]["name"] == patch["metadata"]["name"]:
            merged = _merge(res, patch)
            res.clear()
            res.update(merged)
            return
    raise KustomizeError(f"patch target {patch['kind']}/{patch['metadata']['name']} not found")


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        by_name = {i["name"]: i for i in base}
        out_list = [_merge(by_name[i["name"]], i) if i["name"] in by_name else i for i in patch]
        patched = {i["name"] for i in patch}
        return [i for i in base if i["name"] not in patched] + out_list
    return copy.deepcopy(patch)


def _containers(res: Resource) -> list[Resource]:
    spec = res.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def _set_image(resources: list[Resource], image: dict[str, str]) -> None:
    for res in resources:
        for container in _containers(res):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                new_name = image.get("newName", name)
                new_tag = image.get("newTag", tag)
                container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def _set_replicas(resources: list[Resource], name: str, count: int) -> None:
    for res in resources:
        if res["kind"] in {"Deployment", "StatefulSet"} and res["metadata"]["name"] == name:
            res["spec"]["replicas"] = count


if __name__ == "__main__":
    print(yaml.safe_dump_all(build(Path(sys.argv[1])), sort_keys=False))

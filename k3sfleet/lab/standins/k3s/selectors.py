"""Label and field selectors and the patch formats the stand-in API accepts.

Example::

    matches_labels("app=web,tier in (a,b),!legacy", {"app": "web", "tier": "a"})   # True
    merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"c": None}})                      # {"a": {"b": 1}}
"""

from __future__ import annotations

import copy
import re
from typing import Any

_SET = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


class SelectorError(ValueError):
    """A selector the real API would reject with 400."""


def matches_labels(selector: str | None, labels: dict[str, str] | None) -> bool:
    """Kubernetes label selector syntax: =, ==, !=, in, notin, key, !key."""
    labels = labels or {}
    for requirement in _split_requirements(selector or ""):
        set_match = _SET.match(requirement)
        if set_match:
            key, op, values = set_match.groups()
            wanted = {v.strip() for v in values.split(",") if v.strip()}
            if op == "in" and labels.get(key) not in wanted:
                return False
            if op == "notin" and key in labels and labels[key] in wanted:
                return False
        elif "!=" in requirement:
            key, value = (s.strip() for s in requirement.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in requirement:
            key, value = (s.strip() for s in requirement.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif requirement.startswith("!"):
            if requirement[1:].strip() in labels:
                return False
        elif re.fullmatch(r"[\w./-]+", requirement):
            if requirement not in labels:
                return False
        else:
            raise SelectorError(f"unable to parse requirement: {requirement!r}")
    return True


def field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def matches_fields(selector: str | None, obj: dict[str, Any]) -> bool:
    """Field selectors: ``metadata.name=x,spec.nodeName=n,status.phase!=Succeeded``."""
    for requirement in _split_requirements(selector or ""):
        if "!=" in requirement:
            path, value = requirement.split("!=", 1)
            if field_value(obj, path.strip()) == value.strip():
                return False
        elif "=" in requirement:
            path, value = requirement.replace("==", "=").split("=", 1)
            if field_value(obj, path.strip()) != value.strip():
                return False
        else:
            raise SelectorError(f"invalid field selector: {requirement!r}")
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (null deletes a key; lists are replaced)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(items: list[Any]) -> str | None:
    for key in ("name", "key", "type", "containerPort", "ip"):
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch for what we use: maps merge, lists of named items merge by name
    (or key/type), ``$patch: delete`` removes an item; other lists are replaced."""
    if isinstance(patch, dict) and isinstance(target, dict):
        result = copy.deepcopy(target)
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value)
        return result
    if isinstance(patch, list) and isinstance(target, list):
        key = _merge_key(patch)
        if key and _merge_key(target) == key:
            merged = copy.deepcopy(target)
            for item in patch:
                index = next((i for i, old in enumerate(merged) if old.get(key) == item[key]), None)
                if item.get("$patch") == "delete":
                    if index is not None:
                        merged.pop(index)
                elif index is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[index] = strategic_merge_patch(merged[index], item)
            return merged
    if isinstance(patch, dict):
        return strategic_merge_patch({}, patch)
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, test, copy, move."""
    doc = copy.deepcopy(target)

    def parent(path: str) -> tuple[Any, str]:
        parts = _pointer(path)
        node = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    def get(path: str) -> Any:
        node = doc
        for part in _pointer(path):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    for op in operations:
        kind, path = op["op"], op["path"]
        if kind == "test":
            if get(path) != op["value"]:
                raise ValueError(f"test failed at {path}")
            continue
        if kind in ("copy", "move"):
            value = copy.deepcopy(get(op["from"]))
            if kind == "move":
                node, last = parent(op["from"])
                del node[int(last) if isinstance(node, list) else last]
            op = {"op": "add", "path": path, "value": value}
            kind = "add"
        node, last = parent(path)
        if kind == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if kind == "add":
                node.insert(index, op["value"])
            else:
                node[index] = op["value"]
        else:
            if kind == "replace" and last not in node:
                raise KeyError(path)
            node[last] = op["value"]
    return doc

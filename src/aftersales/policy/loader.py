"""Read policy packs from YAML into typed `Policy` objects, with clear errors for a bad pack."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from aftersales.domain.errors import PolicyError
from aftersales.policy.model import Policy

BUILTIN = ("taobao", "douyin")
DEFAULT_POLICY = "taobao"


def _read_builtin(policy_id: str) -> str:
    if policy_id not in BUILTIN:
        raise PolicyError(f"unknown policy pack {policy_id!r}; known: {', '.join(BUILTIN)}")
    return resources.files("aftersales.policy").joinpath(f"packs/{policy_id}.yaml").read_text(
        encoding="utf-8"
    )


def parse_yaml(text: str, source: str = "<pack>") -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PolicyError(f"{source}:{where} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy pack is a YAML mapping")
    return data


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply `section.parameter: value` overrides (e.g. `deadlines.buyer_ship_return: 3d`)."""
    data = copy.deepcopy(dict(raw))
    for path, value in overrides.items():
        node: Any = data
        parts = str(path).split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise PolicyError(f"override {path!r}: no section {part!r} in the pack")
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise PolicyError(f"override {path!r}: the pack has no parameter {parts[-1]!r}")
        node[parts[-1]] = value
    return data


def digest(raw: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()


def build(raw: Mapping[str, Any], source: str = "<pack>") -> Policy:
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(pack)"
            lines.append(f"  {loc}: {err['msg']}")
        raise PolicyError(f"{source}: invalid policy pack\n" + "\n".join(lines)) from None


def load_raw(id_or_path: str) -> tuple[dict[str, Any], str]:
    """The raw mapping of a built-in pack id or a YAML file path, and where it came from."""
    if id_or_path in BUILTIN:
        return parse_yaml(_read_builtin(id_or_path), f"{id_or_path}.yaml"), f"{id_or_path}.yaml"
    path = Path(id_or_path)
    if path.suffix in {".yaml", ".yml"}:
        if not path.is_file():
            raise PolicyError(f"policy file {path} does not exist")
        return parse_yaml(path.read_text(encoding="utf-8"), str(path)), str(path)
    raise PolicyError(f"unknown policy pack {id_or_path!r}; known: {', '.join(BUILTIN)}")


def load(id_or_path: str = DEFAULT_POLICY, overrides: Mapping[str, Any] | None = None) -> Policy:
    """Load a pack. Overrides give a derived version `<version>+o<digest>` so that a case
    opened under them is never confused with the published pack."""
    raw, source = load_raw(id_or_path)
    if overrides:
        raw = apply_overrides(raw, overrides)
        raw["version"] = f"{raw.get('version')}+o{digest(overrides)[:8]}"
    return build(raw, source)


def to_dict(policy: Policy) -> dict[str, Any]:
    return policy.model_dump(mode="json")

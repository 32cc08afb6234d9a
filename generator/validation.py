"""Validation of store entries, cluster profiles and plans: the schema, then cross-entry rules.

Pure: documents in, :class:`~generator.errors.Problem` lists out. Every rule reports every
violation it finds, so one run names all that is wrong.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import jsonschema

from generator import constants, errors, models
from generator.documents import Document, FieldPath, field_name
from generator.errors import Problem


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One of the JSON Schemas shipped in ``generator/schemas/``."""
    text = resources.files("generator").joinpath("schemas").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


#: An unescaped ``$``: in a Python regex it also matches before a final newline.
_DOLLAR = re.compile(r"(?<!\\)\$")


def whole_string(pattern: str) -> str:
    """``pattern`` with each ``$`` anchored at the very end of the string.

    JSON Schema patterns are ECMA-262, where ``$`` (without the multiline flag) matches only at
    the end; Python's ``$`` also matches before a trailing newline, so ``"shop\n"`` would pass
    ``^[a-z]+$``. Python validators get the patterns with ``\\Z`` instead (the schema files keep
    ECMA syntax for editors).
    """
    return _DOLLAR.sub(r"\\Z", pattern)


def _whole_string_patterns(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: whole_string(v) if k == "pattern" and isinstance(v, str) else _whole_string_patterns(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_string_patterns(v) for v in value]
    return value


@cache
def _python_schema(name: str) -> dict[str, Any]:
    """The schema as Python validators get it: every pattern matched against the whole string."""
    schema: dict[str, Any] = _whole_string_patterns(load_schema(name))
    return schema


@cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = _python_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@cache
def _fast_check(name: str) -> Any:
    """The schema compiled to Python: ten times faster than jsonschema on the valid (common) case."""
    return fastjsonschema.compile(_python_schema(name))


def is_valid(data: Any, schema_name: str) -> bool:
    try:
        _fast_check(schema_name)(data)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    return json.dumps(value, default=str)[:60]


_TYPE_NAMES = {
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "integer": "an integer",
    "boolean": "true or false",
    "number": "a number",
}


def _type_name(value: Any) -> str:
    for python_type, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
                              (dict, "mapping"), (list, "list")):
        if isinstance(value, python_type):
            return name
    return "null" if value is None else type(value).__name__


def schema_problems(doc: Document, schema_name: str) -> list[Problem]:
    """Every schema violation in ``doc``, each pinned to its field and line."""
    problems: list[Problem] = []
    if is_valid(doc.data, schema_name):
        return problems
    # Invalid: jsonschema lists every violation (the fast check stops at the first).
    for error in _validator(schema_name).iter_errors(doc.data):
        field: FieldPath = tuple(error.absolute_path)
        validator = error.validator
        if validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                problems.append(Problem(doc.path, doc.line_of((*field, key)), field_name((*field, key)),
                                        f"unknown field (allowed: {', '.join(allowed)})"))
            continue
        if validator == "required" and isinstance(error.instance, dict):
            missing = [k for k in error.validator_value if k not in error.instance]
            for key in missing:
                problems.append(Problem(doc.path, doc.line_of(field), field_name((*field, key)), "is required"))
            continue
        if validator == "enum":
            choices = ", ".join(str(c) for c in error.validator_value)
            message = f"{_describe(error.instance)} is not one of {choices}"
        elif validator == "type":
            message = f"must be {_TYPE_NAMES.get(str(error.validator_value), error.validator_value)}, " \
                      f"not {_type_name(error.instance)} {_describe(error.instance)}"
        elif validator == "pattern" and error.instance == "" and error.schema.get("minLength", 0) > 0:
            continue  # the minLength error says it once
        elif validator == "pattern":
            hint = error.schema.get("x-pattern-message", f"does not match {error.validator_value}")
            message = f"{_describe(error.instance)} is {hint}" if hint.startswith("not ") \
                else f"{_describe(error.instance)}: {hint}"
        elif validator in ("minLength", "maxLength"):
            message = f"must be {'at least' if validator == 'minLength' else 'at most'} " \
                      f"{error.validator_value} characters, not {len(error.instance)}"
        elif validator in ("minProperties", "maxProperties") and error.schema.get("properties"):
            fields = ", ".join(sorted(error.schema.get("properties", {})))
            message = f"must set exactly one of: {fields}" if error.schema.get("maxProperties") == 1 \
                else f"must set at least one of: {fields}"
        elif validator in ("minProperties", "maxProperties"):
            bound = "at least" if validator == "minProperties" else "at most"
            message = f"must have {bound} {error.validator_value} entr{'y' if error.validator_value == 1 else 'ies'}"
        else:
            message = error.message
        problems.append(Problem(doc.path, doc.line_of(field), field_name(field) or "(top)", message))
    # One field can break several rules that say the same (a field required by more than one clause).
    return list(dict.fromkeys(problems))


def _expected_name(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(constants.ENTRY_SUFFIX)


#: The longest id whose every derived name (namespace, Helm release, ...) fits its Kubernetes limit.
MAX_STORE_ID = min(limit - len(template.format(id="")) for _, template, limit in constants.DERIVED_NAME_LIMITS)


@cache
def _store_id_pattern() -> re.Pattern[str]:
    return re.compile(whole_string(load_schema(constants.STORE_SCHEMA)["properties"]["id"]["pattern"]))


def engines() -> tuple[str, ...]:
    """The engines a store may run: the store schema's enum, the one list (a chart per engine in templates/)."""
    return tuple(load_schema(constants.STORE_SCHEMA)["properties"]["engine"]["enum"])


def plans_offered() -> tuple[str, ...]:
    """The plans a store may ask for: the store schema's enum (each defined in templates/plans.yaml)."""
    return tuple(load_schema(constants.STORE_SCHEMA)["properties"]["plan"]["enum"])


def image_keys() -> dict[str, tuple[str, ...]]:
    """The chart images a cluster profile may set, each with the engines whose chart has it: the cluster
    schema's ``images.overrides`` (checked against the charts' values.yaml by the tests)."""
    overrides = load_schema(constants.CLUSTER_SCHEMA)["properties"]["images"]["properties"]["overrides"]
    return {key: tuple(spec["x-engines"]) for key, spec in overrides["properties"].items()}


def engine_images(engine: str) -> tuple[str, ...]:
    """The image keys (chart components with an image) of one engine's chart, sorted."""
    return tuple(sorted(key for key, engines in image_keys().items() if engine in engines))


def is_store_id(value: object) -> bool:
    """The one store-id rule, for every route: the schema's pattern, whole string, and at most MAX_STORE_ID."""
    return isinstance(value, str) and 0 < len(value) <= MAX_STORE_ID \
        and _store_id_pattern().fullmatch(value) is not None


def store_problems(doc: Document) -> list[Problem]:
    """Schema, file name and name-length rules for one store entry."""
    if not isinstance(doc.data, dict):
        return [Problem(doc.path, doc.line_of(()), "", f"must be a mapping of fields, not {_type_name(doc.data)}")]
    problems = schema_problems(doc, constants.STORE_SCHEMA)
    store_id = doc.data.get("id")
    if isinstance(store_id, str):
        expected = _expected_name(doc.path)
        if store_id != expected:
            problems.append(Problem(doc.path, doc.line_of(("id",)), "id",
                                    f"{_describe(store_id)} does not match the file name; "
                                    f"the file must be {constants.STORES_DIR}/{store_id}{constants.ENTRY_SUFFIX}",
                                    errors.FILE_NAME))
        exceeded = [(limit - len(template.format(id="")), what, template, limit)
                     for what, template, limit in constants.DERIVED_NAME_LIMITS
                     if len(template.format(id=store_id)) > limit]
        if exceeded:
            longest, what, template, limit = min(exceeded)
            problems.append(Problem(doc.path, doc.line_of(("id",)), "id",
                                    f"is {len(store_id)} characters; the {what} name {template} must fit "
                                    f"{limit}, so an id may have at most {longest}", errors.NAME_LENGTH))
    return problems


def cluster_problems(doc: Document) -> list[Problem]:
    if not isinstance(doc.data, dict):
        return [Problem(doc.path, doc.line_of(()), "", f"must be a mapping of fields, not {_type_name(doc.data)}")]
    problems = schema_problems(doc, constants.CLUSTER_SCHEMA)
    name = doc.data.get("name")
    if isinstance(name, str) and name != _expected_name(doc.path):
        problems.append(Problem(doc.path, doc.line_of(("name",)), "name",
                                f"{_describe(name)} does not match the file name; "
                                f"the file must be {constants.CLUSTERS_DIR}/{name}{constants.ENTRY_SUFFIX}",
                                errors.FILE_NAME))
    return problems


def plans_problems(doc: Document) -> list[Problem]:
    if not isinstance(doc.data, dict):
        return [Problem(doc.path, doc.line_of(()), "", f"must be a mapping of fields, not {_type_name(doc.data)}")]
    problems = schema_problems(doc, constants.PLANS_SCHEMA)
    offered = load_schema(constants.STORE_SCHEMA)["properties"]["plan"]["enum"]
    plans = doc.data.get("plans")
    if isinstance(plans, dict):
        for name in offered:
            if name not in plans:
                problems.append(Problem(doc.path, doc.line_of(("plans",)), f"plans.{name}",
                                        "is offered by the store schema but not defined"))
    return problems


@dataclass(frozen=True)
class Entry:
    """A store entry that passed its own checks, with its document for error locations."""

    store: models.Store
    doc: Document


def unknown_cluster(doc: Document, clusters: Mapping[str, object]) -> Problem | None:
    """The problem when a store names a cluster with no profile (also for otherwise invalid entries)."""
    name = doc.data.get("cluster") if isinstance(doc.data, dict) else None
    if not isinstance(name, str) or name in clusters:
        return None
    known = ", ".join(sorted(clusters)) or "none"
    return Problem(doc.path, doc.line_of(("cluster",)), "cluster",
                   f"{name!r} has no profile in {constants.CLUSTERS_DIR}/ (known: {known})", errors.UNKNOWN_CLUSTER)


def fleet_problems(
    stores: Iterable[Entry],
    clusters: Mapping[str, tuple[models.Cluster, Document]],
    plans: Mapping[str, models.Plan],
) -> list[Problem]:
    """The rules that span entries: unique ids and hosts, known clusters and plans, capacity."""
    problems: list[Problem] = []
    by_id: dict[str, Entry] = {}
    by_host: dict[str, Entry] = {}
    load: dict[str, list[Entry]] = {}
    for entry in stores:
        store, doc = entry.store, entry.doc
        first = by_id.setdefault(store.id, entry)
        if first is not entry:
            problems.append(Problem(doc.path, doc.line_of(("id",)), "id",
                                    f"{store.id!r} is already used by {first.doc.path}", errors.ID_TAKEN))
            continue
        if store.plan not in plans:
            problems.append(Problem(doc.path, doc.line_of(("plan",)), "plan",
                                    f"{store.plan!r} is not defined in {constants.PLANS_FILE}", errors.UNKNOWN_PLAN))
        target = clusters.get(store.cluster)
        if target is None:
            problems.append(unknown_cluster(doc, clusters))  # type: ignore[arg-type]
            continue
        cluster = target[0]
        host = cluster.host_for(store)
        holder = by_host.setdefault(host, entry)
        if holder is not entry:
            field = ("domain",) if store.domain else ("id",)
            problems.append(Problem(doc.path, doc.line_of(field), field[0],
                                    f"host {host!r} is already served by {holder.doc.path}", errors.HOST_TAKEN))
        load.setdefault(store.cluster, []).append(entry)
    for name, entries in sorted(load.items()):
        cluster, cdoc = clusters[name]
        problems.extend(_capacity_problems(cluster, cdoc, entries, plans))
    return problems


def _capacity_problems(
    cluster: models.Cluster, doc: Document, entries: list[Entry], plans: Mapping[str, models.Plan]
) -> list[Problem]:
    problems = []
    capacity = cluster.capacity
    if capacity.per_owner is not None:
        owned: dict[str, list[Entry]] = {}
        for entry in entries:
            owned.setdefault(entry.store.owner.email.casefold(), []).append(entry)
        for stores in owned.values():
            # The entries past the limit, in file order: the newest additions are usually the last.
            for entry in sorted(stores, key=lambda e: e.doc.path)[capacity.per_owner:]:
                problems.append(Problem(entry.doc.path, entry.doc.line_of(("owner", "email")), "owner.email",
                                        f"{entry.store.owner.email} would have {len(stores)} stores on cluster "
                                        f"{cluster.name!r}; each owner may have {capacity.per_owner} there",
                                        errors.OWNER_LIMIT))
    if len(entries) > capacity.stores:
        problems.append(Problem(doc.path, doc.line_of(("capacity", "stores")), "capacity.stores",
                                f"{len(entries)} stores are placed on cluster {cluster.name!r}; "
                                f"its capacity is {capacity.stores}", errors.CAPACITY))
    # Quantities are parsed once per plan, not once per store.
    per_plan = Counter(e.store.plan for e in entries if e.store.plan in plans)
    sized = sum(per_plan.values())
    if capacity.cpu_millis is not None:
        used = sum(plans[name].cpu_millis * count for name, count in per_plan.items())
        if used > capacity.cpu_millis:
            problems.append(Problem(doc.path, doc.line_of(("capacity", "cpu")), "capacity.cpu",
                                    f"the plans of {sized} stores need {used}m CPU; "
                                    f"capacity is {capacity.cpu_millis}m", errors.CAPACITY))
    if capacity.memory_bytes is not None:
        used = sum(plans[name].memory_bytes * count for name, count in per_plan.items())
        if used > capacity.memory_bytes:
            problems.append(Problem(doc.path, doc.line_of(("capacity", "memory")), "capacity.memory",
                                    f"the plans of {sized} stores need {used / 2**30:.1f}Gi memory; "
                                    f"capacity is {capacity.memory_bytes / 2**30:.1f}Gi", errors.CAPACITY))
    return problems

"""`index_report`: FT.INFO read for a person, saying in words what is wrong and how to fix it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis


def as_text(value: object) -> str:
    """A reply value as str, whether the client decodes responses or not."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def ft_info(r: redis.Redis, name: str) -> dict[str, object]:
    """FT.INFO as a dict with str keys, for RESP2 and RESP3 clients alike."""
    raw = r.execute_command("FT.INFO", name)
    return as_dict(raw)


def unknown_index(exc: BaseException) -> bool:
    """Whether Redis refused a command because the index does not exist (the wording differs across versions)."""
    text = str(exc).lower()
    return "unknown index" in text or "no such index" in text


def wait_indexed(r: redis.Redis, name: str, count: int = 0, timeout: float = 30.0) -> int:
    """Wait until the index has scanned every key under its prefixes (FT.CREATE over existing keys indexes them
    in the background) and holds at least `count` documents; returns how many it holds."""
    deadline = time.monotonic() + timeout
    while True:
        info = ft_info(r, name)
        docs, indexing = int(float(as_text(info["num_docs"]))), int(float(as_text(info.get("indexing", 0))))
        if indexing == 0 and float(as_text(info.get("percent_indexed", 1))) >= 1 and docs >= count:
            return docs
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} still indexing after {timeout:.0f} s ({docs} of {count or '?'} documents).")
        time.sleep(0.01)


def as_dict(raw: object) -> dict[str, object]:
    if isinstance(raw, dict):
        return {as_text(k): v for k, v in raw.items()}
    items = list(raw)  # type: ignore[arg-type]
    return {as_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


FLAGS = ("SORTABLE", "UNF", "NOSTEM", "NOINDEX", "CASESENSITIVE", "WITHSUFFIXTRIE", "INDEXEMPTY", "INDEXMISSING")


def field_attributes(info: dict[str, object]) -> list[dict[str, object]]:
    """FT.INFO's attributes, one lower-case-keyed dict per field, from a RESP3 map or a RESP2 flat list (where
    flags such as SORTABLE stand alone); `flags` lists the field's flags as str either way."""
    fields = []
    for attribute in info.get("attributes", []):  # type: ignore[union-attr]
        if isinstance(attribute, dict):
            attrs = {as_text(k).lower(): v for k, v in attribute.items()}
            attrs["flags"] = [as_text(flag) for flag in attrs.get("flags", [])]  # type: ignore[union-attr]
        else:
            tokens = list(attribute)  # type: ignore[call-overload]
            attrs = {as_text(tokens[i]).lower(): tokens[i + 1] for i in range(len(tokens) - 1)
                     if isinstance(tokens[i], (bytes, str))}
            attrs["flags"] = [as_text(t) for t in tokens if isinstance(t, (bytes, str)) and as_text(t) in FLAGS]
        fields.append(attrs)
    return fields


def vector_dims(info: dict[str, object]) -> dict[str, int]:
    """Vector field name -> DIM, read from FT.INFO's attributes."""
    return {as_text(attrs["attribute"]): int(as_text(attrs["dim"])) for attrs in field_attributes(info)
            if as_text(attrs.get("type", "")).upper() == "VECTOR" and "dim" in attrs}


def last_indexing_error(info: dict[str, object]) -> str:
    errors = as_dict(info.get("Index Errors", []))
    message = as_text(errors.get("last indexing error", "N/A"))
    key = as_text(errors.get("last indexing error key", "?"))
    return "" if message == "N/A" else f"Redis says: {message!r} (key {key})."


@dataclass
class IndexReport:
    """What FT.INFO says about an index, and the problems found in it."""

    name: str
    num_docs: int = 0
    failures: int = 0
    dims: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"Index {self.name!r}: {self.num_docs} documents, {self.failures} indexing failures"
        if self.ok:
            return head + ". Looks healthy."
        return head + ".\n" + "\n".join(f"  - {p}" for p in self.problems)


def index_report(r: redis.Redis, name: str, prefix: str | None = None) -> IndexReport:
    """Read FT.INFO (and a sample key) and explain 0 docs, failures or a DIM mismatch in words."""
    try:
        info = ft_info(r, name)
    except redis.ResponseError:
        report = IndexReport(name)
        report.problems.append(f"There is no index called {name!r}. Create it with FT.CREATE "
                               "(notebook 02) before querying it.")
        return report
    report = IndexReport(name, int(float(as_text(info.get("num_docs", 0)))),
                         int(float(as_text(info.get("hash_indexing_failures", 0)))), vector_dims(info))
    prefixes = _prefixes(info)
    if report.failures:
        widths = _sample_widths(r, prefixes[0] if prefixes else prefix, report.dims)
        hint = widths or "Usually a vector whose byte length is not DIM x 4 (float32) or a price that is not a number."
        report.problems.append(f"{report.failures} writes failed to index since the index was created. "
                               f"{last_indexing_error(info)} {hint}".replace("  ", " "))
    if report.num_docs == 0:
        report.problems.append(
            f"The index holds 0 documents. It covers keys starting with {prefixes or [prefix]}: "
            "check that your keys use that prefix and are HASHes (not JSON or strings).")
    return report


def _prefixes(info: dict[str, object]) -> list[str]:
    definition = as_dict(info.get("index_definition", []))
    return [as_text(p) for p in definition.get("prefixes", [])]


def _sample_widths(r: redis.Redis, prefix: str | None, dims: dict[str, int]) -> str:
    """Look at one key under the prefix and compare its vector length with DIM x 4 bytes."""
    if not prefix:
        return ""
    for key in r.scan_iter(match=f"{prefix}*", count=100):
        for field_name, dim in dims.items():
            blob = r.hget(key, field_name)
            if blob is not None and len(blob) != dim * 4:
                return (f"For example {as_text(key)} has a {field_name!r} of {len(blob)} bytes "
                        f"({len(blob) / 4:g} float32 values) where the schema expects DIM {dim} "
                        f"({dim * 4} bytes). Re-embed with a {dim}-dim model or recreate the index "
                        f"with DIM {len(blob) // 4}.")
        return ""
    return ""

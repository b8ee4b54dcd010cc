"""The one rule for metadata and filters, enforced at the store's edge.

What a read cannot return, a write must refuse: every path that stores an item
(HTTP, the local indexer, import, import-vectors) goes through the store's
upsert, which calls `validate_metadata`, so no request can leave a row that
breaks later reads or filtered searches for everyone.

The rule:
- metadata is a JSON object of at most `MAX_DEPTH` nested levels, `MAX_KEYS`
  keys in all and `max_bytes` bytes as JSON;
- every key is 1..`MAX_KEY_LENGTH` characters of letters, digits (any script),
  `_` and `-`: exactly what a filter field can name, with dots between levels;
- numbers are finite, and integers fit in 64 bits (SQLite's integer);
- strings are valid Unicode (no lone surrogates).

Filters (`FieldFilter`) compare types strictly: `true` matches only `true`,
`1` matches the numbers 1 and 1.0 but not `true`, `"1"` only the string. A field
holding an array matches when any of its elements matches ("contains" / "any of").
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from index.errors import InvalidItemError
from index.types import FieldFilter, Metadata

MAX_DEPTH = 16
MAX_KEYS = 1024
MAX_KEY_LENGTH = 64
MAX_METADATA_BYTES = 64 * 1024
MAX_FILTER_FIELDS = 32
MAX_FIELD_LENGTH = 256
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
KEY_PATTERN = re.compile(r"[\w-]+")
KEY_RULE = "letters, digits, _ and - (dots separate nested keys in filters)"


def check_key(key: object, where: str) -> str:
    """A metadata key or one part of a filter field, as the rule above allows."""
    if not isinstance(key, str):
        raise InvalidItemError(f"{where}: keys must be strings")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidItemError(f"{where}: key {key[:80]!r} must be 1 to {MAX_KEY_LENGTH} characters long")
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidItemError(f"{where}: key {key[:80]!r} is not allowed: use {KEY_RULE}")
    _check_unicode(key, where)
    return key


def check_number(value: int | float, where: str) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidItemError(f"{where}: the integer {value} is outside the 64-bit range")
    elif not math.isfinite(value):
        raise InvalidItemError(f"{where}: numbers must be finite, not {value}")


def _check_unicode(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidItemError(f"{where}: text holds a lone surrogate, which is not valid Unicode") from None


def validate_metadata(metadata: object, *, max_bytes: int = MAX_METADATA_BYTES) -> Metadata:
    """Return `metadata` if it follows the rule above, else raise InvalidItemError saying why."""
    if not isinstance(metadata, dict):
        raise InvalidItemError("metadata must be a JSON object")
    keys = 0

    def walk(value: Any, path: str, depth: int) -> None:
        nonlocal keys
        where = f"metadata{path}"
        if depth > MAX_DEPTH:
            raise InvalidItemError(f"metadata is nested more than {MAX_DEPTH} levels deep (at {where})")
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, int | float):
            check_number(value, where)
        elif isinstance(value, str):
            _check_unicode(value, where)
        elif isinstance(value, dict):
            keys += len(value)
            if keys > MAX_KEYS:
                raise InvalidItemError(f"metadata has more than {MAX_KEYS} keys")
            for key, item in value.items():
                walk(item, f"{path}.{check_key(key, where)}", depth + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, f"{path}[{i}]", depth + 1)
        else:
            raise InvalidItemError(f"{where}: {type(value).__name__} is not a JSON value")

    walk(metadata, "", 1)
    size = len(to_json(metadata))
    if size > max_bytes:
        raise InvalidItemError(f"metadata is {size} bytes as JSON; the limit is {max_bytes}")
    return metadata


def to_json(metadata: Metadata) -> str:
    """Metadata as the strict JSON that SQLite's JSON functions read (no NaN or Infinity)."""
    return json.dumps(metadata, ensure_ascii=False, allow_nan=False)


def repair_metadata(raw: str) -> tuple[Metadata, str | None]:
    """Metadata read back from a row written before the rule existed, and why it was changed (None: kept).

    Values the rule refuses are replaced, never the row dropped: non-finite
    numbers and out-of-range integers become null, keys the rule refuses are
    dropped, anything below `MAX_DEPTH` levels is cut to null.
    """
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return {}, "the stored metadata was not readable JSON; it is now {}"
    reasons: list[str] = []

    def fix(item: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            reasons.append(f"cut below {MAX_DEPTH} levels")
            return None
        if isinstance(item, float) and not math.isfinite(item):
            reasons.append("a non-finite number became null")
            return None
        if isinstance(item, int) and not isinstance(item, bool) and not INT64_MIN <= item <= INT64_MAX:
            reasons.append("an integer beyond 64 bits became null")
            return None
        if isinstance(item, str):
            return item.encode("utf-8", "replace").decode("utf-8")
        if isinstance(item, list):
            return [fix(x, depth + 1) for x in item]
        if isinstance(item, dict):
            kept = {}
            for key, x in item.items():
                if isinstance(key, str) and key and len(key) <= MAX_KEY_LENGTH and KEY_PATTERN.fullmatch(key):
                    kept[key.encode("utf-8", "replace").decode("utf-8")] = fix(x, depth + 1)
                else:
                    reasons.append(f"the key {str(key)[:40]!r} was dropped")
            return kept
        return item

    fixed = fix(value, 1)
    if not isinstance(fixed, dict):
        return {}, "the stored metadata was not an object; it is now {}"
    return fixed, "; ".join(dict.fromkeys(reasons)) or None


def check_filters(filters: list[FieldFilter] | tuple[FieldFilter, ...]) -> None:
    """Refuse a filter the rule cannot match: unknown field syntax, odd values, too many fields."""
    if len(filters) > MAX_FILTER_FIELDS:
        raise InvalidItemError(f"the filter names {len(filters)} fields; at most {MAX_FILTER_FIELDS}")
    for f in filters:
        if len(f.field) > MAX_FIELD_LENGTH:
            raise InvalidItemError(f"filter field {f.field[:80]!r}... is longer than {MAX_FIELD_LENGTH} characters")
        parts = f.field.split(".")
        if len(parts) > MAX_DEPTH:
            raise InvalidItemError(f"filter field {f.field!r} reaches deeper than {MAX_DEPTH} levels")
        for part in parts:
            if not part or not KEY_PATTERN.fullmatch(part):
                raise InvalidItemError(f"filter field {f.field!r} is not allowed: use {KEY_RULE}")
        _check_unicode(f.field, f"filter field {f.field!r}")
        if not f.values:
            raise InvalidItemError(f"filter on {f.field!r} lists no values")
        for value in f.values:
            if isinstance(value, str):
                _check_unicode(value, f"filter on {f.field!r}")
            elif isinstance(value, int | float):
                check_number(value, f"filter on {f.field!r}")
            else:
                raise InvalidItemError(f"filter on {f.field!r}: values must be strings, numbers or booleans")

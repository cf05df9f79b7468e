"""JSON Schema generated from msgspec types, in the OpenAPI 3.0 dialect the spec is written in.

msgspec generates JSON Schema 2020-12 (OpenAPI 3.1's dialect). The description stays
OpenAPI 3.0 because its hand-written parts say null with `nullable` and clients generated
from it expect 3.0; the few 2020-12 forms msgspec produces are rewritten here instead.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

REF_TEMPLATE: Final = "#/components/schemas/{name}"
_NULL: Final = {"type": "null"}
# Keywords whose value is a schema, a list of schemas, or a mapping of names to schemas; the
# rest (examples, defaults, enums, discriminators) are data and are left as they are.
_SCHEMA: Final = frozenset({"items", "additionalProperties", "not"})
_SCHEMAS: Final = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_NAMED_SCHEMAS: Final = frozenset({"properties", "$defs", "patternProperties"})


def components(*types: Any) -> dict[str, Any]:
    """The component schemas of `types` and of every type they refer to, by struct name."""
    _, schemas = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    return {name: openapi30(schema) for name, schema in schemas.items()}


def openapi30(schema: Any) -> Any:
    """`schema` (JSON Schema 2020-12, as msgspec writes it) in OpenAPI 3.0 form."""
    if not isinstance(schema, dict):
        return schema  # `true`, or a value under a keyword this does not know
    out = dict(schema)
    for key, value in schema.items():
        if key in _SCHEMA:
            out[key] = openapi30(value)
        elif key in _SCHEMAS:
            out[key] = [openapi30(item) for item in value]
        elif key in _NAMED_SCHEMAS:
            out[key] = {name: openapi30(item) for name, item in value.items()}
    _rewrite(out)
    return out


def _rewrite(out: dict[str, Any]) -> None:
    """The 2020-12 keywords of this one schema (not of those inside it) as 3.0 has them."""
    if _NULL in out.get("anyOf", ()):
        # `X | None`: 3.0 has no null type, only `nullable` beside the type it widens.
        rest = [option for option in out.pop("anyOf") if option != _NULL]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out.update(rest[0])
        else:
            # Siblings of a $ref are ignored in 3.0, so the reference keeps a wrapper.
            out["anyOf"] = rest
        out["nullable"] = True
    for bound, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out[bound], bool):
            out[inclusive] = out[bound]
            out[bound] = True
    if "examples" in out:
        # A schema has one `example` in 3.0; the first stands for them.
        out["example"] = out.pop("examples")[0]
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if out.get("required") == []:
        out.pop("required")  # 3.0: at least one name, when present

"""Request shaping: what body, query string and header values a subscription's requests carry.

Three body modes, chosen per subscription:
- the default envelope `{"id","type","timestamp","tenant_id","data"}`, built once per event;
- `body_fields`: a list of paths; the body keeps only those, nested as in the event;
- `body_template`: any JSON value whose strings may reference the event. A string that is
  exactly one reference, `"{{data.call.duration}}"`, becomes the referenced value with its
  JSON type (a number stays a number, an object an object, an absent field null). A reference
  inside a longer string, `"Call from {{data.contact.firstName}}"`, is replaced by the value
  as text (an absent field by nothing).
Header values may hold references the same way (as text). For GET and DELETE there is no
body: the top-level fields of what the body would have been go to the query string (objects
and lists as JSON text; a field list uses each path as the parameter name).

Templates are compiled when the subscription is saved, which is where a bad path is refused;
rendering walks the compiled tree with dict lookups. Nothing is evaluated as code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

import orjson

from service.events.envelope import Event
from service.events.paths import MISSING, Getter, InvalidPath, Path, getter, parse

MAX_TEMPLATE_BYTES: Final = 16 * 1024
MAX_FIELDS: Final = 100
# Header values come from event data, which is not trusted: no CR, LF or other control
# character may reach the wire, and a value stays within what receivers accept.
MAX_RENDERED_HEADER: Final = 4096
_REF: Final = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


class InvalidTemplate(ValueError):
    pass


class _Ref:
    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path


class _Text:
    """A string with references inside: literal parts and references, alternating."""

    __slots__ = ("render",)

    def __init__(self, parts: list[str | Path]) -> None:
        pieces = [part if isinstance(part, str) else getter(part) for part in parts]

        def render(event: Event) -> str:
            out = []
            for piece in pieces:
                if isinstance(piece, str):
                    out.append(piece)
                    continue
                value = piece(event)
                if value is MISSING or value is None:
                    continue
                out.append(value if isinstance(value, str) else orjson.dumps(value).decode())
            return "".join(out)

        self.render: Callable[[Event], str] = render


def references(node: Any, where: str) -> list[tuple[str, str]]:
    """Every `{{path}}` in a template or header value, with where it is: what the catalog
    checks of a subscription look at (service/subscriptions/checks.py)."""
    if isinstance(node, str):
        return [(where, m.group(1)) for m in _REF.finditer(node)]
    if isinstance(node, dict):
        return [r for k, v in node.items() for r in references(v, f"{where}.{k}")]
    if isinstance(node, list):
        return [r for i, v in enumerate(node) for r in references(v, f"{where}[{i}]")]
    return []


def _compile_string(text: str, where: str) -> str | _Ref | _Text:
    refs = list(_REF.finditer(text))
    if not refs:
        if "{{" in text or "}}" in text:
            raise InvalidTemplate(f"{where}: unbalanced {{{{ }}}} in {text[:60]!r}")
        return text
    try:
        if len(refs) == 1 and refs[0].span() == (0, len(text)):
            return _Ref(parse(refs[0].group(1)))
        parts: list[str | Path] = []
        last = 0
        for ref in refs:
            if ref.start() > last:
                parts.append(text[last : ref.start()])
            parts.append(parse(ref.group(1)))
            last = ref.end()
    except InvalidPath as exc:
        raise InvalidTemplate(f"{where}: {exc}") from None
    if last < len(text):
        parts.append(text[last:])
    if any(isinstance(p, str) and ("{{" in p or "}}" in p) for p in parts):
        raise InvalidTemplate(f"{where}: unbalanced {{{{ }}}} in {text[:60]!r}")
    return _Text(parts)


def _compile(node: Any, where: str) -> Any:
    if isinstance(node, str):
        return _compile_string(node, where)
    if isinstance(node, dict):
        return {k: _compile(v, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_compile(v, f"{where}[{i}]") for i, v in enumerate(node)]
    return node


def _build(node: Any) -> Callable[[Event], Any]:
    """The compiled tree as nested closures: rendering is calls and dict lookups only."""
    if isinstance(node, _Ref):
        if node.path == ("data",):
            # The payload as it arrived, spliced in without decoding and encoding it again.
            return lambda event: orjson.Fragment(event.data_raw)
        get = getter(node.path)

        def ref(event: Event) -> Any:
            value = get(event)
            return None if value is MISSING else value

        return ref
    if isinstance(node, _Text):
        return node.render
    if isinstance(node, dict):
        items = [(k, _build(v)) for k, v in node.items()]
        return lambda event: {k: render(event) for k, render in items}
    if isinstance(node, list):
        elements = [_build(v) for v in node]
        return lambda event: [render(event) for render in elements]
    return lambda _event: node


def _query_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or value is MISSING:
        return ""
    return orjson.dumps(value).decode()


class RequestShape:
    """A subscription's body, query and header templates, compiled once per version of it."""

    __slots__ = ("_fields", "_headers", "_template", "in_query")

    def __init__(
        self,
        *,
        method: str,
        body_template: Any = None,
        body_fields: tuple[str, ...] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Raise InvalidTemplate naming what cannot work."""
        if body_template is not None and body_fields is not None:
            raise InvalidTemplate("body_template: give it or body_fields, not both")
        self.in_query = method in ("GET", "DELETE")
        self._template: Callable[[Event], Any] | None = None
        if body_template is not None:
            if len(orjson.dumps(body_template)) > MAX_TEMPLATE_BYTES:
                raise InvalidTemplate(f"body_template: at most {MAX_TEMPLATE_BYTES} bytes")
            self._template = _build(_compile(body_template, "body_template"))
        self._fields: list[tuple[str, Path, Getter]] | None = None
        if body_fields is not None:
            if not 0 < len(body_fields) <= MAX_FIELDS:
                raise InvalidTemplate(f"body_fields: 1..{MAX_FIELDS} paths")
            try:
                self._fields = [(name, path, getter(path))
                                for name in body_fields for path in (parse(name),)]  # fmt: skip
            except InvalidPath as exc:
                raise InvalidTemplate(f"body_fields: {exc}") from None
        self._headers: dict[str, _Text] = {}
        for name, value in (headers or {}).items():
            compiled = _compile_string(value, f"headers.{name}")
            if isinstance(compiled, _Ref):  # a whole-value reference in a header is text
                compiled = _Text([compiled.path])
            if isinstance(compiled, _Text):
                self._headers[name] = compiled

    @property
    def is_default(self) -> bool:
        return self._template is None and self._fields is None and not self.in_query

    def body(self, event: Event) -> bytes:
        """The request body (POST, PUT, PATCH)."""
        if self._template is not None:
            return orjson.dumps(self._template(event))
        if self._fields is not None:
            return orjson.dumps(self._picked(event))
        return event.webhook_body()

    def query(self, event: Event) -> list[tuple[str, str]]:
        """The query parameters (GET, DELETE), in a stable order."""
        if self._fields is not None:
            return [(name, _query_value(get(event))) for name, _, get in self._fields]
        if self._template is not None:
            rendered = self._template(event)
            if not isinstance(rendered, dict):
                return [("value", _query_value(rendered))]
            return [(k, _query_value(v)) for k, v in rendered.items()]
        return [
            ("id", event.id),
            ("type", event.type),
            ("timestamp", event.time),
            ("tenant_id", event.tenant_id),
            ("data", event.data_raw.decode()),
        ]

    def headers(self, event: Event) -> dict[str, str]:
        """The header values that reference the event, rendered and made safe to send."""
        return {
            name: _CONTROL.sub(" ", text.render(event))[:MAX_RENDERED_HEADER]
            for name, text in self._headers.items()
        }

    def _picked(self, event: Event) -> dict[str, Any]:
        assert self._fields is not None
        out: dict[str, Any] = {}
        for _, path, get in self._fields:
            value = get(event)
            if value is MISSING:
                continue
            node = out
            for key in path[:-1]:
                child = node.get(str(key))
                if not isinstance(child, dict):
                    child = node[str(key)] = {}
                node = child
            node[str(path[-1])] = value
        return out

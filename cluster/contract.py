"""Decoding a typed record (a wire message, a manifest, a snapshot, a summary).

Every contract that crosses a process or the disk is a msgspec ``Struct``; what arrives
is checked against it by :func:`convert`, which turns msgspec's error (``Expected
`object`, got `array` - at `$.files```) into one that names the field the way a reader
of the file or message says it: ``MANIFEST.json: field "files" must be a map, got
list``. A message is a list whose items have no names on the wire; the error names
the Struct's field at that place (``HELLO: field "worker" must be an integer, got
string``), and a map's entry by its key (``field "files['w0.state.msgpack'].size"``).
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, TypeVar

import msgspec

from cluster.errors import ContractError

T = TypeVar("T")

_KINDS = {"int": "an integer", "float": "a number", "str": "a string", "object": "a map",
          "array": "a list", "bool": "a boolean", "null": "null", "bytes": "bytes"}
_AT = re.compile(r"^(?P<msg>.*?)(?: - at (?P<key>`key` in )?`(?P<path>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def convert(obj: Any, tp: type[T], what: str) -> T:
    """``obj`` (decoded JSON or msgpack) as a ``tp``; ContractError naming the field if not.

    Fields typed ``Any`` are passed through as they are (no copy). Bytes are taken as
    msgpack gives them, never base64-decoded from a string.
    """
    try:
        return msgspec.convert(obj, tp, builtin_types=(bytes,))
    except msgspec.ValidationError as e:
        raise ContractError(explain(e, obj, tp, what)) from None


def explain(error: msgspec.ValidationError, obj: Any, tp: Any, what: str) -> str:
    """The message of ``error`` (raised converting ``obj`` to ``tp``) in a reader's words."""
    m = _AT.match(str(error))
    assert m is not None  # the pattern matches any text
    text, path = m["msg"], m["path"] or "$"
    field, tp, obj = _walk(path, tp, obj)
    if m["key"]:
        field += " (a key)"
    missing = re.match(r"Object missing required field `(.+)`$", text)
    if missing:
        field = f"{field}.{missing[1]}" if field else missing[1]
        return f'{what}: field "{field}" is missing'
    short = re.match(r"Expected `array` of at least length \d+, got (\d+)$", text)
    names = _array_fields(tp, obj)
    if short and names:
        item = names[int(short[1])]
        return f'{what}: field "{_join(field, item)}" is missing'
    if re.match(r"Invalid value ", text) and field.endswith("kind"):
        return f'{what}: field "{field}" is {obj!r}, not a known kind'
    got = re.match(r"Expected `(.+?)`, got `(.+?)`$", text)
    if got:
        said = f"must be {_kind(got[1])}, got {_kind(got[2]).split()[-1]}"
    else:
        bound = re.match(r"Expected `(.+?)` (.+)$", text)
        said = f"must be {_kind(bound[1])} {bound[2]}" if bound else text
    return f'{what}: field "{field}" {said}' if field else f"{what}: {said}"


def _kind(names: str) -> str:
    kinds = [_KINDS.get(n, n) for n in names.split(" | ")]
    if "an integer" in kinds and "a number" in kinds:
        kinds.remove("an integer")  # int | float: a number
    return " or ".join(kinds)


def _join(field: str, name: str) -> str:
    return f"{field}.{name}" if field and not name.startswith("[") else field + name


def _walk(path: str, tp: Any, obj: Any) -> tuple[str, Any, Any]:
    """The reader's name of msgspec's ``path`` into ``obj``, and the type and value there."""
    field = ""
    for attr, index in _STEP.findall(path[1:]):
        tp = _resolve(tp, obj)
        if attr:
            sub = {f.encode_name: f.type for f in msgspec.structs.fields(tp)} \
                if _is_struct(tp) else {}
            field, tp = _join(field, attr), sub.get(attr, Any)
            obj = obj.get(attr) if isinstance(obj, dict) else None
        elif index == "...":
            value_tp = typing.get_args(tp)[1] if typing.get_origin(tp) is dict else Any
            key = _failing_key(obj, value_tp)
            field, tp = field + f"[{key!r}]", value_tp
            obj = obj.get(key) if isinstance(obj, dict) else None
        else:
            i = int(index)
            names = _array_fields(tp, obj)
            if names:
                field = _join(field, names[i])
                tp = Any if i == 0 and names[0] == "kind" else \
                    dict(zip(names, _field_types(tp), strict=False)).get(names[i], Any)
            else:
                args = typing.get_args(tp)
                field = field + f"[{i}]"
                tp = (args[0] if len(args) == 1 or (len(args) == 2 and args[1] is ...)
                      else args[i] if i < len(args) else Any)
            obj = obj[i] if isinstance(obj, (list, tuple)) and i < len(obj) else None
    return field, _resolve(tp, obj), obj


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _resolve(tp: Any, obj: Any) -> Any:
    """``tp`` without ``Annotated`` and ``None``; of a union of tagged Structs, ``obj``'s."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        tagged = [a for a in members if _is_struct(a) and a.__struct_config__.tag is not None]
        if tagged and isinstance(obj, (list, tuple)) and obj:
            return next((a for a in tagged if a.__struct_config__.tag == obj[0]), tp)
        if len(members) == 1:
            return _resolve(members[0], obj)
    return tp


def _array_fields(tp: Any, obj: Any) -> list[str]:
    """Names of a list-encoded Struct's items, ``kind`` first when it is tagged."""
    tp = _resolve(tp, obj)
    if not (_is_struct(tp) and tp.__struct_config__.array_like):
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            return ["kind"]  # a tag no member has
        return []
    names = [f.name for f in msgspec.structs.fields(tp)]
    return ["kind", *names] if tp.__struct_config__.tag is not None else names


def _field_types(tp: Any) -> list[Any]:
    types_ = [f.type for f in msgspec.structs.fields(tp)]
    return [Any, *types_] if tp.__struct_config__.tag is not None else types_


def _failing_key(obj: Any, value_tp: Any) -> Any:
    """The first key of the map ``obj`` whose value is not a ``value_tp``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            try:
                msgspec.convert(value, value_tp)
            except msgspec.ValidationError:
                return key
    return "..."

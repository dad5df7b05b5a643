"""JSON text by the standard library: the parser of last resort, and the one that says where.

``decode.parse_json`` parses with jiter first; whatever jiter refuses comes here, and the
verdict given here stands.  Every refusal names its place: a line and column for broken
syntax, a JSON path for a value no report may hold (a key twice in one object, NaN or
Infinity, an integer longer than Python converts).  Finding the path parses the text a
second time, which only a refused report pays.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any

from tlswatch.errors import ReportError


def parse(data: bytes, *, source: str, max_depth: int) -> Any:
    """The value of UTF-8 JSON text ``data`` (no BOM), or a ``ReportError`` saying where."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError(source, f"not UTF-8 text: invalid byte at offset {exc.start}") from exc
    try:
        return DECODER.decode(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _broken(exc, text, source, max_depth) from exc
    except ValueError as exc:  # a key twice, NaN or Infinity, too long an integer
        try:
            value = _MARKING.decode(text)
        except (json.JSONDecodeError, RecursionError) as broken:  # later in the text
            raise _broken(broken, text, source, max_depth) from exc
        raise _located(value, source, max_depth) from exc


def _broken(exc: json.JSONDecodeError | RecursionError, text: str, source: str,
            max_depth: int) -> ReportError:
    if isinstance(exc, RecursionError):
        return ReportError(source, f"JSON nested deeper than {max_depth} levels"
                           f"{_too_deep_at(text, max_depth)}")
    # The standard library words one message "Invalid control character at".
    return ReportError(source, f"not valid JSON: {exc.msg.removesuffix(' at')} at line "
                       f"{exc.lineno}, column {exc.colno}")


# A JSON string, or one bracket: what counting the nesting of a text needs to see.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[][{}]')


def _too_deep_at(text: str, max_depth: int) -> str:
    """Where in ``text`` the nesting first goes past ``max_depth``, as " at line L, column
    C" (the text is too deep for Python's parser to say where)."""
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                at = match.start()
                line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
                return f" at line {line}, column {column}"
        elif token in "]}":
            depth -= 1
    return ""  # a limit above the nesting Python's parser can read: no place to name


class _DuplicateKey(ValueError):
    pass


class _NotJson(ValueError):
    pass


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Refused rather than "the last one wins": a reader of the raw text would see the first.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    # NaN, Infinity and -Infinity: Python's parser reads them, JSON (RFC 8259) has none,
    # and a stored report holding one would be no JSON either.
    raise _NotJson(name)


# What json.loads(text, object_pairs_hook=unique_keys) does, NaN and Infinity refused, with
# the decoder (and its scanner) built once instead of at every call.
DECODER = json.JSONDecoder(object_pairs_hook=unique_keys, parse_constant=_no_constant)


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, in order (duplicates kept)."""


class _Constant(str):
    """NaN, Infinity or -Infinity where the text has one."""


class _LongInteger(str):
    """An integer's digits where there are more than Python converts."""


def _integer(digits: str) -> int | _LongInteger:
    limit = sys.get_int_max_str_digits()
    return _LongInteger(digits) if 0 < limit < len(digits.lstrip("-")) else int(digits)


_MARKING = json.JSONDecoder(object_pairs_hook=_Pairs, parse_constant=_Constant,
                            parse_int=_integer)


def _located(value: Any, source: str, max_depth: int) -> ReportError:
    """The refusal of the first value no report may hold (in a text parsed by
    ``_MARKING``), with its JSON path; nesting past ``max_depth`` before it is refused as
    ``decode`` refuses it where there is no such value."""
    for node, path, depth in _walk(value):
        if depth > max_depth:
            return ReportError(source, f"JSON nested deeper than {max_depth} levels",
                               path=(path[:60] + "...") if len(path) > 60 else (path or "$"))
        # Each key in the path is cut already; hundreds of levels would still make kilobytes.
        where = _short(path, quoted=False, limit=200) if path else "$"
        if isinstance(node, _Constant):
            return ReportError(source, f"not valid JSON: {node} is no JSON value", path=where)
        if isinstance(node, _LongInteger):
            return ReportError(source, f"an integer of {len(node.lstrip('-')):,} digits, over "
                               f"the limit of {sys.get_int_max_str_digits():,} digits",
                               path=where)
        if isinstance(node, _Twice):
            return ReportError(source, f"a JSON object has the key {_short(node)} more "
                               "than once (which one counts is not defined)", path=where)
    raise AssertionError("refused JSON text without a value to refuse")  # pragma: no cover


class _Twice(str):
    """A key where an object has it a second time."""


def _walk(value: Any) -> Iterator[tuple[Any, str, int]]:
    """Every value of a parsed text with its JSON path and its nesting (1 for the text's
    own object or array, 0 for a value in no container), in the text's order; a key that
    repeats one before it in its object as ``_Twice``, with the object's path."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        node, path, depth = stack.pop()
        container = isinstance(node, list)  # _Pairs are lists too
        yield node, path, depth if container else 0
        if isinstance(node, _Pairs):
            seen: set[str] = set()
            entries: list[tuple[Any, str, int]] = []
            for key, child in node:
                if key in seen:
                    entries.append((_Twice(key), path, 0))
                else:
                    seen.add(key)
                    name = _short(key, quoted=False)
                    entries.append((child, f"{path}.{name}" if path else name, depth + 1))
            stack.extend(reversed(entries))
        elif container:
            stack.extend((child, f"{path}[{i}]", depth + 1)
                         for i, child in reversed(list(enumerate(node))))


def _short(key: str, *, quoted: bool = True, limit: int = 60) -> str:
    """A key (or a path) as a message shows it: at most ``limit`` characters of it, and
    unquoted, what is not printable as an escape (``repr`` does that when quoted): a lone
    surrogate or a NUL could not even be stored, a terminal escape would act."""
    shown = key if len(key) <= limit else key[:limit] + "..."
    if quoted:
        return repr(shown)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)

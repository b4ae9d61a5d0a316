"""Filter expressions over item fields, e.g. `price < 100 and category startswith "Shoes"`.

The text comes from a config file, so it is parsed by a hand-written tokenizer and
recursive-descent parser into a small tree of vectorised predicates; nothing is ever handed
to `eval`. Grammar (keywords are lower case):

    expr       := conj ("or" conj)*
    conj       := neg ("and" neg)*
    neg        := "not" neg | "(" expr ")" | predicate
    predicate  := FIELD CMP literal                  CMP: < <= > >= == !=
                | FIELD ["not"] "in" "[" literal ("," literal)* "]"
                | FIELD "startswith" STRING | FIELD "contains" STRING
                | FIELD                              (a true/false field: available)
    literal    := NUMBER | STRING ("..." or '...', backslash escapes) | true | false

Fields: numbers price, margin, stock, age_days (days since created_at), created_at (UTC
ms); text item_id, title, category (full path "Shoes > Running"), top_category, brand;
true/false available; tags (a list: `tags contains "sale"`, `tags in ["a", "b"]` = any).
Text compares exactly, case included. A comparison with an unknown value (NaN, None) is
false, `!=` included; `not` then makes it true, so `not price < 100` keeps unpriced items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nextbuy.errors import ConfigError
from nextbuy.rules.catalog import (
    BOOL_FIELDS,
    DAY_MS,
    FIELDS,
    LIST_FIELDS,
    NUMBER_FIELDS,
    ItemCatalog,
)

MAX_LENGTH = 2000
MAX_DEPTH = 50
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
KEYWORDS = ("and", "or", "not", "in", "startswith", "contains", "true", "false")


class _SyntaxError(Exception):
    def __init__(self, message: str, column: int, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.column = column
        self.hint = hint


@dataclass(frozen=True)
class _Token:
    kind: str  # name, keyword, number, string, op, punct, end
    value: Any
    column: int  # 1-based
    source: str = ""  # as written, for messages


def compile_expression(text: str) -> CompiledExpression:
    """Parse `text` into f(catalog, candidate_indices, now_ms) -> bool mask.

    Raises ConfigError with a one-line message naming the column on any mistake.
    """
    try:
        if len(text) > MAX_LENGTH:
            raise _SyntaxError(f"longer than {MAX_LENGTH} characters", MAX_LENGTH + 1)
        parser = _Parser(_tokenize(text))
        node = parser.expression()
        parser.expect_end()
    except _SyntaxError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        where = f"{exc.message} at column {exc.column}{hint}"
        raise ConfigError(f"rule expression {text!r}: {where}") from None
    return CompiledExpression(text, node)


@dataclass(frozen=True)
class CompiledExpression:
    """A parsed expression; call it with (catalog, candidate indices, now_ms)."""

    text: str
    node: _Node

    def __call__(self, catalog: ItemCatalog, items: np.ndarray, now_ms: float) -> np.ndarray:
        return self.node.mask(catalog, items, now_ms)


# -- tokenizer ------------------------------------------------------------------------------
_PUNCT = "()[],"
_OP_CHARS = "<>=!"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in _PUNCT:
            tokens.append(_Token("punct", ch, i + 1))
            i += 1
        elif ch in _OP_CHARS:
            op = text[i : i + 2] if text[i : i + 2] in COMPARISONS else ch
            if op not in COMPARISONS:
                raise _SyntaxError(f"unknown operator {op!r}", i + 1, "use ==" if op == "=" else "")
            tokens.append(_Token("op", op, i + 1))
            i += len(op)
        elif ch in "\"'":
            value, end = _read_string(text, i)
            tokens.append(_Token("string", value, i + 1, text[i:end]))
            i = end
        elif ch.isdigit() or (ch in "-+." and _starts_number(text, i)):
            value, end = _read_number(text, i)
            tokens.append(_Token("number", value, i + 1, text[i:end]))
            i = end
        elif ch.isalpha() or ch == "_":
            end = i
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            word = text[i:end]
            tokens.append(_Token("keyword" if word in KEYWORDS else "name", word, i + 1))
            i = end
        else:
            raise _SyntaxError(f"unexpected character {ch!r}", i + 1)
    tokens.append(_Token("end", None, len(text) + 1))
    return tokens


def _starts_number(text: str, i: int) -> bool:
    rest = text[i + 1 : i + 3]
    return bool(rest) and (rest[0].isdigit() or (rest[0] == "." and rest[1:2].isdigit()))


def _read_number(text: str, start: int) -> tuple[float, int]:
    end = start + 1
    while end < len(text) and (
        text[end].isalnum() or text[end] in "._" or (text[end] in "+-" and text[end - 1] in "eE")
    ):
        end += 1
    word = text[start:end].replace("_", "")
    try:
        return float(word), end
    except ValueError:
        raise _SyntaxError(f"{text[start:end]!r} is not a number", start + 1) from None


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        out.append(ch)
        i += 1
    raise _SyntaxError("string is not closed", start + 1)


# -- parser ---------------------------------------------------------------------------------
class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def accept(self, kind: str, value: Any) -> bool:
        if self.token.kind == kind and self.token.value == value:
            self.pos += 1
            return True
        return False

    def fail(self, expected: str) -> _SyntaxError:
        token = self.token
        if token.kind == "end":
            return _SyntaxError(f"expected {expected}", token.column)
        found = token.source or str(token.value)
        return _SyntaxError(f"expected {expected}, found {found!r}", token.column)

    def expect_end(self) -> None:
        if self.token.kind != "end":
            raise self.fail("and, or or the end")

    def expression(self) -> _Node:
        parts = [self.conjunction()]
        while self.accept("keyword", "or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else _Or(tuple(parts))

    def conjunction(self) -> _Node:
        parts = [self.negation()]
        while self.accept("keyword", "and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else _And(tuple(parts))

    def negation(self) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _SyntaxError("nested too deeply", self.token.column)
        try:
            if self.accept("keyword", "not"):
                return _Not(self.negation())
            if self.accept("punct", "("):
                node = self.expression()
                if not self.accept("punct", ")"):
                    raise self.fail("')'")
                return node
            return self.predicate()
        finally:
            self.depth -= 1

    def predicate(self) -> _Node:
        token = self.token
        if token.kind != "name":
            raise self.fail("a field name")
        name = token.value
        if name not in FIELDS:
            raise _SyntaxError(
                f"unknown field {name!r}", token.column, f"fields: {', '.join(FIELDS)}"
            )
        self.advance()
        after = self.token
        if after.kind == "op":
            self.advance()
            return _compare(name, after.value, self.literal(), after.column)
        negate = self.accept("keyword", "not")
        if self.accept("keyword", "in"):
            node = _member(name, self.literal_list(), after.column)
            return _Not(node) if negate else node
        if negate:
            raise self.fail("in")
        if after.kind == "keyword" and after.value in ("startswith", "contains"):
            self.advance()
            value = self.literal()
            return _text_test(name, after.value, value, after.column)
        if name in BOOL_FIELDS:
            return _Flag(name, True)
        raise self.fail("a comparison, in, startswith or contains")

    def literal(self) -> _Literal:
        token = self.token
        if token.kind in ("number", "string"):
            self.advance()
            return _Literal(token.value, token.column)
        if token.kind == "keyword" and token.value in ("true", "false"):
            self.advance()
            return _Literal(token.value == "true", token.column)
        raise self.fail("a number or string")

    def literal_list(self) -> list[_Literal]:
        if not self.accept("punct", "["):
            raise self.fail("'['")
        values = [self.literal()]
        while self.accept("punct", ","):
            if self.token.kind == "punct" and self.token.value == "]":
                break  # a trailing comma, as TOML and Python allow
            values.append(self.literal())
        if not self.accept("punct", "]"):
            raise self.fail("',' or ']'")
        return values


@dataclass(frozen=True)
class _Literal:
    value: Any
    column: int


def _kind(name: str) -> str:
    if name in NUMBER_FIELDS:
        return "number"
    if name in BOOL_FIELDS:
        return "bool"
    if name in LIST_FIELDS:
        return "list"
    return "text"


def _check(name: str, literal: _Literal) -> Any:
    """The literal's value if it suits the field's type, else a typed error."""
    kind = _kind(name)
    value = literal.value
    ok = {
        "number": isinstance(value, float),
        "bool": isinstance(value, bool),
        "text": isinstance(value, str),
        "list": isinstance(value, str),
    }[kind]
    if not ok:
        wanted = {"number": "a number", "bool": "true or false", "text": "a string"}
        raise _SyntaxError(f"{name} needs {wanted.get(kind, 'a string')}", literal.column)
    return value


def _compare(name: str, op: str, literal: _Literal, column: int) -> _Node:
    value = _check(name, literal)
    kind = _kind(name)
    if kind == "number":
        return _NumberCompare(name, op, value)
    if op not in ("==", "!="):
        raise _SyntaxError(f"{name} allows == and != only, not {op}", column)
    if kind == "bool":
        return _Flag(name, value == (op == "=="))
    if kind == "list":
        raise _SyntaxError(f"{name} is a list: use contains or in", column)
    return _Text(name, op, (value,))


def _member(name: str, literals: list[_Literal], column: int) -> _Node:
    values = tuple(_check(name, lit) for lit in literals)
    kind = _kind(name)
    if kind == "number":
        return _NumberIn(name, np.array(values, dtype=float))
    if kind == "bool":
        raise _SyntaxError(f"{name} is true or false: compare it with ==", column)
    return _Text(name, "in", values)


def _text_test(name: str, op: str, literal: _Literal, column: int) -> _Node:
    kind = _kind(name)
    if kind in ("number", "bool"):
        raise _SyntaxError(f"{name} is not text: {op} needs a text field", column)
    value = literal.value
    if not isinstance(value, str):
        raise _SyntaxError(f"{op} needs a string", literal.column)
    return _Text(name, op, (value,))


# -- predicate tree -------------------------------------------------------------------------
class _Node:
    def mask(self, catalog: ItemCatalog, items: np.ndarray, now_ms: float) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class _And(_Node):
    parts: tuple[_Node, ...]

    def mask(self, catalog: ItemCatalog, items: np.ndarray, now_ms: float) -> np.ndarray:
        out = self.parts[0].mask(catalog, items, now_ms)
        for part in self.parts[1:]:
            out = out & part.mask(catalog, items, now_ms)
        return out


@dataclass(frozen=True)
class _Or(_Node):
    parts: tuple[_Node, ...]

    def mask(self, catalog: ItemCatalog, items: np.ndarray, now_ms: float) -> np.ndarray:
        out = self.parts[0].mask(catalog, items, now_ms)
        for part in self.parts[1:]:
            out = out | part.mask(catalog, items, now_ms)
        return out


@dataclass(frozen=True)
class _Not(_Node):
    part: _Node

    def mask(self, catalog: ItemCatalog, items: np.ndarray, now_ms: float) -> np.ndarray:
        return ~self.part.mask(catalog, items, now_ms)


def _numbers(catalog: ItemCatalog, name: str, items: np.ndarray, now_ms: float) -> np.ndarray:
    if name == "age_days":
        # Only the candidates' ages: the full column would cost O(catalogue) per request.
        return (now_ms - catalog.created_at_ms[items]) / DAY_MS
    return catalog.field(name)[items]


_NUMBER_OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": lambda a, b: np.not_equal(a, b) & ~np.isnan(a),  # NaN != x is unknown, so false
}


@dataclass(frozen=True)
class _NumberCompare(_Node):
    name: str
    op: str
    value: float

    def mask(self, catalog: ItemCatalog, items: np.ndarray, now_ms: float) -> np.ndarray:
        return _NUMBER_OPS[self.op](_numbers(catalog, self.name, items, now_ms), self.value)


@dataclass(frozen=True, eq=False)
class _NumberIn(_Node):
    name: str
    values: np.ndarray

    def mask(self, catalog: ItemCatalog, items: np.ndarray, now_ms: float) -> np.ndarray:
        return np.isin(_numbers(catalog, self.name, items, now_ms), self.values)


@dataclass(frozen=True)
class _Flag(_Node):
    name: str
    want: bool

    def mask(self, catalog: ItemCatalog, items: np.ndarray, now_ms: float) -> np.ndarray:
        values = catalog.field(self.name)[items]
        return values if self.want else ~values


@dataclass(frozen=True)
class _Text(_Node):
    """A test of a text or tags field, answered from a per-catalogue mask of all items."""

    name: str
    op: str  # ==, !=, in, startswith, contains
    values: tuple[str, ...]

    def mask(self, catalog: ItemCatalog, items: np.ndarray, now_ms: float) -> np.ndarray:
        key = ("expression", self.op, self.values)
        return catalog.value_mask(self.name, key, self.test)[items]

    def test(self, value: Any) -> bool:
        if isinstance(value, tuple):
            return self._test_tags(value)
        if self.op == "==":
            return value == self.values[0]
        if self.op == "!=":
            return value != self.values[0]
        if self.op == "in":
            return value in self.values
        if self.op == "startswith":
            return value.startswith(self.values[0])
        return self.values[0] in value

    def _test_tags(self, tags: tuple[str, ...]) -> bool:
        # On a list, contains is membership and in means any overlap.
        if self.op == "contains":
            return self.values[0] in tags
        if self.op == "in":
            return any(t in self.values for t in tags)
        return any(t.startswith(self.values[0]) for t in tags)

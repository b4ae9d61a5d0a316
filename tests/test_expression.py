"""Filter expressions: grammar, precedence, types, unknown values, errors, no eval."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pandas as pd
import pytest

from nextbuy.errors import ConfigError
from nextbuy.rules import ItemCatalog, compile_expression
from nextbuy.rules.catalog import DAY_MS

NOW = 1_700_000_000_000.0
IDS = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module")
def catalog() -> ItemCatalog:
    items = pd.DataFrame(
        {
            "item_id": IDS,
            "title": ["Red shoe", "Blue bag", None, "Red hat", 'Say "hi"'],
            "category": ["Shoes > Running", "Bags", None, "Hats", "Shoes"],
            "brand": ["Nike", "Eastpak", None, "Puma", "Nike"],
            "price": [90.0, 150.0, math.nan, 20.0, 100.0],
            "margin": [0.3, 0.1, math.nan, 0.5, 0.2],
            "available": [True, True, True, False, True],
            "stock": [3.0, 1.0, math.nan, 4.0, 2.0],
            "created_at": [
                int(NOW - d * DAY_MS) if d is not None else None for d in (2, 40, None, 5, 100)
            ],
            "tags": [["sale", "summer"], [], None, ["sale"], ["winter"]],
        }
    )
    return ItemCatalog.from_frame(items, IDS)


def matches(catalog: ItemCatalog, text: str) -> list[str]:
    """The ids an expression keeps, evaluated over shuffled candidates to test alignment."""
    items = np.array([4, 2, 0, 3, 1])
    mask = compile_expression(text)(catalog, items, NOW)
    assert mask.dtype == bool and mask.shape == items.shape
    return sorted(catalog.item_ids[items[mask]])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("price < 100", ["a", "d"]),
        ("price <= 100", ["a", "d", "e"]),
        ("price > 90", ["b", "e"]),
        ("price >= 90", ["a", "b", "e"]),
        ("price == 20", ["d"]),
        ("price != 20", ["a", "b", "e"]),  # unknown price c is not "different"
        ("price in [20, 150, 7]", ["b", "d"]),
        ("price not in [20, 150]", ["a", "c", "e"]),  # not (unknown in [...]) is true
        ("price > -1.5e1", ["a", "b", "d", "e"]),
        ("margin >= .3", ["a", "d"]),
        ("stock < 2", ["b"]),
        ("age_days < 10", ["a", "d"]),
        ("age_days >= 40", ["b", "e"]),
        ('brand == "Nike"', ["a", "e"]),
        ('brand != "Nike"', ["b", "d"]),  # unknown brand c is not "different"
        ('brand in ["Puma", "Eastpak",]', ["b", "d"]),
        ('category startswith "Shoes"', ["a", "e"]),
        ('category == "Shoes > Running"', ["a"]),
        ('top_category == "Shoes"', ["a", "e"]),
        ("title contains 'Red'", ["a", "d"]),
        ('title contains "\\"hi\\""', ["e"]),
        ('item_id in ["a", "c"]', ["a", "c"]),
        ("available", ["a", "b", "c", "e"]),
        ("not available", ["d"]),
        ("available == false", ["d"]),
        ("available != false", ["a", "b", "c", "e"]),
        ('tags contains "sale"', ["a", "d"]),
        ('tags in ["summer", "winter"]', ["a", "e"]),
        ('tags startswith "sum"', ["a"]),
    ],
)
def test_predicates(catalog: ItemCatalog, text: str, expected: list[str]) -> None:
    assert matches(catalog, text) == expected


def test_and_binds_tighter_than_or_and_not_tighter_than_and(catalog: ItemCatalog) -> None:
    # a or (b and c), not (a or b) and c
    assert matches(catalog, 'brand == "Puma" or price > 95 and brand == "Nike"') == ["d", "e"]
    assert matches(catalog, '(brand == "Puma" or price > 95) and brand == "Nike"') == ["e"]
    assert matches(catalog, 'not brand == "Nike" and available') == ["b", "c"]
    assert matches(catalog, 'not (brand == "Nike" and available)') == ["b", "c", "d"]
    assert matches(catalog, "not not available") == matches(catalog, "available")
    assert matches(catalog, "price < 50 or price > 120 or margin == 0.2") == ["b", "d", "e"]


def test_the_issue_example(catalog: ItemCatalog) -> None:
    assert matches(catalog, 'price < 100 and category startswith "Shoes"') == ["a"]


def test_unknown_values_compare_false(catalog: ItemCatalog) -> None:
    for text in ("price < 1e9", "price >= 0", "price != -1", 'brand != "x"', 'title contains ""'):
        assert "c" not in matches(catalog, text), text
    assert "c" in matches(catalog, "not price < 1e9")


def test_an_empty_candidate_list(catalog: ItemCatalog) -> None:
    mask = compile_expression("price < 3 or available")(catalog, np.empty(0, np.int64), NOW)
    assert mask.shape == (0,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("price < ", "expected a number or string at column 9"),
        ("price <", "expected a number or string at column 8"),
        ("pricey < 3", "unknown field 'pricey' at column 1"),
        ("price = 3", "unknown operator '=' at column 7 (use ==)"),
        ("price < 3 and", "expected a field name at column 14"),
        ("(price < 3", "expected ')' at column 11"),
        ("price < 3)", "expected and, or or the end, found ')' at column 10"),
        ('price < "cheap"', "price needs a number at column 9"),
        ("brand == 3", "brand needs a string at column 10"),
        ('brand < "x"', "brand allows == and != only, not < at column 7"),
        ('price startswith "1"', "price is not text: startswith needs a text field at column 7"),
        ('title == "open', "string is not closed at column 10"),
        ("price < 10abc", "'10abc' is not a number at column 9"),
        ("price in (1, 2)", "expected '[', found '(' at column 10"),
        ("price in [1 2]", "expected ',' or ']', found '2' at column 13"),
        ("price", "expected a comparison, in, startswith or contains at column 6"),
        ("price not < 3", "expected in, found '<' at column 11"),
        ('tags == "sale"', "tags is a list: use contains or in at column 6"),
        ("available in [true]", "available is true or false: compare it with == at column 11"),
        ("price < 3 ; drop", "unexpected character ';' at column 11"),
        ("", "expected a field name at column 1"),
        ("  ", "expected a field name at column 3"),
    ],
)
def test_errors_name_the_column(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        compile_expression(text)
    assert str(error.value).startswith(f"rule expression {text!r}: {message}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "price < 3 or __import__('os')",
        "[x for x in ().__class__.__bases__]",
        "price.__class__ == 1",
        "lambda: 1",
        "open('/etc/passwd')",
    ],
)
def test_python_is_not_evaluated(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval/exec/import must never run")

    for name in ("eval", "exec", "compile", "__import__"):
        monkeypatch.setattr(builtins, name, refuse)
    with pytest.raises(ConfigError):
        compile_expression(text)


def test_deep_nesting_and_long_text_are_refused() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        compile_expression("(" * 200 + "price < 1" + ")" * 200)
    with pytest.raises(ConfigError, match="nested too deeply"):
        compile_expression("not " * 200 + "available")
    with pytest.raises(ConfigError, match="longer than"):
        compile_expression(" or ".join(["price < 1"] * 500))
    compile_expression("(" * 20 + "price < 1" + ")" * 20)


def test_keywords_need_word_boundaries(catalog: ItemCatalog) -> None:
    # "order" starts with "or", "android" ends with "and": both are names, not operators.
    with pytest.raises(ConfigError, match="unknown field 'order'"):
        compile_expression("order < 3")
    with pytest.raises(ConfigError, match="unknown field 'android'"):
        compile_expression("price < 3 or android")
    with pytest.raises(ConfigError, match="'100and' is not a number"):
        compile_expression("price<100and available")
    assert matches(catalog, "price<100 and available") == ["a"]


def test_text_masks_are_built_once_per_catalogue() -> None:
    expr = compile_expression('title contains "Red"')
    fresh = ItemCatalog.from_frame(
        pd.DataFrame({"item_id": IDS, "title": ["Red", "x", None, "Red z", "y"]}), IDS
    )
    calls = 0
    original = fresh._evaluate

    def counted(name: str, test: object) -> np.ndarray:
        nonlocal calls
        calls += 1
        return original(name, test)  # type: ignore[arg-type]

    fresh._evaluate = counted  # type: ignore[method-assign]
    for _ in range(3):
        assert expr(fresh, np.array([0, 1, 3]), NOW).tolist() == [True, False, True]
    assert calls == 1

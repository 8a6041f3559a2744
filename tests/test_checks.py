"""Testes de companion._checks: um validador por significado, todos com a mesma forma de erro."""

from __future__ import annotations

import math

import pytest

from companion._checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_probability,
    is_int,
    is_number,
)


def test_is_int_and_is_number_exclude_bool_and_non_finite():
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(3) and is_number(2.5) and not is_number(True)
    assert not is_number(math.inf) and not is_number(math.nan) and not is_number("1")


def test_check_int_bounds_and_message():
    assert check_int("n", 3, 1) == 3
    with pytest.raises(ValueError, match=r"^T: n deve ser um inteiro >= 1; recebi 0\.$"):
        check_int("n", 0, 1, owner="T: ")
    with pytest.raises(ValueError, match=r"n deve ser um inteiro em \[1, 4\]; recebi 5"):
        check_int("n", 5, 1, 4)
    with pytest.raises(ValueError, match="recebi True"):
        check_int("n", True, 0)
    assert check_int("n", None, 1, allow_none=True) is None
    with pytest.raises(ValueError, match="None ou um inteiro"):
        check_int("n", "2", 1, allow_none=True)


def test_check_number_open_and_closed_bounds():
    assert check_number("lr", 1, 0.0, min_open=True) == 1.0 and isinstance(check_number("lr", 1, 0.0), float)
    with pytest.raises(ValueError, match=r"lr deve ser um número > 0; recebi 0"):
        check_number("lr", 0, 0.0, min_open=True)
    with pytest.raises(ValueError, match=r"p deve ser um número em \(0, 1\]"):
        check_number("p", 0.0, 0.0, 1.0, min_open=True)
    for bad in (math.nan, math.inf, True, "1"):
        with pytest.raises(ValueError, match="deve ser um número"):
            check_number("x", bad)


def test_probability_choice_and_bool():
    assert check_probability("drop", 0.0) == 0.0
    with pytest.raises(ValueError, match=r"drop deve ser um número em \[0, 1\)"):
        check_probability("drop", 1.0)
    assert check_choice("modo", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"modo deve ser um de \['a', 'b'\]; recebi 'c'"):
        check_choice("modo", "c", ("a", "b"))
    with pytest.raises(ValueError, match="True ou False"):
        check_bool("flag", 1)

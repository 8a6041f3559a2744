"""Os validadores do pacote: um por significado, todos com a mesma forma de erro.

Cada função confere um valor recebido de fora (de quem chama a biblioteca ou da linha
de comando) e, se ele não serve, levanta ``ValueError`` com uma mensagem em português
que diz o nome do campo, o que é permitido e o que chegou::

    ValueError: TrainConfig: steps deve ser um inteiro >= 1; recebi 0.

``owner`` é o prefixo opcional (``"TrainConfig: "``) que diz de onde veio o valor.
``bool`` nunca conta como número: ``True`` não é um tamanho de lote.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

__all__ = [
    "is_int",
    "is_number",
    "check_int",
    "check_number",
    "check_probability",
    "check_choice",
    "check_bool",
]


def is_int(value: object) -> bool:
    """``True`` para inteiros de verdade (``bool`` não conta)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """``True`` para números reais finitos (``int`` ou ``float``; ``bool``, ``inf`` e ``NaN`` não contam)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bounds(minimum: float | None, maximum: float | None, min_open: bool, max_open: bool) -> str:
    low = None if minimum is None else f"{'>' if min_open else '>='} {minimum:g}"
    high = None if maximum is None else f"{'<' if max_open else '<='} {maximum:g}"
    if low and high:
        left = "(" if min_open else "["
        right = ")" if max_open else "]"
        return f"em {left}{minimum:g}, {maximum:g}{right}"
    return low or high or ""


def check_int(
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    owner: str = "",
    allow_none: bool = False,
) -> int | None:
    """Confere um inteiro dentro de ``[minimum, maximum]`` e o devolve.

    Raises:
        ValueError: não é inteiro ou está fora dos limites.
    """
    if value is None and allow_none:
        return None
    ok = is_int(value) and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = _bounds(minimum, maximum, False, False)
        kind = "None ou um inteiro" if allow_none else "um inteiro"
        raise ValueError(f"{owner}{name} deve ser {kind} {bounds}; recebi {value!r}.".replace("  ", " ").replace(" ;", ";"))
    return value  # type: ignore[return-value]


def check_number(
    name: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
    owner: str = "",
    allow_none: bool = False,
) -> float | None:
    """Confere um número real finito dentro dos limites e o devolve como ``float``.

    Args:
        min_open, max_open: limite aberto (``>``/``<``) em vez de fechado (``>=``/``<=``).

    Raises:
        ValueError: não é número finito ou está fora dos limites.
    """
    if value is None and allow_none:
        return None
    ok = is_number(value)
    if ok and minimum is not None:
        ok = value > minimum if min_open else value >= minimum  # type: ignore[operator]
    if ok and maximum is not None:
        ok = value < maximum if max_open else value <= maximum  # type: ignore[operator]
    if not ok:
        bounds = _bounds(minimum, maximum, min_open, max_open)
        kind = "None ou um número" if allow_none else "um número"
        raise ValueError(f"{owner}{name} deve ser {kind} {bounds}; recebi {value!r}.".replace("  ", " ").replace(" ;", ";"))
    return float(value)  # type: ignore[arg-type]


def check_probability(name: str, value: object, *, owner: str = "") -> float:
    """Confere uma probabilidade em ``[0, 1)`` (a de *dropout*, por exemplo)."""
    return check_number(name, value, 0.0, 1.0, max_open=True, owner=owner)  # type: ignore[return-value]


def check_choice(name: str, value: object, choices: Collection[Any], *, owner: str = "") -> Any:
    """Confere que ``value`` é um dos ``choices`` e o devolve."""
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{owner}{name} deve ser um de {list(choices)}; recebi {value!r}.")
    return value


def check_bool(name: str, value: object, *, owner: str = "") -> bool:
    """Confere ``True`` ou ``False`` (e não ``1``, ``"sim"``...)."""
    if not isinstance(value, bool):
        raise ValueError(f"{owner}{name} deve ser True ou False; recebi {value!r}.")
    return value

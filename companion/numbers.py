"""Números no formato brasileiro: vírgula decimal e ponto de milhar, num só lugar.

Todo número que o curso mostra a uma pessoa — nos capítulos e na linha de comando — passa
por aqui, para que a mesma linha nunca misture ``2.63`` com ``126.521``::

    >>> num(126521)
    '126.521'
    >>> num(2.6312, 2)
    '2,63'
    >>> pct(0.9528, 2)
    '95,28%'
"""

from __future__ import annotations

import math

from companion._checks import check_int

__all__ = ["num", "pct"]


def num(value: float, decimals: int = 0) -> str:
    """``value`` com ``decimals`` casas, vírgula decimal e ponto a cada três dígitos."""
    check_int("decimals", decimals, 0)
    value = float(value)
    if not math.isfinite(value):
        return {math.inf: "∞", -math.inf: "-∞"}.get(value, "NaN")
    text = f"{value:,.{decimals}f}"  # 1,234.56 (formato americano)
    return text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def pct(fraction: float, decimals: int = 1) -> str:
    """Uma fração (0,9528) como porcentagem brasileira (``"95,3%"``)."""
    return f"{num(100 * float(fraction), decimals)}%"

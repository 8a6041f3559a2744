"""Mostrar, no capítulo, o código de verdade do pacote.

O livro constrói cada peça à mão e depois a importa de ``companion``. ``show_source``
põe na página o código-fonte da peça do pacote, com destaque de sintaxe — o mesmo no
site, no Colab e no Jupyter. Como a saída guarda o texto do código, o nbval avisa quando
o pacote muda e o capítulo não foi executado de novo: o livro nunca se afasta do pacote.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["show_source"]


def show_source(obj: Any, *, start: str | None = None, end: str | None = None) -> Any:
    """O código-fonte de ``obj`` (classe, função ou método do pacote), pronto para exibir.

    Args:
        obj: o que mostrar (``companion.CausalAttention``, ``companion.lm.CausalLM.hidden_states``...).
        start: mostra a partir da primeira linha que contém este texto (um trecho longo).
        end: ...até a primeira linha seguinte que contém este texto (inclusive).

    Returns:
        Um ``IPython.display.Code`` (destaque de sintaxe no HTML; o texto puro na saída).

    Raises:
        ValueError: ``start``/``end`` que não aparecem no código.
    """
    from IPython.display import Code

    obj = inspect.unwrap(obj)  # o código da função, não o do decorador (``@torch.no_grad()``...)
    lines, first = inspect.getsourcelines(obj)
    text = "".join(lines)
    if start is not None or end is not None:
        begin = 0 if start is None else _find(lines, start, 0)
        stop = len(lines) - 1 if end is None else _find(lines, end, begin)
        lines, first = lines[begin : stop + 1], first + begin
        text = "".join(lines)
    file = Path(inspect.getsourcefile(obj) or "?")
    parts = file.parts
    where = "/".join(parts[parts.index("companion") :]) if "companion" in parts else file.name
    header = f"# {where}, linha {first}\n"
    return Code(header + textwrap.dedent(text), language="python")


def _find(lines: list[str], needle: str, since: int) -> int:
    for i in range(since, len(lines)):
        if needle in lines[i]:
            return i
    raise ValueError(f"o texto {needle!r} não aparece no código mostrado.")

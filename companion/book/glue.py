"""Números da prosa vindos das células: ``glue`` sem depender do myst-nb.

O texto de um capítulo cita números que uma célula calcula. Para que uma nova execução
nunca deixe o texto velho para trás, a célula "cola" o valor com um nome
(``glue("acuracia", pct(acc))``) e a prosa o cita com ``{glue:text}`\\`acuracia\\``; o site
(myst-nb) insere o valor guardado na saída da célula, e a cópia para o Colab também.

É o mesmo formato de saída do ``myst_nb.glue`` (um *display* com o metadado
``scrapbook``), mas sem importar o myst-nb — que não existe no Colab.
"""

from __future__ import annotations

from typing import Any

__all__ = ["glue"]

# O prefixo que o myst-nb usa para valores colados que não aparecem na célula.
GLUE_PREFIX = "application/papermill.record/"


def glue(name: str, value: Any, display: bool = False) -> None:
    """Guarda ``value`` na saída da célula com o nome ``name`` (para ``{glue:text}`` na prosa).

    Args:
        name: nome único no capítulo.
        value: o que a prosa vai mostrar (use ``companion.numbers`` para números).
        display: mostra o valor também na célula.
    """
    from IPython.core.formatters import format_display_data
    from IPython.display import display as ipy_display

    bundle, metadata = format_display_data(value)
    prefix = "" if display else GLUE_PREFIX
    metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}
    ipy_display({prefix + key: text for key, text in bundle.items()}, raw=True, metadata=metadata)

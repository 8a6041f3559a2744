"""O que só o livro usa: o estilo das figuras, os gráficos, os controles interativos.

A primeira célula de cada capítulo chama ``companion.book.setup()``: a partida
reprodutível da biblioteca (``companion.setup``: sementes, *threads*, impressão) mais o
estilo das figuras. O resto do pacote não importa nada daqui (nem o matplotlib, nem o
ipywidgets).
"""

from __future__ import annotations

from companion.reproducibility import DEFAULT_SEED
from companion.reproducibility import setup as _library_setup

__all__ = ["setup"]


def setup(seed: int = DEFAULT_SEED, threads: int = 1, precision: int = 4) -> None:
    """Deixa o capítulo reprodutível e com a aparência do livro.

    Chama ``companion.setup(seed, threads, precision)`` e aplica o estilo das figuras
    (``companion.book.style.use_book_style``).

    Args:
        seed, threads, precision: como em ``companion.setup``.
    """
    _library_setup(seed, threads, precision)
    from companion.book.style import use_book_style

    use_book_style()

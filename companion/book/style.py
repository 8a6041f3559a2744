"""O estilo das figuras do livro: uma paleta e uma aparência para todos os capítulos."""

from __future__ import annotations

__all__ = ["PALETTE", "use_book_style"]

# Paleta do livro (cores distinguíveis também para daltônicos, baseada na de Okabe e Ito).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def use_book_style() -> None:
    """Aplica o estilo das figuras do livro ao matplotlib (chamado por ``companion.book.setup``)."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update(
        {
            "figure.figsize": (7.0, 3.6),
            "figure.dpi": 110,
            "savefig.dpi": 110,
            "axes.prop_cycle": cycler(color=PALETTE),
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.frameon": False,
            "font.size": 10,
            # Deixa o PNG idêntico entre execuções (sem data embutida).
            "svg.hashsalt": "llm-do-zero",
        }
    )

"""Dados: o corpus do curso (cap. 1) e os carregadores de janelas de tokens (cap. 2)."""

from __future__ import annotations

from companion.assets import asset_path

CORPUS_FILE = "corpus_ptbr.txt"


def load_corpus(verify: bool = True) -> str:
    """Devolve o corpus do curso: crônicas, contos, fábulas e causos originais em pt-BR.

    O texto foi escrito para o curso (licença CC BY 4.0; veja
    ``companion/assets/README.md``) e é conferido por sha256 antes de ser lido.

    Args:
        verify: confere o sha256 do arquivo (deixe ``True``; só desligue para depurar).

    Returns:
        O texto inteiro, em UTF-8, como uma única ``str``.
    """
    return asset_path(CORPUS_FILE, verify=verify).read_text(encoding="utf-8")

"""Extensão do Sphinx: o botão do Colab de cada página abre a cópia da branch `colab`.

O sphinx-book-theme monta o link do Colab com a branch de `repository.branch` (a
`main`), onde está o notebook do livro — com MyST que o Colab mostraria cru. As cópias
prontas para o Colab (`.ci/colab_notebooks.py`) ficam nos mesmos caminhos na branch
`colab`, publicada pelo fluxo `.github/workflows/pages.yml`; aqui só trocamos a branch
no link de cada página. Ligada em `_config.yml` (`sphinx.local_extensions`).
"""

from __future__ import annotations

import re

from colab_notebooks import COLAB_BRANCH

# https://colab.research.google.com/github/DONO/REPO/blob/BRANCH/caminho.ipynb
_COLAB_LINK = re.compile(r"^(?P<head>https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/)[^/]+/(?P<path>.+)$")


def colab_branch_url(url: str) -> str:
    """O mesmo link do Colab, apontando para a branch das cópias."""
    match = _COLAB_LINK.match(url)
    if match is None:
        raise ValueError(f"link do Colab inesperado: {url!r}")
    return f"{match.group('head')}{COLAB_BRANCH}/{match.group('path')}"


def _retarget_colab_button(app, pagename, templatename, context, doctree) -> None:
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if button.get("text") == "Colab":
                button["url"] = colab_branch_url(button["url"])


def setup(app):
    # Depois do tema (prioridade 501), que é quem cria os botões de cada página.
    app.connect("html-page-context", _retarget_colab_button, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

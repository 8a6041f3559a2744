#!/usr/bin/env python
"""Executa notebooks do livro no lugar e os normaliza — sempre do mesmo jeito.

Uso:
    python .ci/execute_notebooks.py                 # todos os notebooks de book/
    python .ci/execute_notebooks.py book/02-dados/tokenizacao.ipynb ...

Para cada notebook:
1. confere que a primeira célula de código é a célula de configuração do livro e
   reescreve nela o endereço do repositório a partir de `_config.yml` (a única
   configuração que muda num fork);
2. executa tudo com nbclient, com o diretório do notebook como diretório atual,
   1 thread e o estado dos widgets guardado (o site precisa dele para desenhá-los);
3. limpa metadados voláteis (tempos de execução, versão do Python) e grava com
   contagens de execução sequenciais — duas execuções seguidas não mudam nada
   no diff, e o nbval tem o que comparar.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
SETUP_MARK = "companion.setup("
VOLATILE_CELL_KEYS = ("execution", "ExecuteTime", "collapsed", "scrolled")
GIT_URL = re.compile(r"git\+https://github\.com/[^\s\"'@]+")


def repository_url() -> str:
    for line in (ROOT / "_config.yml").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s+url:\s*(\S+)", line)
        if match and "github.com" in match.group(1):
            return match.group(1).rstrip("/")
    raise SystemExit("_config.yml não tem repository.url")


def check_setup_cell(nb: nbformat.NotebookNode, path: Path, repo_url: str) -> None:
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    if not code_cells or SETUP_MARK not in code_cells[0].source:
        raise SystemExit(f"{path}: a primeira célula de código deve ser a de configuração ({SETUP_MARK}...)")
    first = code_cells[0]
    first.source = GIT_URL.sub(f"git+{repo_url}", first.source)
    tags = first.metadata.setdefault("tags", [])
    if "remove-input" not in tags:
        tags.append("remove-input")


def normalise(nb: nbformat.NotebookNode) -> None:
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)


def execute(path: Path, repo_url: str, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    check_setup_cell(nb, path, repo_url)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=True,
        record_timing=False,
    )
    start = time.perf_counter()
    client.execute()
    normalise(nb)
    nbformat.validate(nb)
    text = nbformat.writes(nb, version=4)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=1800, help="segundos por célula")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    paths = args.notebooks or sorted(
        p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts
    )
    repo_url = repository_url()
    for path in paths:
        seconds = execute(path.resolve(), repo_url, args.timeout)
        print(f"{path}: executado em {seconds:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

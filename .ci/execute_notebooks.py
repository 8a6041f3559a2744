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
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
SETUP_MARK = "companion.book.setup("
VOLATILE_CELL_KEYS = ("execution", "ExecuteTime", "collapsed", "scrolled")
GIT_URL = re.compile(r"git\+https://github\.com/[^\s\"'@]+")
WIDGET_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


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


def coalesce_streams(outputs: list) -> list:
    """Junta saídas de texto consecutivas do mesmo fluxo (stdout/stderr).

    Se um `print` chega ao kernel em um ou em dois pedaços depende do acaso do tempo;
    juntá-los deixa o arquivo igual em toda execução (o nbval também os junta).
    """
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (
            output.get("output_type") == "stream"
            and previous is not None
            and previous.get("output_type") == "stream"
            and previous.get("name") == output.get("name")
        ):
            previous["text"] = previous["text"] + output["text"]
        else:
            merged.append(output)
    return merged


def normalise(nb: nbformat.NotebookNode) -> None:
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for cell in nb.cells:
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = coalesce_streams(cell.outputs)


def stable_widget_ids(text: str, path: Path, nb: nbformat.NotebookNode) -> str:
    """Troca os ids aleatórios dos widgets por ids estáveis e ordena o estado guardado.

    Cada execução cria widgets com UUIDs novos (e o estado sai em ordem arbitrária);
    sem isto, o diff de um notebook com widgets mudaria a cada execução mesmo sem
    nenhuma mudança de conteúdo. Os novos ids seguem a ordem em que os widgets são
    alcançados: primeiro os exibidos nas células, em ordem, depois os que eles citam.
    """
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    order: list[str] = []

    def visit(model_id: str) -> None:
        if model_id in state and model_id not in order:
            order.append(model_id)
            refs = re.findall(r"IPY_MODEL_([0-9a-f]{32})", json.dumps(state[model_id], sort_keys=True))
            for ref in refs:
                visit(ref)

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if view:
                visit(view["model_id"])
    for model_id in sorted(state, key=lambda k: json.dumps(state[k], sort_keys=True)):
        visit(model_id)  # widgets não exibidos: ordem pelo conteúdo, não pelo acaso
    renames = {old: hashlib.md5(f"{path.name}:{i}".encode()).hexdigest() for i, old in enumerate(order)}
    text = WIDGET_ID.sub(lambda m: renames.get(m.group(0), m.group(0)), text)
    data = json.loads(text)
    widget_state = data["metadata"]["widgets"][WIDGET_STATE]
    widget_state["state"] = dict(sorted(widget_state["state"].items()))
    return json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


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
    if nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state"):
        text = stable_widget_ids(text, path, nb)
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

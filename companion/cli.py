"""Linha de comando: ``python -m companion <comando> [opções]``.

Cada comando mora no módulo que faz o trabalho (``companion.bench``,
``companion.train``...), que expõe ``add_command(subparsers)``; aqui só os
reunimos. Assim o módulo e o seu comando ficam juntos, num só lugar.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Módulos que registram comandos, na ordem em que aparecem na ajuda.
COMMAND_MODULES: list[str] = ["train", "generate_cli", "bench", "classifier", "finetune_cli", "chat_cli"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m companion",
        description="Ferramentas do curso LLM do Zero.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMANDO")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"companion.{module_name}").add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return int(args.handler(args) or 0)

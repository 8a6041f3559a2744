"""A linha de comando: ``python -m companion <comando> [opções]``.

Um módulo por comando (``companion/cli/train.py``, ``generate.py``...), cada um com
``add_command(subparsers)``, que registra as opções, e uma função ``run(args)``, que faz
o trabalho chamando a biblioteca. A partida (``--threads``, ``--device``,
``--precision``) e o jeito de errar (``erro: ...``, código 1) são os de
``companion.cli.common`` — os mesmos para todos.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from companion.cli.common import CommandParser, run_handler

__all__ = ["COMMANDS", "build_parser", "main"]

# comando -> módulo que o implementa, na ordem em que aparecem na ajuda
COMMANDS: dict[str, str] = {
    "train": "companion.cli.train",
    "generate": "companion.cli.generate",
    "chat": "companion.cli.chat",
    "bench": "companion.cli.bench",
    "finetune": "companion.cli.finetune",
    "classify": "companion.cli.classify",
    "export-onnx": "companion.cli.export_onnx",
}


def build_parser() -> CommandParser:
    """O *parser* com todos os comandos."""
    parser = CommandParser(prog="python -m companion", description="Ferramentas do curso LLM do Zero.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMANDO", parser_class=CommandParser)
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Ponto de entrada de ``python -m companion`` (e do executável ``companion``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 1
    return run_handler(handler, args)

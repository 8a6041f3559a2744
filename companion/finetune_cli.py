"""O comando ``python -m companion finetune TAREFA ...`` (cap. 6).

Cada tarefa mora no módulo que faz o trabalho e expõe três nomes:
``FINETUNE_HELP`` (uma linha de ajuda), ``add_finetune_arguments(parser)`` e
``run_finetune(args) -> int``. Aqui só as reunimos sob um comando.
"""

from __future__ import annotations

import argparse
import importlib

# tarefa -> módulo que a implementa
TASKS: dict[str, str] = {
    "classify": "classifier",
    "instruct": "instruct",
    "dpo": "dpo",
}


def add_command(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="ajuste fino do SmolLM2 nos dados do curso (cap. 6)",
        description="Ajuste fino do SmolLM2-135M-Instruct nos dados em pt-BR do curso.",
    )
    tasks = parser.add_subparsers(dest="task", metavar="TAREFA", required=True)
    for task, module_name in TASKS.items():
        module = importlib.import_module(f"companion.{module_name}")
        task_parser = tasks.add_parser(task, help=module.FINETUNE_HELP, description=module.FINETUNE_HELP)
        module.add_finetune_arguments(task_parser)
        task_parser.set_defaults(handler=module.run_finetune)

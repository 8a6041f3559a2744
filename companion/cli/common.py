"""O que todo comando tem em comum: opções de execução, uma partida só e um jeito só de errar.

- ``CommandParser``: o ``argparse.ArgumentParser`` do curso — mensagens em português e,
  para opções inválidas, uma linha ``erro: ...`` com código de saída 1 (nunca um
  *traceback*, nunca o código 2 do ``argparse``);
- ``add_runtime_options``: ``--threads``, ``--device`` e ``--precision``, iguais em todos os comandos;
- ``start``: a partida comum — confere as opções, fixa as *threads*, escolhe *device* e
  precisão pelo hardware (``companion.hardware``) e devolve um ``Runtime``;
- ``run_handler``: roda o comando e transforma erros de entrada (``ValueError``,
  ``TypeError``, ``OSError``) em ``erro: ...`` + código 1.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from companion import hardware
from companion._checks import check_int

__all__ = ["CommandParser", "Runtime", "add_runtime_options", "start", "run_handler", "fail"]

# As frases do argparse que o usuário vê, em português (o argparse as passa por gettext).
_ARGPARSE_PT = {
    "usage: ": "uso: ",
    "options": "opções",
    "positional arguments": "argumentos posicionais",
    "show this help message and exit": "mostra esta ajuda e sai",
    "the following arguments are required: %s": "faltam as opções obrigatórias: %s",
    "unrecognized arguments: %s": "opções desconhecidas: %s",
    "invalid %(type)s value: %(value)r": "valor inválido (esperava %(type)s): %(value)r",
    "invalid choice: %(value)r (choose from %(choices)s)": "escolha inválida: %(value)r (use uma de %(choices)s)",
    "expected one argument": "esperava um valor",
    "argument %(argument_name)s: %(message)s": "opção %(argument_name)s: %(message)s",
    "not allowed with argument %s": "não pode ser usada junto com %s",
    "ambiguous option: %(option)s could match %(matches)s": "opção ambígua: %(option)s pode ser %(matches)s",
    "one of the arguments %s is required": "uma das opções %s é obrigatória",
}
_TYPE_NAMES = {"int": "um inteiro", "float": "um número"}


def _translate(message: str) -> str:
    return _ARGPARSE_PT.get(message, message)


argparse._ = _translate  # type: ignore[attr-defined]  # o argparse chama _() na hora de formatar


class CommandParser(argparse.ArgumentParser):
    """Um ``ArgumentParser`` que erra em português, em uma linha e com código 1."""

    def error(self, message: str) -> None:  # type: ignore[override]
        for name, pt in _TYPE_NAMES.items():
            message = message.replace(f"(esperava {name})", f"(esperava {pt})")
        fail(f"{message} (veja {self.prog} --help)")


def fail(message: str) -> None:
    """Imprime ``erro: message`` na saída de erros e encerra com código 1."""
    print(f"erro: {message}", file=sys.stderr)
    raise SystemExit(1)


@dataclass(frozen=True)
class Runtime:
    """Onde e como um comando roda (o resultado de ``start``)."""

    device: torch.device
    precision: str  # "fp32" ou "bf16"
    threads: int

    @property
    def dtype(self) -> torch.dtype:
        """O ``torch.dtype`` da precisão (``float32`` ou ``bfloat16``)."""
        return hardware.torch_dtype(self.precision)


def add_runtime_options(parser: argparse.ArgumentParser, *, precision: bool = True, device: bool = True) -> None:
    """``--threads``, ``--device`` (se o comando pode usar uma GPU) e ``--precision`` (se calcula em ponto flutuante).

    Sem ``device``, o comando roda sempre na CPU (``start`` devolve ``cpu``).
    """
    group = parser.add_argument_group("execução")
    group.add_argument("--threads", type=int, default=1,
                       help="threads do PyTorch na CPU (padrão 1: em máquinas de 2 núcleos, o mais rápido)")
    if device:
        group.add_argument("--device", default="auto", choices=hardware.DEVICES,
                           help="onde calcular (padrão auto: cuda se houver GPU, senão mps ou cpu)")
    else:
        parser.set_defaults(device="cpu")
    if precision:
        group.add_argument("--precision", default="auto", choices=hardware.PRECISIONS,
                           help="auto (bf16 só onde o hardware o tem nativo), fp32 ou bf16 (padrão auto)")


def start(args: argparse.Namespace) -> Runtime:
    """A partida de todo comando: confere as opções de execução e prepara o PyTorch.

    Raises:
        ValueError: ``--threads`` < 1 ou *device* que a máquina não tem.
    """
    threads = check_int("--threads", args.threads, 1)
    torch.set_num_threads(threads)
    dev = hardware.device(args.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", hardware.SlowPrecisionWarning)
        prec = hardware.precision(getattr(args, "precision", "fp32"), dev)
    for warning in caught:
        print(f"aviso: {warning.message}", file=sys.stderr)
    return Runtime(device=dev, precision=prec, threads=threads)


def run_handler(handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Roda ``handler(args)``; erros de entrada viram ``erro: ...`` (código 1), sem *traceback*."""
    try:
        return int(handler(args) or 0)
    except (ValueError, TypeError, OSError) as error:
        print(f"erro: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrompido.", file=sys.stderr)
        return 130

"""Onde rodar e com que precisão: escolhidos pelo hardware, num lugar só.

Todo o pacote (capítulos, linha de comando, testes) passa por aqui para decidir:

- o *device*: ``cuda`` se houver uma GPU NVIDIA (o Colab com GPU), ``mps`` num Mac com
  Apple Silicon, senão ``cpu`` — ``device("auto")``;
- a precisão dos cálculos do treino e da inferência: ``bf16`` (*autocast* em
  ``bfloat16``) só onde o hardware tem unidades nativas para ele — uma GPU com bf16
  (Ampere ou mais nova) ou uma CPU com AVX512-BF16 ou AMX —, ``fp32`` em todo o resto
  (``precision("auto")``).

Por que tanto cuidado com o bf16: numa CPU sem essas instruções (AVX2: a maioria dos
laptops e o Colab sem GPU) o PyTorch emula o bf16 e uma multiplicação de matrizes fica
dezenas de vezes MAIS LENTA que em ``float32``. Em vez de adivinhar pelo fabricante, a
CPU é consultada: as *flags* ``avx512_bf16``/``amx_bf16`` do Linux (``/proc/cpuinfo``),
``FEAT_BF16`` num Mac. Quem limita o PyTorch a instruções mais antigas
(``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2`` ou ``MKL_ENABLE_INSTRUCTIONS=AVX2``)
também fica sem bf16.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from companion._checks import check_choice

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "SlowPrecisionWarning",
    "cpu_has_native_bf16",
    "native_bf16",
    "device",
    "precision",
    "torch_dtype",
    "autocast",
    "describe",
]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")

# Limites do oneDNN (ONEDNN_MAX_CPU_ISA) abaixo das instruções de bf16 nativo.
_ONEDNN_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


class SlowPrecisionWarning(UserWarning):
    """Avisa que o bf16 foi pedido num hardware que não o executa de forma nativa."""


def _linux_cpu_flags(cpuinfo: str) -> set[str]:
    """As *flags* (x86) ou *features* (ARM) da primeira CPU de um ``/proc/cpuinfo``."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def _forced_without_bf16(environ: dict[str, str] | os._Environ[str]) -> bool:
    """``True`` se o PyTorch foi limitado a instruções sem bf16 nativo por variável de ambiente."""
    aten = environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    onednn = environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    mkl = environ.get("MKL_ENABLE_INSTRUCTIONS", "").strip().upper()
    return (
        aten in ("default", "avx2", "zvector", "vsx")
        or onednn in _ONEDNN_WITHOUT_BF16
        or mkl in ("SSE4_2", "AVX", "AVX2", "AVX512")
    )


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """A CPU executa bf16 de forma nativa (AVX512-BF16, AMX ou ARM BF16)?

    Consulta o sistema operacional, não o fabricante: ``/proc/cpuinfo`` no Linux,
    ``sysctl hw.optional.arm.FEAT_BF16`` no macOS. Na dúvida (outro sistema, arquivo
    ilegível), responde ``False`` — o ``float32`` é sempre seguro.
    """
    if _forced_without_bf16(os.environ):
        return False
    system = platform.system()
    if system == "Linux":
        try:
            flags = _linux_cpu_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return False
        return bool(flags & _CPU_BF16_FLAGS) or "bf16" in flags  # "bf16": ARM (aarch64)
    if system == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return out.stdout.strip() == "1"
    return False


def native_bf16(dev: torch.device | str | None = None) -> bool:
    """O *device* tem bf16 nativo? (GPU: Ampere ou mais nova; CPU: ``cpu_has_native_bf16``; MPS: não.)"""
    dev = torch.device("cpu" if dev is None else dev)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return False
        major, _ = torch.cuda.get_device_capability(dev)
        return major >= 8  # a T4 do Colab (7.5) só emula o bf16
    if dev.type == "cpu":
        return cpu_has_native_bf16()
    return False  # no MPS o ganho varia com a versão do macOS: o float32 é a escolha segura


def device(requested: str | torch.device = "auto") -> torch.device:
    """O *device* onde rodar.

    Args:
        requested: ``"auto"`` (``cuda`` se houver, depois ``mps``, senão ``cpu``),
            ``"cpu"``, ``"cuda"`` ou ``"mps"``; um ``torch.device`` é devolvido como está.

    Returns:
        Um ``torch.device``.

    Raises:
        ValueError: nome desconhecido, ou um *device* pedido que esta máquina não tem.
    """
    if isinstance(requested, torch.device):
        return requested
    check_choice("device", requested, DEVICES)
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if requested == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if requested == "cuda" and not cuda:
        raise ValueError("device 'cuda' pedido, mas o PyTorch não encontrou nenhuma GPU NVIDIA; use 'auto' ou 'cpu'.")
    if requested == "mps" and not mps:
        raise ValueError("device 'mps' pedido, mas esta máquina não tem o backend MPS (Apple Silicon); use 'auto' ou 'cpu'.")
    return torch.device(requested)


def precision(requested: str = "auto", dev: torch.device | str | None = None) -> str:
    """A precisão dos cálculos: ``"bf16"`` ou ``"fp32"``.

    Args:
        requested: ``"auto"`` (bf16 só com suporte nativo, veja ``native_bf16``),
            ``"fp32"`` ou ``"bf16"`` (obedecido; sem suporte nativo, avisa que será lento).
        dev: o *device* (padrão: a CPU).

    Returns:
        ``"bf16"`` ou ``"fp32"``.

    Raises:
        ValueError: nome desconhecido.
    """
    check_choice("precision", requested, PRECISIONS)
    native = native_bf16(dev)
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        where = torch.device("cpu" if dev is None else dev).type
        warnings.warn(
            f"bf16 pedido num {where} sem bf16 nativo: as contas serão emuladas e podem ficar dezenas de vezes "
            "mais lentas que em fp32. Use --precision auto (ou fp32).",
            SlowPrecisionWarning,
            stacklevel=2,
        )
    return requested


def torch_dtype(prec: str) -> torch.dtype:
    """``"fp32"`` -> ``torch.float32``; ``"bf16"`` -> ``torch.bfloat16``."""
    check_choice("precision", prec, ("fp32", "bf16"))
    return torch.bfloat16 if prec == "bf16" else torch.float32


@contextlib.contextmanager
def autocast(prec: str, dev: torch.device | str | None = None) -> Iterator[None]:
    """*Autocast* em bf16 quando ``prec == "bf16"``; nada muda em ``"fp32"``.

    Os pesos continuam em ``float32``; só as multiplicações de matrizes (e afins) rodam
    em ``bfloat16`` dentro do bloco.
    """
    check_choice("precision", prec, ("fp32", "bf16"))
    dev = torch.device("cpu" if dev is None else dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16"):
        yield


def describe(dev: torch.device | str | None = None, prec: str | None = None) -> str:
    """Uma linha em português: onde e com que precisão os cálculos vão rodar, e por quê."""
    dev = torch.device("cpu" if dev is None else dev)
    parts = [f"device {dev.type}"]
    if dev.type == "cpu":
        parts.append(f"instruções {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} thread(s)")
    elif dev.type == "cuda":
        parts.append(torch.cuda.get_device_name(dev))
    native = native_bf16(dev)
    parts.append("com bf16 nativo" if native else "sem bf16 nativo")
    if prec is not None:
        parts.append(f"precisão {prec}")
    return " · ".join(parts)

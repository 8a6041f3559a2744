"""Testes de companion.hardware: device e precisão escolhidos pelo hardware (com o hardware simulado)."""

from __future__ import annotations

import warnings

import pytest
import torch

from companion import hardware

AMX_CPUINFO = "processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX2_CPUINFO = "processor : 0\nflags : fpu sse avx avx2 fma\n"
ARM_CPUINFO = "processor : 0\nFeatures : fp asimd bf16 i8mm\n"


@pytest.fixture
def cpu(monkeypatch):
    """Simula a CPU (conteúdo de /proc/cpuinfo) e limpa o cache da detecção."""

    def use(cpuinfo: str, system: str = "Linux") -> None:
        hardware.cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(hardware.platform, "system", lambda: system)
        monkeypatch.setattr(hardware.Path, "read_text", lambda self, **kw: cpuinfo)
        monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS", raising=False)

    yield use
    hardware.cpu_has_native_bf16.cache_clear()


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(AMX_CPUINFO, True), (AVX2_CPUINFO, False), (ARM_CPUINFO, True), ("", False)],
)
def test_cpu_bf16_comes_from_the_cpu_flags(cpu, cpuinfo, native):
    cpu(cpuinfo)
    assert hardware.cpu_has_native_bf16() is native


@pytest.mark.parametrize(("var", "value"), [("ATEN_CPU_CAPABILITY", "avx2"), ("ONEDNN_MAX_CPU_ISA", "AVX2"),
                                            ("ATEN_CPU_CAPABILITY", "default"), ("MKL_ENABLE_INSTRUCTIONS", "AVX2")])
def test_forcing_older_kernels_turns_bf16_off(cpu, monkeypatch, var, value):
    cpu(AMX_CPUINFO)
    monkeypatch.setenv(var, value)
    assert not hardware.cpu_has_native_bf16()
    assert hardware.precision("auto", "cpu") == "fp32"


def test_auto_precision_on_cpus(cpu, no_gpu):
    cpu(AVX2_CPUINFO)
    assert hardware.precision("auto") == "fp32"  # nunca bf16 sem suporte nativo
    cpu(AMX_CPUINFO)
    assert hardware.precision("auto") == "bf16"
    assert hardware.precision("fp32") == "fp32"


def test_explicit_bf16_without_native_support_warns_in_portuguese(cpu):
    cpu(AVX2_CPUINFO)
    with pytest.warns(hardware.SlowPrecisionWarning, match="sem bf16 nativo.*mais lentas"):
        assert hardware.precision("bf16", "cpu") == "bf16"
    cpu(AMX_CPUINFO)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hardware.precision("bf16", "cpu") == "bf16"


def test_device_auto_prefers_cuda_then_mps(monkeypatch, no_gpu):
    assert hardware.device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert hardware.device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.device("auto") == torch.device("cuda")
    assert hardware.device("cpu") == torch.device("cpu")
    assert hardware.device(torch.device("cpu")) == torch.device("cpu")


def test_device_errors(no_gpu):
    with pytest.raises(ValueError, match="nenhuma GPU NVIDIA"):
        hardware.device("cuda")
    with pytest.raises(ValueError, match="MPS"):
        hardware.device("mps")
    with pytest.raises(ValueError, match=r"device deve ser um de \['auto', 'cpu', 'cuda', 'mps'\]"):
        hardware.device("gpu")


@pytest.mark.parametrize(("capability", "native"), [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_cuda_bf16_needs_ampere_or_newer(monkeypatch, capability, native):
    """A T4 do Colab (7.5) emula o bf16: lá o automático fica em fp32."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: capability)
    assert hardware.native_bf16("cuda") is native
    assert hardware.precision("auto", "cuda") == ("bf16" if native else "fp32")


def test_mps_stays_fp32():
    assert not hardware.native_bf16("mps")


def test_precision_names_and_autocast():
    with pytest.raises(ValueError, match="precision deve ser um de"):
        hardware.precision("fp16")
    assert hardware.torch_dtype("bf16") == torch.bfloat16 and hardware.torch_dtype("fp32") == torch.float32
    with pytest.raises(ValueError, match="precision"):
        hardware.torch_dtype("auto")  # a precisão já resolvida, nunca "auto"
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with hardware.autocast("bf16", "cpu"):
        assert (a @ b).dtype == torch.bfloat16
    with hardware.autocast("fp32", "cpu"):
        assert (a @ b).dtype == torch.float32


def test_describe_says_where_and_why(cpu):
    cpu(AVX2_CPUINFO)
    line = hardware.describe("cpu", "fp32")
    assert "device cpu" in line and "sem bf16 nativo" in line and "precisão fp32" in line

"""Testes de companion.cli: uma partida e um jeito de errar para todos os comandos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from companion.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_is_registered_with_runtime_options():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)
    for name in ("train", "generate", "chat", "bench", "classify"):
        options = {o for a in sub.choices[name]._actions for o in a.option_strings}
        assert {"--threads", "--device"} <= options, name


@pytest.mark.parametrize(
    "argv",
    [
        ["train"],  # falta --data e --out
        ["train", "--data", "x", "--out", "y", "--steps", "dez"],
        ["generate", "--prompt", "oi", "--device", "gpu"],
        ["bench", "--steps", "0"],
        ["bench", "--no-gen", "--no-train", "--threads", "0"],
        ["generate", "--prompt", "oi", "--opcao-que-nao-existe"],
        ["comando-que-nao-existe"],
        ["finetune"],  # falta a tarefa
    ],
)
def test_bad_arguments_give_one_portuguese_line_and_status_1(capsys, argv):
    with pytest.raises(SystemExit) as stop:
        raise SystemExit(main(argv))
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("erro: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "error:" not in err and "usage" not in err


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 1
    assert "uso:" in capsys.readouterr().err


def test_help_is_in_portuguese(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("uso:") and "opções" in out and "--precision" in out


def test_module_entry_point_without_traceback():
    result = subprocess.run([sys.executable, "-m", "companion", "bench", "--steps", "0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("erro: --steps deve ser")
    assert "Traceback" not in result.stderr


def test_start_uses_the_gpu_when_there_is_one(monkeypatch):
    """Com uma GPU (simulada), a partida comum a escolhe; o bf16 só vem automático numa Ampere ou mais nova."""
    import torch

    from companion.cli.common import start

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    args = build_parser().parse_args(["generate", "--prompt", "oi", "--smollm2"])
    for capability, expected in (((7, 5), "fp32"), ((8, 6), "bf16")):  # T4 do Colab; A100/L4
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None, c=capability: c)
        runtime = start(args)
        assert runtime.device.type == "cuda" and runtime.precision == expected


def test_start_warns_when_bf16_is_forced_without_native_support(monkeypatch, capsys):
    import torch

    from companion import hardware
    from companion.cli.common import start

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    args = build_parser().parse_args(["generate", "--prompt", "oi", "--smollm2", "--device", "cpu", "--precision", "bf16"])
    runtime = start(args)
    assert runtime.precision == "bf16"
    assert capsys.readouterr().err.startswith("aviso: bf16 pedido num cpu sem bf16 nativo")

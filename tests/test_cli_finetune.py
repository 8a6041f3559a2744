"""Testes de companion.cli.finetune: as tarefas ``finetune classify|instruct|dpo`` sem treinar (cap. 6).

Os treinos de ponta a ponta (lentos) estão nos testes de cada biblioteca; aqui ficam os
padrões de cada tarefa e os erros que precisam aparecer antes de carregar qualquer modelo.
"""

from __future__ import annotations

import pytest

from companion.cli import build_parser, main


def parse(*argv: str):
    return build_parser().parse_args(["finetune", *argv])


def test_instruct_defaults():
    args = parse("instruct", "--out", "x")
    assert (args.rank, args.alpha, args.targets, args.seed, args.no_mask_prompt) == (8, 16.0, "q_proj,v_proj", 123, False)
    assert (args.steps, args.batch_size, args.lr, args.dropout, args.eval_interval) == (150, 8, 1e-3, 0.05, 40)
    assert (args.threads, args.device, args.precision) == (1, "auto", "auto")


def test_dpo_defaults_are_not_the_instruction_ones():
    """As opções vêm do ajudante comum com a LoRA, mas os padrões são os da DPO (não os das instruções)."""
    args = parse("dpo", "--out", "x")
    assert (args.steps, args.batch_size, args.lr, args.dropout, args.beta) == (120, 4, 1e-4, 0.0, 0.5)
    assert not hasattr(args, "no_mask_prompt") and not hasattr(args, "eval_interval")


@pytest.mark.parametrize(
    "task, extra, match",
    [
        ("instruct", ["--rank", "0"], "r (o posto) deve ser"),
        ("instruct", ["--limit", "0"], "--limit"),
        ("instruct", ["--targets", ","], "--targets"),
        ("instruct", ["--lr", "-1"], "lr deve ser"),
        ("instruct", ["--threads", "0"], "--threads"),
        ("instruct", ["--precision", "fp16"], "escolha inválida"),
        ("dpo", ["--beta", "0"], "--beta"),
        ("dpo", ["--rank", "0"], "r (o posto)"),
        ("dpo", ["--limit", "0"], "--limit"),
        ("dpo", ["--sft-adapter", "/nao/existe"], "não encontrado"),
        ("dpo", ["--threads", "0"], "--threads"),
        ("dpo", ["--model", "smollm2"], "não publica um adaptador de instruções para --model smollm2"),
        ("classify", ["--epochs", "0"], "epochs deve ser um inteiro >= 1"),
        ("classify", ["--device", "tpu"], "escolha inválida"),
    ],
)
def test_errors_before_loading(tmp_path, capsys, task, extra, match):
    with pytest.raises(SystemExit) as stop:  # erros do argparse também saem com código 1
        raise SystemExit(main(["finetune", task, "--out", str(tmp_path / "o"), *extra]))
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("erro: ") and match in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_instruct_refuses_existing_adapter(tmp_path, capsys):
    (tmp_path / "adapter.safetensors").write_bytes(b"x")
    assert main(["finetune", "instruct", "--out", str(tmp_path)]) == 1
    assert "já existe" in capsys.readouterr().err

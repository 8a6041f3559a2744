"""Benchmark do modelo: tokens por segundo no treino e na geração (cap. 4 e apêndice de escala).

``run_benchmark`` (e o comando ``python -m companion bench --preset curso-medio``) mede, para um *preset* de
``GPTConfig``:

- **treino**: um passo completo — *forward*, perda (entropia cruzada), *backward* e
  AdamW (o de ``companion.train.make_optimizer``) — em lotes ``(batch_size, context)``
  de IDs aleatórios, pelos dois caminhos da perda (``LOSS_PATHS``): os *logits* inteiros
  ``(B, T, V)`` com ``F.cross_entropy``, como no cap. 5, e a perda em pedaços de
  ``companion.loss.lm_loss``, que nunca monta esse tensor. Para cada caminho:

  - tokens/s = tokens do lote / mediana do tempo de um passo;
  - MFU (*model FLOPs utilization*) = FLOPs do passo por segundo / o GFLOP/s que as
    multiplicações de matrizes ``float32`` nos formatos do modelo atingem nesta máquina
    (a cabeça de saída, um pedaço ``(256, C) @ (C, V)``, e o *feed-forward*,
    ``(B·T, C) @ (C, 4C)``; vale a mais rápida), medidas aqui mesmo, intercaladas com os
    passos. FLOPs do passo por token: ``6 ·`` parâmetros das multiplicações de matrizes
    ``+ 12 · camadas · T · C`` (a atenção), a conta usual (PaLM, nanoGPT);
  - pico de memória = quanto a memória residente (RSS) do processo subiu, no pico,
    durante um passo, medida por amostragem de ``/proc/self/statm`` (só no Linux;
    ``None`` nos outros sistemas). Inclui tudo o que o passo aloca — ativações, *logits*,
    gradientes, temporários do AdamW —, não os pesos e o estado do AdamW que já existiam;
  - a perda dos mesmos pesos e dados pelos dois caminhos (têm de concordar);

- **geração**: ``gen_tokens`` tokens novos, lote 1, decodificação gulosa, com e sem
  KV cache; tokens/s = tokens novos / mediana do tempo de uma geração.

As medidas dos dois caminhos e a da multiplicação de matrizes são **intercaladas** (uma
de cada por rodada) e resumidas pela mediana, porque numa máquina compartilhada o tempo
de uma única medida varia muito. O capítulo 4 usa estes números para comparar o modelo
do curso com implementações de referência; o apêndice de escala, para mostrar quanto
custam os *logits*.

``run_pretrained_benchmark`` (``python -m companion bench --model gemma3-270m``) mede a
geração gulosa com KV cache de um modelo pré-treinado de verdade, com os pesos reais e
um *prompt* em português (cap. 5).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from companion._checks import check_choice, check_int
from companion.generation import generate
from companion.loss import DEFAULT_CHUNK_SIZE, lm_loss
from companion.model import GPTConfig, GPTModel, count_parameters
from companion.numbers import num
from companion.train import TrainConfig, make_optimizer

__all__ = [
    "LOSS_PATHS",
    "TrainPathResult",
    "BenchResult",
    "median_seconds",
    "train_step",
    "train_flops_per_token",
    "peak_memory_bytes",
    "run_benchmark",
    "PRETRAINED_MODELS",
    "run_pretrained_benchmark",
    "format_table",
]

PROMPT_TOKENS = 8  # tamanho do prompt aleatório da geração
PRETRAINED_MODELS = ("gemma3-270m",)  # modelos que run_pretrained_benchmark carrega
PRETRAINED_PROMPT = "Receita de bolo de cenoura:\nIngredientes:\n"
# Os dois caminhos da perda no treino: os logits inteiros (cap. 5) e a perda em pedaços (companion.loss.lm_loss).
LOSS_PATHS: dict[str, str] = {
    "full": "logits inteiros + F.cross_entropy",
    "chunked": "em pedaços (lm_loss)",
}


@dataclass
class TrainPathResult:
    """O treino por um caminho da perda (``None`` = não medido)."""

    path: str  # "full" ou "chunked" (veja LOSS_PATHS)
    tokens_per_s: float
    mfu: float | None  # fração (0 a 1) do GFLOP/s da multiplicação de matrizes de referência
    peak_memory_bytes: int | None  # quanto a RSS subiu, no pico, durante um passo
    loss: float  # a perda dos pesos iniciais no lote medido (igual nos dois caminhos)


@dataclass
class BenchResult:
    """Resultado de ``run_benchmark`` (tokens por segundo; ``None`` = não medido).

    ``train_tokens_per_s`` é o do caminho que o pacote usa para treinar (``"chunked"``,
    se medido); ``train_paths`` traz cada caminho medido.
    """

    preset: str
    n_params: int
    batch_size: int
    context: int
    threads: int
    train_tokens_per_s: float | None
    gen_tokens: int
    gen_cached_tokens_per_s: float | None
    gen_uncached_tokens_per_s: float | None
    train_paths: dict[str, TrainPathResult] = field(default_factory=dict)
    matmul_gflops: float | None = None  # GFLOP/s float32 das multiplicações de referência (a mais rápida)
    flops_per_token: int | None = None  # FLOPs de um passo de treino por token (6N + atenção)


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
        times.append(_seconds(fn))
    return statistics.median(times)


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_step(
    model: GPTModel, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, path: str = "full"
) -> float:
    """Um passo de treino: *forward*, entropia cruzada, *backward* e passo do otimizador.

    Os gradientes do passo anterior são descartados antes de tudo (``set_to_none``): não
    ocupam memória durante a passada para a frente.

    Args:
        model: o modelo (em modo ``train``).
        optimizer: o otimizador dos parâmetros do modelo.
        x, y: entradas e alvos ``(B, T)``.
        path: ``"full"`` (os *logits* ``(B, T, V)`` inteiros e ``F.cross_entropy``) ou
            ``"chunked"`` (``companion.loss.lm_loss``, sem os *logits* inteiros).

    Returns:
        O valor da perda (antes do passo).
    """
    check_choice("path", path, LOSS_PATHS)
    optimizer.zero_grad(set_to_none=True)
    if path == "full":
        logits = model(x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B*T, V) contra (B*T,)
    else:
        loss = lm_loss(model, x, y)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_flops_per_token(model: nn.Module, context: int) -> int:
    """FLOPs de um passo de treino (ida + volta) por token: ``6 · N + 12 · camadas · T · C``.

    ``N`` são os parâmetros que entram em multiplicações de matrizes (os pesos das
    ``nn.Linear``, a cabeça de saída incluída; não os *embeddings* consultados por
    índice): cada um custa 2 FLOPs por token na ida e 4 na volta. O segundo termo é a
    atenção (``Q·Kᵀ`` e ``pesos·V``), contada sem descontar a máscara causal.
    """
    linear = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)}
    if getattr(model, "out_head", None) is None and hasattr(model, "output_weight"):
        linear[id(model.output_weight)] = model.output_weight.numel()  # cabeça amarrada, sem nn.Linear
    cfg = model.cfg
    return 6 * sum(linear.values()) + 12 * cfg.n_layers * context * cfg.emb_dim


def _rss_bytes() -> int | None:
    """A memória residente (RSS) do processo agora, em bytes (só no Linux; ``None`` nos outros)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _return_free_memory() -> None:
    """Devolve ao sistema a memória livre que o ``malloc`` da glibc guarda (sem ela, a RSS do começo mente)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory_bytes(fn: Callable[[], object], interval: float = 0.001) -> int | None:
    """Quanto a memória residente (RSS) do processo subiu, no pico, enquanto ``fn()`` rodava.

    Uma *thread* lê ``/proc/self/statm`` a cada ``interval`` segundos. Antes, a memória
    livre guardada pelo ``malloc`` é devolvida ao sistema, para que o que ``fn`` reaproveita
    dela também conte. Mede o processo inteiro (tensores, temporários das bibliotecas de
    matrizes, o próprio alocador), não só os tensores.

    Returns:
        Bytes (>= 0), ou ``None`` fora do Linux (aí ``fn`` roda do mesmo jeito).
    """
    _return_free_memory()
    start = _rss_bytes()
    if start is None:
        fn()
        return None
    peak = start
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes() or 0)
            done.wait(interval)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        fn()
    finally:
        done.set()
        watcher.join()
    return max(peak, _rss_bytes() or 0) - start


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
    loss_paths: tuple[str, ...] = tuple(LOSS_PATHS),
) -> BenchResult:
    """Mede o treino e a geração de ``GPTModel(GPTConfig.preset(preset))``.

    Args:
        preset: nome de um *preset* de ``GPTConfig``.
        batch_size: lote do treino.
        context: tokens por sequência no treino (padrão: ``context_length`` do *preset*).
        steps: rodadas medidas (depois de uma de aquecimento) de cada medida; no treino,
            cada rodada dá um passo por caminho da perda e uma multiplicação de referência.
        gen_tokens: tokens novos em cada geração.
        threads: *threads* do PyTorch durante a medida (restaurado no fim).
        train, gen: o que medir.
        seed: semente dos pesos e dos dados aleatórios.
        loss_paths: os caminhos da perda medidos no treino (chaves de ``LOSS_PATHS``).

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
    if train and (isinstance(loss_paths, str) or not loss_paths):
        raise ValueError(f"loss_paths deve ser uma sequência não vazia de {list(LOSS_PATHS)}; recebi {loss_paths!r}.")
    for path in loss_paths:
        check_choice("loss_paths", path, LOSS_PATHS)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = GPTModel(cfg)
        g = torch.Generator().manual_seed(seed)
        train_tps = cached_tps = uncached_tps = probe = flops = None
        paths: dict[str, TrainPathResult] = {}
        if train:
            paths, probe, flops = _measure_training(model, cfg, batch_size, context, steps, g, loss_paths,
                                                   make_optimizer(model, TrainConfig(lr=3e-4, weight_decay=0.1)))
            train_tps = paths["chunked" if "chunked" in paths else loss_paths[0]].tokens_per_s
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
        train_paths=paths,
        matmul_gflops=probe,
        flops_per_token=flops,
    )


def _measure_training(
    model: GPTModel,
    cfg: GPTConfig,
    batch_size: int,
    context: int,
    steps: int,
    g: torch.Generator,
    loss_paths: tuple[str, ...],
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, TrainPathResult], float, int]:
    """Os passos de treino de cada caminho e a multiplicação de referência, intercalados."""
    model.train()
    x = torch.randint(0, cfg.vocab_size, (batch_size, context), generator=g)
    y = torch.randint(0, cfg.vocab_size, (batch_size, context), generator=g)
    with torch.no_grad():  # os mesmos pesos e o mesmo lote pelos dois caminhos, antes de qualquer passo
        losses = {
            "full": lambda: F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item(),
            "chunked": lambda: lm_loss(model, x, y).item(),
        }
        start_loss = {path: losses[path]() for path in loss_paths}
    rows = batch_size * context
    probes = _matmul_probes(rows, cfg.emb_dim, cfg.vocab_size, g)
    steps_of = {path: (lambda path=path: train_step(model, optimizer, x, y, path)) for path in loss_paths}
    for step in steps_of.values():  # aquecimento (e o estado do AdamW, criado no primeiro passo)
        step()
    for probe_fn, _ in probes.values():
        probe_fn()
    times: dict[str, list[float]] = {path: [] for path in loss_paths}
    probe_times: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(steps):  # intercalado: cada rodada mede um passo de cada caminho e as multiplicações
        for name, (probe_fn, _) in probes.items():
            probe_times[name].append(_seconds(probe_fn))
        for path, step in steps_of.items():
            times[path].append(_seconds(step))
    probe = max(flop / statistics.median(probe_times[name]) / 1e9 for name, (_, flop) in probes.items())
    del probes
    flops = train_flops_per_token(model, context)
    results = {}
    for path, step in steps_of.items():
        tokens_per_s = rows / statistics.median(times[path])
        results[path] = TrainPathResult(
            path=path,
            tokens_per_s=tokens_per_s,
            mfu=flops * tokens_per_s / (probe * 1e9),
            peak_memory_bytes=peak_memory_bytes(step),
            loss=start_loss[path],
        )
    return results, probe, flops


def _matmul_probes(rows: int, C: int, V: int, g: torch.Generator) -> dict[str, tuple[Callable[[], object], int]]:
    """As multiplicações de referência do MFU, nos formatos do modelo, com a saída já alocada.

    - a cabeça de saída, um pedaço de ``DEFAULT_CHUNK_SIZE`` posições: ``(n, C) @ (C, V)``,
      com a matriz guardada ``(V, C)``, como no modelo;
    - a primeira camada do *feed-forward*: ``(B·T, C) @ (C, 4C)``.

    O pico do MFU é a mais rápida das duas (mediana de cada).
    """
    n = min(rows, DEFAULT_CHUNK_SIZE)
    h, weight, logits = torch.randn(n, C, generator=g), torch.randn(V, C, generator=g), torch.empty(n, V)
    x, fc1, hidden = torch.randn(rows, C, generator=g), torch.randn(C, 4 * C, generator=g), torch.empty(rows, 4 * C)
    return {
        "cabeça": (lambda: torch.mm(h, weight.t(), out=logits), 2 * n * C * V),
        "feed-forward": (lambda: torch.mm(x, fc1, out=hidden), 2 * rows * C * 4 * C),
    }


def run_pretrained_benchmark(
    model_name: str = "gemma3-270m",
    gen_tokens: int = 64,
    steps: int = 3,
    threads: int = 1,
    lora_batch: int | None = 8,
    lora_context: int = 128,
    loss_paths: tuple[str, ...] = ("chunked",),
) -> BenchResult:
    """Mede a geração gulosa com KV cache de um modelo pré-treinado (lote 1, ``float32``) e
    um passo de ajuste fino com LoRA (o do cap. 6).

    O *prompt* é ``PRETRAINED_PROMPT`` (com ``<bos>``); a geração não para no fim de texto,
    para que cada medida tenha sempre ``gen_tokens`` tokens novos. O tempo inclui tudo o
    que ``generate`` faz a cada chamada (o *prompt*, o cache, a escolha de cada token).

    Args:
        model_name: um de ``PRETRAINED_MODELS``.
        gen_tokens: tokens novos em cada geração.
        steps: repetições medidas (depois de uma de aquecimento).
        threads: *threads* do PyTorch durante a medida (restaurado no fim).
        lora_batch: exemplos do lote do passo com LoRA (``None`` = não mede o treino). O
            passo é o do cap. 6: LoRA ``r = 8`` nas sete projeções de cada bloco, todas as
            posições com alvo (o pior caso), AdamW nos parâmetros da LoRA.
        lora_context: tokens por exemplo no passo com LoRA.
        loss_paths: caminhos da perda medidos no passo (``"chunked"``, o do pacote, e/ou
            ``"full"``, os *logits* ``(B, T, V)`` inteiros).

    Returns:
        Um ``BenchResult`` com ``gen_cached_tokens_per_s`` e, com ``lora_batch``,
        ``train_paths`` (tokens/s, pico de memória e perda de cada caminho; sem MFU).

    Raises:
        ValueError: modelo desconhecido ou valores fora do permitido.
        FileNotFoundError: os pesos do modelo não estão instalados (a mensagem diz como instalar).
    """
    check_choice("model_name", model_name, PRETRAINED_MODELS)
    for name, value in (("gen_tokens", gen_tokens), ("steps", steps), ("threads", threads),
                        ("lora_context", lora_context)):
        check_int(name, value, 1)
    if lora_batch is not None:
        check_int("lora_batch", lora_batch, 1)
    for path in loss_paths:
        check_choice("loss_paths", path, LOSS_PATHS)
    from companion.pretrained import load_gemma3

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model, tokenizer = load_gemma3()
        prompt = torch.tensor([tokenizer.encode(PRETRAINED_PROMPT, bos=True)])  # (1, T)
        seconds = median_seconds(lambda: generate(model, prompt, gen_tokens), steps)
        paths = {} if lora_batch is None else _measure_lora_step(model, lora_batch, lora_context, steps, loss_paths)
    finally:
        torch.set_num_threads(old_threads)
    train = paths.get("chunked") or next(iter(paths.values()), None)
    return BenchResult(
        preset=model_name,
        n_params=count_parameters(model),
        batch_size=lora_batch or 1,
        context=lora_context if lora_batch else prompt.shape[1],
        threads=threads,
        train_tokens_per_s=None if train is None else train.tokens_per_s,
        gen_tokens=gen_tokens,
        gen_cached_tokens_per_s=gen_tokens / seconds,
        gen_uncached_tokens_per_s=None,
        train_paths=paths,
    )


def _measure_lora_step(
    model: nn.Module, batch_size: int, context: int, steps: int, loss_paths: tuple[str, ...]
) -> dict[str, TrainPathResult]:
    """Passos de ajuste com LoRA (r = 8 nas sete projeções) num lote aleatório, por caminho da perda."""
    from companion.lora import apply_lora

    apply_lora(model, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), 8, 16.0)
    model.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.cfg.vocab_size, (batch_size, context), generator=g)
    y = torch.randint(0, model.cfg.vocab_size, (batch_size, context), generator=g)
    trainable = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in trainable]
    results = {}
    for path in loss_paths:
        # cada caminho parte da mesma LoRA e de um AdamW novo: a perda do 1º passo tem de ser a mesma
        with torch.no_grad():
            for p, p0 in zip(trainable, start):
                p.copy_(p0)
        optimizer = torch.optim.AdamW(trainable, lr=1e-4)
        step = lambda path=path, optimizer=optimizer: train_step(model, optimizer, x, y, path)  # noqa: E731
        loss = step()  # aquecimento (e o estado do AdamW)
        memory = peak_memory_bytes(step)
        seconds = median_seconds(step, steps, warmup=0)
        results[path] = TrainPathResult(path=path, tokens_per_s=batch_size * context / seconds, mfu=None,
                                        peak_memory_bytes=memory, loss=loss)
    return results


def _fmt(value: float | None, digits: int = 1) -> str:
    """Número à brasileira (1.234,5); ``—`` quando não medido."""
    return "—" if value is None else num(value, digits)


def format_table(result: BenchResult) -> str:
    """As tabelas que o comando imprime (Markdown, para colar no livro ou numa *issue*)."""
    r = result
    head = (
        f"preset {r.preset} ({_fmt(r.n_params / 1e6)} M parâmetros), {r.threads} thread(s), float32\n\n"
        "| medida | tokens/s |\n|---|---:|\n"
    )
    rows = [
        (f"treino (lote {r.batch_size} x {r.context}, forward + perda + backward + AdamW)", r.train_tokens_per_s),
        (f"geração com KV cache (lote 1, {r.gen_tokens} tokens)", r.gen_cached_tokens_per_s),
        (f"geração sem KV cache (lote 1, {r.gen_tokens} tokens)", r.gen_uncached_tokens_per_s),
    ]
    table = head + "\n".join(f"| {name} | {_fmt(value)} |" for name, value in rows)
    if r.gen_cached_tokens_per_s and r.gen_uncached_tokens_per_s:
        speedup = r.gen_cached_tokens_per_s / r.gen_uncached_tokens_per_s
        table += f"\n\nO KV cache deixou a geração {_fmt(speedup)}x mais rápida."
    if r.train_paths:
        table += (
            "\n\n| perda no treino | tokens/s | MFU | pico de memória do passo | perda |\n"
            "|---|---:|---:|---:|---:|\n"
        )
        for path, p in r.train_paths.items():
            memory = "—" if p.peak_memory_bytes is None else f"{_fmt(p.peak_memory_bytes / 1e6, 0)} MB"
            mfu = "—" if p.mfu is None else f"{_fmt(100 * p.mfu)}%"
            table += f"| {LOSS_PATHS[path]} | {_fmt(p.tokens_per_s)} | {mfu} | {memory} | {_fmt(p.loss, 4)} |\n"
        if r.flops_per_token is not None and r.matmul_gflops is not None:
            table += (
                f"\nMFU: FLOPs do passo ({_fmt(r.flops_per_token / 1e6)} MFLOP por token: 6 × parâmetros das "
                f"matrizes + atenção) por segundo, sobre os {_fmt(r.matmul_gflops)} GFLOP/s da mais rápida de duas "
                "multiplicações float32 nos formatos do modelo (a cabeça de saída em pedaços e o feed-forward), "
                "medidas junto. "
            )
        else:
            table += f"\nPasso de ajuste fino com LoRA (r = 8 nas sete projeções), lote {r.batch_size} x {r.context}. "
        table += "Pico de memória: quanto a memória residente do processo subiu durante um passo."
        if "full" in r.train_paths and "chunked" in r.train_paths:
            full, chunked = r.train_paths["full"], r.train_paths["chunked"]
            table += f"\nA perda em pedaços treinou {_fmt(chunked.tokens_per_s / full.tokens_per_s, 2)}x mais rápido"
            if full.peak_memory_bytes is not None and chunked.peak_memory_bytes is not None:
                saved = (full.peak_memory_bytes - chunked.peak_memory_bytes) / 1e6
                table += f" e usou {_fmt(saved, 0)} MB a menos de memória"
            table += "."
    return table

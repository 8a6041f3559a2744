"""Pré-treinamento: a função de perda, a avaliação e o laço de treino (cap. 5).

O capítulo 5 constrói, nesta ordem:

1. ``cross_entropy_by_hand`` — a entropia cruzada passo a passo (*softmax* em log,
   a probabilidade do token certo, a média dos negativos), conferida com
   ``torch.nn.functional.cross_entropy``; ``perplexity`` — ``exp(perda)``;
2. ``calc_loss_batch`` e ``calc_loss_loader`` — a perda de um lote e a média de um
   carregador inteiro (ou das primeiras ``num_batches``);
3. ``TrainConfig`` e ``lr_at`` — os hiperparâmetros do treino e a taxa de aprendizado
   com aquecimento linear (*warmup*) e decaimento em cosseno;
4. ``train`` — o laço: lotes sorteados de forma reprodutível, acumulação de
   gradientes, *autocast* em bf16 opcional, corte da norma do gradiente, AdamW,
   avaliação periódica com histórico de treino/validação e barra de progresso
   (``tqdm.auto``). Funciona também com vários processos (``torchrun``, DDP);
5. o comando ``python -m companion train`` (``add_command``), que pré-treina num
   arquivo de texto qualquer e grava ``PASTA/checkpoint.safetensors``; com
   ``--resume`` ele continua **exatamente** de onde parou.

**Reprodutibilidade exata.** Tudo o que é aleatório no treino é função de
``(seed, passo)``: o lote do passo ``s`` sai de uma permutação das janelas semeada pela
época, e o gerador global (o do *dropout*) é ressemeado no início de cada passo com
``(seed, rank, passo)``. Por isso retomar do passo 10 dá, tensor por tensor, o mesmo
resultado que treinar 20 passos direto — só é preciso guardar os pesos, o estado do
AdamW e o número do passo.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "cross_entropy_by_hand",
    "perplexity",
    "calc_loss_batch",
    "calc_loss_loader",
    "evaluate",
    "TrainConfig",
    "lr_at",
    "make_optimizer",
    "batch_indices",
    "split_datasets",
    "train",
    "add_command",
]


# ----------------------------------------------------------------------------- a perda
def cross_entropy_by_hand(logits: Tensor, targets: Tensor) -> Tensor:
    """Entropia cruzada média, escrita passo a passo (cap. 5).

    Para cada posição: transforma os *logits* em log-probabilidades (``log_softmax``),
    pega a do token certo e troca o sinal; a perda é a média sobre todas as posições::

        perda = -média( log softmax(logits)[alvo] )

    Args:
        logits: ``(B, T, V)`` ou ``(N, V)``.
        targets: ``(B, T)`` ou ``(N,)``, IDs inteiros em ``[0, V)``.

    Returns:
        Um escalar (tensor 0-D). Igual a ``F.cross_entropy(logits.flatten(0, 1), targets.flatten())``.

    Raises:
        ValueError: formatos incompatíveis.
    """
    if logits.dim() < 2 or tuple(logits.shape[:-1]) != tuple(targets.shape):
        raise ValueError(
            "logits deve ter formato (..., V) e targets o mesmo formato sem o V; recebi "
            f"logits {tuple(logits.shape)} e targets {tuple(targets.shape)}."
        )
    V = logits.shape[-1]
    flat = logits.reshape(-1, V).float()  # (N, V)
    # log softmax = logit - log(soma das exponenciais); logsumexp evita estouro numérico
    log_probs = flat - torch.logsumexp(flat, dim=-1, keepdim=True)  # (N, V)
    target_log_probs = log_probs.gather(-1, targets.reshape(-1, 1)).squeeze(-1)  # (N,)
    return -target_log_probs.mean()


def perplexity(loss: float | Tensor) -> float:
    """Perplexidade: ``exp(perda)`` — "entre quantos tokens o modelo hesita", em média.

    Um modelo que sorteia uniformemente entre ``V`` tokens tem perda ``log V`` e
    perplexidade ``V``.

    Args:
        loss: a entropia cruzada média, em *nats* (número ou tensor escalar).

    Returns:
        ``math.exp(loss)`` como ``float``.
    """
    value = float(loss)
    if math.isnan(value):
        raise ValueError("a perda é NaN: o treino divergiu (tente uma taxa de aprendizado menor).")
    return math.exp(value)


def calc_loss_batch(input_batch: Tensor, target_batch: Tensor, model: nn.Module, device: torch.device | str) -> Tensor:
    """Perda de um lote: a entropia cruzada dos *logits* do modelo contra os alvos (cap. 5).

    Args:
        input_batch: IDs ``(B, T)``.
        target_batch: IDs ``(B, T)`` — a entrada deslocada um token.
        model: o GPT.
        device: onde fazer a conta.

    Returns:
        Escalar com gradiente (se o modelo tiver parâmetros treináveis e o gradiente estiver ligado).
    """
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), target_batch.flatten())  # (B*T, V) contra (B*T,)


@torch.no_grad()
def calc_loss_loader(
    data_loader: Iterable[tuple[Tensor, Tensor]],
    model: nn.Module,
    device: torch.device | str,
    num_batches: int | None = None,
) -> float:
    """Perda média de um carregador (ou das primeiras ``num_batches`` lotes), sem gradiente.

    Não muda o modo do modelo: chame ``model.eval()`` antes para desligar o *dropout*
    (``evaluate`` faz isso por você).

    Args:
        data_loader: qualquer iterável de pares ``(entrada, alvo)`` ``(B, T)``.
        model: o GPT.
        device: onde fazer a conta.
        num_batches: quantos lotes usar (``None`` = todos).

    Returns:
        A média das perdas dos lotes (``float``).

    Raises:
        ValueError: carregador vazio ou ``num_batches`` < 1.
    """
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1):
        raise ValueError(f"num_batches deve ser None ou um inteiro >= 1; recebi {num_batches!r}.")
    total, count = 0.0, 0
    for input_batch, target_batch in data_loader:
        if num_batches is not None and count >= num_batches:
            break
        total += calc_loss_batch(input_batch, target_batch, model, device).item()
        count += 1
    if count == 0:
        raise ValueError("o carregador não tem nenhum lote: o texto é curto demais para o contexto e o lote escolhidos.")
    return total / count


def _eval_batches(dataset: Any, batch_size: int, max_batches: int) -> Iterable[tuple[Tensor, Tensor]]:
    """Lotes fixos (sempre os mesmos) de janelas espalhadas por todo o conjunto de dados."""
    n = len(dataset)
    k = min(n, batch_size * max_batches)
    indices = torch.linspace(0, n - 1, k).round().long().tolist()
    for start in range(0, k, batch_size):
        pairs = [dataset[i] for i in indices[start : start + batch_size]]
        yield torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def evaluate(
    model: nn.Module,
    dataset: Any,
    batch_size: int = 8,
    max_batches: int = 10,
    device: torch.device | str | None = None,
    bf16: bool = False,
) -> float:
    """Perda média em janelas fixas do conjunto, com o modelo em modo ``eval`` (sem *dropout*).

    Usa até ``batch_size * max_batches`` janelas espalhadas uniformemente pelo conjunto
    (sempre as mesmas: duas avaliações do mesmo modelo dão o mesmo número). O modo do
    modelo é restaurado no fim.

    Args:
        model: o GPT.
        dataset: um ``GPTDataset`` (ou qualquer sequência de pares ``(entrada, alvo)``).
        batch_size: janelas por lote.
        max_batches: no máximo quantos lotes.
        device: onde fazer a conta (padrão: o dos parâmetros do modelo).
        bf16: usa *autocast* em bf16, como no treino.

    Returns:
        A perda média (``float``).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return calc_loss_loader(_eval_batches(dataset, batch_size, max_batches), model, device)
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- configuração
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class TrainConfig:
    """Hiperparâmetros do treino (cap. 5).

    Args:
        steps: passos de otimização (atualizações dos pesos) no total.
        batch_size: janelas por lote em CADA processo e em cada micro-passo.
        lr: taxa de aprendizado máxima (atingida no fim do aquecimento).
        min_lr: taxa no fim do decaimento em cosseno (padrão: ``lr / 10``).
        warmup_steps: passos de aquecimento linear, de ``lr / warmup_steps`` até ``lr``.
        decay_steps: passo em que o cosseno chega a ``min_lr`` (padrão: ``steps``). Para
            treinar em partes (``--resume``), fixe-o no total desde a primeira parte.
        weight_decay: decaimento de peso do AdamW (só nas matrizes, não em vieses e normas).
        grad_clip: norma máxima do gradiente (``None`` = não corta).
        grad_accum_steps: micro-lotes somados antes de cada atualização; o lote efetivo é
            ``batch_size * grad_accum_steps * processos``.
        eval_interval: avalia a cada tantos passos (e sempre no último).
        eval_batches: lotes usados em cada avaliação, de treino e de validação.
        bf16: *autocast* em bfloat16 (mais rápido em CPUs com AVX-512 bf16 e em GPUs).
        seed: semente do sorteio dos lotes e do *dropout*.

    Raises:
        ValueError: valores fora do permitido (a mensagem diz qual e o que é aceito).
    """

    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    min_lr: float | None = None
    warmup_steps: int = 10
    decay_steps: int | None = None
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    eval_interval: int = 50
    eval_batches: int = 10
    bf16: bool = False
    seed: int = 123

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum_steps", "eval_interval", "eval_batches"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"TrainConfig: {name} deve ser um inteiro >= 1; recebi {value!r}.")
        for name in ("warmup_steps", "seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"TrainConfig: {name} deve ser um inteiro >= 0; recebi {value!r}.")
        if not _is_number(self.lr) or self.lr <= 0:
            raise ValueError(f"TrainConfig: lr deve ser um número > 0; recebi {self.lr!r}.")
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        if not _is_number(self.min_lr) or not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"TrainConfig: min_lr deve ser um número em [0, lr={self.lr}]; recebi {self.min_lr!r}.")
        if self.decay_steps is None:
            self.decay_steps = self.steps
        if not _is_int(self.decay_steps) or self.decay_steps < 1:
            raise ValueError(f"TrainConfig: decay_steps deve ser None ou um inteiro >= 1; recebi {self.decay_steps!r}.")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"TrainConfig: weight_decay deve ser um número >= 0; recebi {self.weight_decay!r}.")
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip <= 0):
            raise ValueError(f"TrainConfig: grad_clip deve ser None ou um número > 0; recebi {self.grad_clip!r}.")
        if not isinstance(self.bf16, bool):
            raise ValueError(f"TrainConfig: bf16 deve ser True ou False; recebi {self.bf16!r}.")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Taxa de aprendizado do passo ``step`` (contado a partir de 0): aquecimento + cosseno.

    - ``step < warmup_steps``: sobe em linha reta, ``lr * (step + 1) / warmup_steps``;
    - depois: desce de ``lr`` até ``min_lr`` em meio cosseno, chegando lá em ``decay_steps``;
    - depois de ``decay_steps``: fica em ``min_lr``.

    Args:
        step: o passo (>= 0).
        cfg: a configuração do treino.

    Returns:
        A taxa de aprendizado (``float``).
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.decay_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW com decaimento de peso só nas matrizes (pesos de ``Linear`` e *embeddings*).

    Vieses e os parâmetros das normalizações (vetores 1-D) não sofrem decaimento: puxá-los
    para zero não regulariza nada e atrapalha. Pesos compartilhados entram uma vez só.

    Args:
        model: o modelo.
        cfg: a configuração (usa ``lr`` e ``weight_decay``).

    Returns:
        Um ``torch.optim.AdamW`` com dois grupos de parâmetros.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


# ----------------------------------------------------------------------------- os lotes
class _Permutations:
    """Guarda a permutação das janelas da época corrente (refeita só quando a época muda)."""

    def __init__(self, n_windows: int, seed: int) -> None:
        self.n_windows, self.seed = n_windows, seed
        self.epoch, self.order = -1, torch.empty(0, dtype=torch.long)

    def get(self, epoch: int) -> Tensor:
        if epoch != self.epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self.epoch, self.order = epoch, torch.randperm(self.n_windows, generator=generator)
        return self.order


def batch_indices(n_windows: int, batch_size: int, seed: int, counter: int, _cache: _Permutations | None = None) -> Tensor:
    """As janelas do lote número ``counter`` de um fluxo infinito e reprodutível de lotes.

    Cada época é uma permutação das ``n_windows`` janelas, sorteada com uma semente que
    depende só de ``(seed, época)``; a época é cortada em ``n_windows // batch_size``
    lotes (as que sobram ficam para outra época). O lote ``counter`` é, portanto,
    uma função pura de ``(seed, counter)`` — é isso que torna a retomada exata.

    Com vários processos, o laço usa ``counter = (passo * acumulação + micro) * P + rank``:
    os processos se revezam nos lotes do mesmo fluxo, sem repetir nenhum.

    Args:
        n_windows: quantas janelas há.
        batch_size: janelas por lote (``<= n_windows``).
        seed: a semente.
        counter: o número do lote (>= 0).

    Returns:
        Índices ``(batch_size,)`` das janelas.
    """
    if batch_size > n_windows:
        raise ValueError(
            f"batch_size={batch_size} é maior que o número de janelas ({n_windows}): use um lote menor, "
            "um contexto menor ou um texto maior."
        )
    per_epoch = n_windows // batch_size
    epoch, position = divmod(counter, per_epoch)
    order = (_cache or _Permutations(n_windows, seed)).get(epoch)
    return order[position * batch_size : (position + 1) * batch_size]


def _dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` do processo; ``(0, 1)`` sem ``torch.distributed``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _step_seed(seed: int, rank: int, step: int) -> int:
    """Semente do gerador global no passo ``step`` (diferente em cada processo)."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63)


def new_history() -> dict[str, list]:
    """Um histórico de treino vazio (o formato que ``train`` preenche)."""
    return {"step": [], "tokens_seen": [], "train_loss": [], "val_loss": [], "step_loss": [], "lr": [], "grad_norm": []}


# ----------------------------------------------------------------------------- o laço
def train(
    model: nn.Module,
    train_data: Any,
    val_data: Any | None,
    cfg: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    start_step: int = 0,
    history: dict[str, list] | None = None,
    progress: bool = True,
    verbose: bool = True,
    on_eval: Callable[[int, dict[str, list]], None] | None = None,
) -> dict[str, list]:
    """Pré-treina ``model`` por ``cfg.steps - start_step`` passos (cap. 5).

    A cada passo: para cada um dos ``grad_accum_steps`` micro-lotes, calcula a perda
    (com *autocast* em bf16 se pedido), divide pelo número de micro-lotes e faz a
    retropropagação (somando os gradientes); depois corta a norma do gradiente, ajusta a
    taxa de aprendizado (``lr_at``) e dá um passo do AdamW. A cada ``eval_interval``
    passos (e no último), mede a perda em janelas fixas de treino e de validação.

    Com ``torch.distributed`` iniciado (``torchrun``), o modelo é embrulhado em
    ``DistributedDataParallel``: cada processo treina com lotes diferentes do mesmo
    fluxo e os gradientes são promediados entre eles. Só o processo 0 avalia, imprime
    e chama ``on_eval``.

    O estado aleatório global do chamador é preservado (``torch.random.fork_rng``).

    Args:
        model: o GPT, já no *device* em que vai treinar.
        train_data: um ``GPTDataset`` (ou sequência de pares ``(entrada, alvo)``) de treino.
        val_data: o de validação, ou ``None``.
        cfg: a configuração do treino.
        optimizer: o otimizador (padrão: ``make_optimizer(model, cfg)``). Passe o seu
            para continuar um treino (com o estado carregado de um *checkpoint*).
        start_step: o passo de onde começar (o de um *checkpoint*).
        history: o histórico a continuar (padrão: um novo). É atualizado no lugar.
        progress: mostra uma barra de progresso (``tqdm.auto``).
        verbose: imprime uma linha a cada avaliação.
        on_eval: função chamada como ``on_eval(passo, histórico)`` depois de cada
            avaliação (o comando ``train`` grava o *checkpoint* aqui).

    Returns:
        O histórico: ``step``, ``tokens_seen``, ``train_loss``, ``val_loss`` (um valor por
        avaliação) e ``step_loss``, ``lr``, ``grad_norm`` (um valor por passo).

    Raises:
        ValueError: ``start_step`` fora de ``[0, cfg.steps]`` ou dados pequenos demais.
    """
    from tqdm.auto import tqdm

    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg deve ser um TrainConfig; recebi {type(cfg).__name__}.")
    if not _is_int(start_step) or not 0 <= start_step <= cfg.steps:
        raise ValueError(f"start_step deve ser um inteiro em [0, steps={cfg.steps}]; recebi {start_step!r}.")
    history = new_history() if history is None else history
    optimizer = make_optimizer(model, cfg) if optimizer is None else optimizer
    device = next(model.parameters()).device
    rank, world = _dist_info()
    permutations = _Permutations(len(train_data), cfg.seed)
    batch_indices(len(train_data), cfg.batch_size, cfg.seed, 0, permutations)  # confere o tamanho já

    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    tokens_per_step = cfg.batch_size * len(train_data[0][0]) * cfg.grad_accum_steps * world

    def run_eval(step: int) -> None:
        train_loss = evaluate(model, train_data, cfg.batch_size, cfg.eval_batches, device, cfg.bf16)
        val_loss = evaluate(model, val_data, cfg.batch_size, cfg.eval_batches, device, cfg.bf16) if val_data else float("nan")
        history["step"].append(step)
        history["tokens_seen"].append(step * tokens_per_step)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        if verbose:
            message = f"passo {step:>5} | perda de treino {train_loss:.3f} | perda de validação {val_loss:.3f}"
            (bar.write if progress else print)(message)
        if on_eval is not None:
            on_eval(step, history)

    devices = [device] if device.type == "cuda" else []
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not progress or rank != 0, desc="treino", unit="passo")
    model.train()
    with torch.random.fork_rng(devices=devices):
        if start_step == 0 and rank == 0:
            run_eval(0)
        for step in range(start_step, cfg.steps):
            torch.manual_seed(_step_seed(cfg.seed, rank, step))
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=device)
            for micro in range(cfg.grad_accum_steps):
                counter = (step * cfg.grad_accum_steps + micro) * world + rank
                idx = batch_indices(len(train_data), cfg.batch_size, cfg.seed, counter, permutations).tolist()
                pairs = [train_data[i] for i in idx]
                inputs = torch.stack([p[0] for p in pairs])  # (B, T)
                targets = torch.stack([p[1] for p in pairs])  # (B, T)
                last = micro == cfg.grad_accum_steps - 1
                # No DDP, só o último micro-lote sincroniza os gradientes entre os processos.
                sync = contextlib.nullcontext() if last or world == 1 else net.no_sync()
                with sync:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                        loss = calc_loss_batch(inputs, targets, net, device)
                    (loss / cfg.grad_accum_steps).backward()
                step_loss += loss.detach() / cfg.grad_accum_steps
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(step_loss)
                step_loss /= world
            if cfg.grad_clip is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            else:
                grad_norm = float(torch.linalg.vector_norm(
                    torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])
                ))
            optimizer.step()
            history["step_loss"].append(float(step_loss))
            history["lr"].append(lr)
            history["grad_norm"].append(grad_norm)
            bar.update(1)
            bar.set_postfix(perda=f"{float(step_loss):.3f}", refresh=False)
            done = step + 1
            if rank == 0 and (done % cfg.eval_interval == 0 or done == cfg.steps):
                run_eval(done)
    bar.close()
    return history


# ----------------------------------------------------------------------------- linha de comando
CHECKPOINT_NAME = "checkpoint.safetensors"
CONFIG_NAME = "config.json"
HISTORY_NAME = "history.json"
TOKENIZER_NAME = "tokenizer.json"

# Opções que podem mudar ao retomar um treino (as outras mudariam o resultado).
_RESUMABLE = {"steps", "eval_interval", "eval_batches"}


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"arquivo de texto não encontrado: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} não é um texto UTF-8 válido ({error}); converta-o para UTF-8.") from error
    if not text.strip():
        raise ValueError(f"{path} está vazio: não há o que aprender.")
    return text


def load_run_tokenizer(spec: dict[str, Any], folder: Path):
    """O tokenizador de um treino, como ``tiktoken.Encoding`` (``encode``/``decode``/``n_vocab``).

    Args:
        spec: ``{"kind": "gpt2"}`` ou ``{"kind": "bpe", "file": "tokenizer.json"}`` (de ``config.json``).
        folder: a pasta do treino (onde está o ``tokenizer.json`` do BPE).

    Returns:
        Um ``tiktoken.Encoding``.

    Raises:
        ValueError: tipo de tokenizador desconhecido.
    """
    from companion.tokenizers import BPETokenizer, gpt2_tokenizer

    kind = spec.get("kind")
    if kind == "gpt2":
        return gpt2_tokenizer()
    if kind == "bpe":
        return BPETokenizer.load(folder / spec.get("file", TOKENIZER_NAME)).to_tiktoken()
    raise ValueError(f"tokenizador desconhecido {kind!r}: os válidos são 'gpt2' e 'bpe'.")


def split_datasets(text: str, tokenizer: Any, val_fraction: float, context_length: int) -> tuple[Any, Any]:
    """Tokeniza ``text`` e separa o final para validação: ``(treino, validação)`` em janelas.

    Os primeiros ``1 - val_fraction`` dos tokens viram o conjunto de treino; o resto, o de
    validação. Cada um é um ``GPTDataset`` de janelas de ``context_length`` tokens sem
    sobreposição. É a divisão que o comando ``train`` usa (e que o capítulo refaz para
    conferir os artefatos).

    Args:
        text: o texto inteiro.
        tokenizer: com ``encode(texto, allowed_special="all")`` (um ``tiktoken.Encoding``).
        val_fraction: fração final do texto para validação, em ``(0, 1)``.
        context_length: tokens por janela.

    Returns:
        ``(train_data, val_data)``, dois ``GPTDataset``.

    Raises:
        ValueError: ``val_fraction`` fora de ``(0, 1)`` ou uma das partes curta demais.
    """
    from companion.data import GPTDataset

    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction deve estar em (0, 1); recebi {val_fraction!r}.")
    ids = torch.tensor(tokenizer.encode(text, allowed_special="all"), dtype=torch.long)  # (N,)
    n_train = int(len(ids) * (1 - val_fraction))
    if min(n_train, len(ids) - n_train) < context_length + 1:
        raise ValueError(
            f"texto curto demais para o contexto {context_length}: a parte de treino tem {n_train} tokens "
            f"e a de validação {len(ids) - n_train} (cada uma precisa de ao menos {context_length + 1}). "
            "Use um texto maior, um contexto menor ou outra fração de validação."
        )
    return GPTDataset(ids[:n_train], max_length=context_length), GPTDataset(ids[n_train:], max_length=context_length)


def _setup_distributed() -> tuple[int, int, torch.device]:
    """Inicia o ``torch.distributed`` se o processo veio do ``torchrun`` (gloo na CPU, NCCL na GPU)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local_rank)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def _resolve_train_config(args: argparse.Namespace, stored: dict[str, Any] | None) -> TrainConfig:
    """Junta as opções da linha de comando com as do treino anterior (ao retomar)."""
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    if stored is None:
        return TrainConfig(**given)
    for name, value in given.items():
        if name not in _RESUMABLE and value != stored.get(name):
            raise ValueError(
                f"--{name.replace('_', '-')} {value} difere do treino que você quer retomar "
                f"({stored.get(name)}); ao retomar só podem mudar: "
                f"{', '.join('--' + n.replace('_', '-') for n in sorted(_RESUMABLE))}. "
                "Para mudar o resto, comece um treino novo em outra pasta."
            )
    return TrainConfig(**{**stored, **given})


def _run_train(args: argparse.Namespace) -> int:
    from companion.checkpoint import atomic_write_json, load_checkpoint, read_checkpoint_metadata, save_checkpoint
    from companion.model import GPTConfig, GPTModel
    from companion.tokenizers import BPETokenizer

    rank, world, device = _setup_distributed()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        out = Path(args.out)
        checkpoint_path = out / CHECKPOINT_NAME
        data_path = Path(args.data)
        text = _read_text(data_path)
        data_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()

        stored: dict[str, Any] | None = None
        if args.resume:
            if not checkpoint_path.is_file():
                raise FileNotFoundError(f"--resume: não há {CHECKPOINT_NAME} em {out} para continuar.")
            stored = read_checkpoint_metadata(checkpoint_path)["state"]["run"]
            if stored["data"]["sha256"] != data_sha256:
                raise ValueError(
                    f"--resume: {data_path} não é o mesmo texto do treino em {out} (o sha256 mudou); "
                    "retomar com outros dados não seria o mesmo treino. Comece em outra pasta."
                )
            for option in ("preset", "tokenizer", "vocab_size", "context", "drop_rate", "val_fraction"):
                value = getattr(args, option)
                if value is not None and value != stored["options"][option]:
                    raise ValueError(
                        f"--{option.replace('_', '-')} {value} difere do treino em {out} "
                        f"({stored['options'][option]}); ao retomar, use as mesmas opções."
                    )
            options = dict(stored["options"])
        else:
            if checkpoint_path.exists():
                raise FileExistsError(
                    f"já existe um checkpoint em {out}: use --resume para continuar o treino, "
                    "ou escolha outra pasta com --out."
                )
            if args.preset is None:
                raise ValueError("escolha a arquitetura com --preset (por exemplo curso-mini).")
            options = {
                "preset": args.preset,
                "tokenizer": args.tokenizer or "gpt2",
                "vocab_size": args.vocab_size if args.vocab_size is not None else 1024,
                "context": args.context,
                "drop_rate": args.drop_rate,
                "val_fraction": args.val_fraction if args.val_fraction is not None else 0.1,
            }
            if not 0.0 < options["val_fraction"] < 1.0:
                raise ValueError(f"--val-fraction deve estar em (0, 1); recebi {options['val_fraction']}.")
        train_cfg = _resolve_train_config(args, None if stored is None else stored["train"])

        # O tokenizador: o do GPT-2 ou um BPE treinado nos dados (cada processo treina o mesmo).
        if options["tokenizer"] == "bpe":
            tokenizer_spec = {"kind": "bpe", "file": TOKENIZER_NAME}
            if stored is None:
                out.mkdir(parents=True, exist_ok=True)
                bpe = BPETokenizer().train(text, options["vocab_size"])
                if rank == 0:
                    bpe.save(out / TOKENIZER_NAME)
                tokenizer = bpe.to_tiktoken()
            else:
                tokenizer = load_run_tokenizer(tokenizer_spec, out)
        else:
            tokenizer_spec = {"kind": "gpt2"}
            tokenizer = load_run_tokenizer(tokenizer_spec, out)

        overrides: dict[str, Any] = {"vocab_size": tokenizer.n_vocab}
        if options["context"] is not None:
            overrides["context_length"] = options["context"]
        if options["drop_rate"] is not None:
            overrides["drop_rate"] = options["drop_rate"]
        model_cfg = GPTConfig.preset(options["preset"], **overrides)

        ctx = model_cfg.context_length
        try:
            train_data, val_data = split_datasets(text, tokenizer, options["val_fraction"], ctx)
        except ValueError as error:
            raise ValueError(f"{data_path.name}: {error}") from error
        n_train, n_val = len(train_data.token_ids), len(val_data.token_ids)

        torch.manual_seed(train_cfg.seed)  # os mesmos pesos iniciais em todos os processos
        model = GPTModel(model_cfg).to(device)
        optimizer = make_optimizer(model, train_cfg)
        start_step, history = 0, new_history()
        if stored is not None:
            state = load_checkpoint(checkpoint_path, model, optimizer)
            start_step, history = int(state["step"]), state["history"]
        run = {
            "options": options,
            "train": dataclasses.asdict(train_cfg),
            "model": dataclasses.asdict(model_cfg),
            "tokenizer": tokenizer_spec,
            "data": {"file": data_path.name, "sha256": data_sha256, "train_tokens": n_train,
                     "val_tokens": n_val},
        }
        say = print if rank == 0 else (lambda *a, **k: None)
        n_params = sum(p.numel() for p in model.parameters())
        say(
            f"treino: {data_path.name} ({n_train + n_val:,} tokens; {n_train:,} de treino) | preset {options['preset']} "
            f"({n_params:,} parâmetros) | {world} processo(s) | passos {start_step} -> {train_cfg.steps}".replace(",", ".")
        )

        def write_all(step: int, hist: dict[str, list]) -> None:
            out.mkdir(parents=True, exist_ok=True)
            save_checkpoint(checkpoint_path, model, optimizer, step=step, history=hist, run=run)
            atomic_write_json(out / CONFIG_NAME, {"model": run["model"], "tokenizer": tokenizer_spec, "run": run})
            atomic_write_json(out / HISTORY_NAME, hist)

        def on_eval(step: int, hist: dict[str, list]) -> None:
            if args.save_interval and step % args.save_interval == 0 and step not in (0, train_cfg.steps):
                write_all(step, hist)

        if start_step >= train_cfg.steps:
            say(f"o treino em {out} já está no passo {start_step} (>= --steps {train_cfg.steps}); nada a fazer.")
            return 0
        began = time.perf_counter()
        history = train(model, train_data, val_data, train_cfg, optimizer=optimizer, start_step=start_step,
                        history=history, progress=not args.no_progress, on_eval=on_eval)
        elapsed = time.perf_counter() - began
        if rank == 0:
            write_all(train_cfg.steps, history)
            tokens = (train_cfg.steps - start_step) * train_cfg.batch_size * ctx * train_cfg.grad_accum_steps * world
            say(f"velocidade: {tokens / elapsed:,.0f} tokens/s em {elapsed:.1f} s".replace(",", "."))
            say(
                f"final: passo {train_cfg.steps} | perda de treino {history['train_loss'][-1]:.4f} | "
                f"perda de validação {history['val_loss'][-1]:.4f} | "
                f"perplexidade de validação {perplexity(history['val_loss'][-1]):.1f}"
            )
            say(f"gravado em {checkpoint_path}")
        return 0
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _handle_train(args: argparse.Namespace) -> int:
    try:
        return _run_train(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"erro: {error}", file=sys.stderr)
        return 1


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Registra ``python -m companion train`` (veja ``companion.cli``)."""
    parser = subparsers.add_parser(
        "train",
        help="pré-treina um GPT pequeno num arquivo de texto (cap. 5)",
        description=(
            "Pré-treina um GPT num arquivo de texto UTF-8 e grava PASTA/checkpoint.safetensors, "
            "config.json e history.json. Com --resume continua exatamente de onde parou. "
            "Roda também com vários processos: torchrun --standalone --nproc_per_node=2 -m companion train ..."
        ),
    )
    parser.add_argument("--data", required=True, help="arquivo de texto UTF-8 de treino")
    parser.add_argument("--preset", default=None, help="arquitetura (GPTConfig.preset), por exemplo curso-mini")
    parser.add_argument("--steps", type=int, default=None, help="passos de otimização no total (padrão 200)")
    parser.add_argument("--out", required=True, help="pasta de saída")
    parser.add_argument("--resume", action="store_true", help="continua o treino gravado em --out")
    parser.add_argument("--seed", type=int, default=None, help="semente (padrão 123)")
    parser.add_argument("--batch-size", type=int, default=None, help="janelas por lote e por processo (padrão 8)")
    parser.add_argument("--lr", type=float, default=None, help="taxa de aprendizado máxima (padrão 1e-3)")
    parser.add_argument("--min-lr", type=float, default=None, help="taxa no fim do cosseno (padrão lr/10)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="passos de aquecimento (padrão 10)")
    parser.add_argument("--decay-steps", type=int, default=None,
                        help="passo em que o cosseno termina (padrão: --steps; fixe-o para treinar em partes)")
    parser.add_argument("--weight-decay", type=float, default=None, help="decaimento de peso do AdamW (padrão 0.1)")
    parser.add_argument("--grad-clip", type=float, default=None, help="norma máxima do gradiente (padrão 1.0)")
    parser.add_argument("--grad-accum-steps", type=int, default=None, help="micro-lotes por passo (padrão 1)")
    parser.add_argument("--eval-interval", type=int, default=None, help="avalia a cada N passos (padrão 50)")
    parser.add_argument("--eval-batches", type=int, default=None, help="lotes por avaliação (padrão 10)")
    parser.add_argument("--bf16", action="store_const", const=True, default=None, help="autocast em bfloat16")
    parser.add_argument("--context", type=int, default=None, help="tokens por janela (padrão: o do preset)")
    parser.add_argument("--drop-rate", type=float, default=None, help="dropout (padrão: o do preset)")
    parser.add_argument("--tokenizer", choices=["gpt2", "bpe"], default=None,
                        help="gpt2 (50.257 tokens) ou bpe (treinado nos dados; padrão gpt2)")
    parser.add_argument("--vocab-size", type=int, default=None, help="tamanho do vocabulário do BPE (padrão 1024)")
    parser.add_argument("--val-fraction", type=float, default=None, help="fração final do texto para validação (padrão 0.1)")
    parser.add_argument("--save-interval", type=int, default=0, help="grava o checkpoint a cada N passos (0 = só no fim)")
    parser.add_argument("--threads", type=int, default=None, help="threads do PyTorch por processo")
    parser.add_argument("--no-progress", action="store_true", help="sem barra de progresso")
    parser.set_defaults(handler=_handle_train)

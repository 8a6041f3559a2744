"""Pré-treinamento: a avaliação e o laço de treino (cap. 5).

O capítulo 5 constrói, nesta ordem:

1. a perda (em ``companion.loss``): a entropia cruzada à mão, a perplexidade, a perda
   de um lote e de um carregador;
2. ``evaluate`` — a perda média em janelas fixas, com o modelo em modo ``eval``;
3. ``TrainConfig`` e ``lr_at`` — os hiperparâmetros do treino e a taxa de aprendizado
   com aquecimento linear (*warmup*) e decaimento em cosseno;
4. ``train`` — o laço: lotes sorteados de forma reprodutível, acumulação de
   gradientes, *autocast* em bf16 onde o hardware o tem (``companion.hardware``), corte
   da norma do gradiente, AdamW, avaliação periódica com histórico de treino/validação e
   barra de progresso (``tqdm.auto``). Funciona também com vários processos
   (``torchrun``, DDP).

O comando ``python -m companion train`` (``companion.cli.train``) usa este laço e a
pasta de treino de ``companion.runs``; com ``--resume`` ele continua **exatamente** de
onde parou.

**Reprodutibilidade exata.** Tudo o que é aleatório no treino é função de
``(seed, passo)``: o lote do passo ``s`` sai de uma permutação das janelas semeada pela
época, e o gerador global (o do *dropout*) é ressemeado no início de cada passo com
``(seed, rank, passo)``. Por isso retomar do passo 10 dá, tensor por tensor, o mesmo
resultado que treinar 20 passos direto — só é preciso guardar os pesos, o estado do
AdamW e o número do passo.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from companion._checks import check_choice, check_int, check_number
from companion.hardware import autocast
from companion.loss import calc_loss_batch, calc_loss_loader, lm_loss
from companion.numbers import num

__all__ = [
    "evaluate",
    "TrainConfig",
    "lr_at",
    "make_optimizer",
    "EpochPermutations",
    "batch_indices",
    "distributed_info",
    "step_seed",
    "new_history",
    "train",
]


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
    precision: str = "fp32",
) -> float:
    """Perda média por token em janelas fixas do conjunto, com o modelo em modo ``eval`` (sem *dropout*).

    Usa até ``batch_size * max_batches`` janelas espalhadas uniformemente pelo conjunto
    (sempre as mesmas: duas avaliações do mesmo modelo dão o mesmo número). O modo do
    modelo é restaurado no fim.

    Args:
        model: o GPT.
        dataset: um ``GPTDataset`` (ou qualquer sequência de pares ``(entrada, alvo)``).
        batch_size: janelas por lote.
        max_batches: no máximo quantos lotes.
        device: onde fazer a conta (padrão: o dos parâmetros do modelo).
        precision: ``"fp32"`` ou ``"bf16"`` (*autocast*), como no treino.

    Returns:
        A perda média (``float``).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with autocast(precision, device):
            return calc_loss_loader(_eval_batches(dataset, batch_size, max_batches), model, device)
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- configuração
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
        precision: ``"fp32"`` (padrão) ou ``"bf16"`` (*autocast* em bfloat16: mais rápido
            só onde o hardware tem bf16 nativo — escolha com ``companion.hardware.precision``).
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
    precision: str = "fp32"
    seed: int = 123

    def __post_init__(self) -> None:
        owner = "TrainConfig: "
        for name in ("steps", "batch_size", "grad_accum_steps", "eval_interval", "eval_batches"):
            check_int(name, getattr(self, name), 1, owner=owner)
        for name in ("warmup_steps", "seed"):
            check_int(name, getattr(self, name), 0, owner=owner)
        self.lr = check_number("lr", self.lr, 0.0, min_open=True, owner=owner)
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        self.min_lr = check_number("min_lr", self.min_lr, 0.0, self.lr, owner=owner)
        if self.decay_steps is None:
            self.decay_steps = self.steps
        check_int("decay_steps", self.decay_steps, 1, owner=owner)
        self.weight_decay = check_number("weight_decay", self.weight_decay, 0.0, owner=owner)
        self.grad_clip = check_number("grad_clip", self.grad_clip, 0.0, min_open=True, owner=owner, allow_none=True)
        check_choice("precision", self.precision, ("fp32", "bf16"), owner=owner)


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

    Usa a versão "fundida" do AdamW (``fused=True``: um só *kernel* atualiza todos os
    parâmetros) quando o PyTorch a tem para o *device* dos parâmetros — na CPU, desde o
    2.4. A conta é a mesma (a menos do arredondamento do ``float32``) e, na CPU, o passo
    do otimizador fica umas 4 vezes mais rápido (veja o apêndice de escala).

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
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=True)
    except (RuntimeError, TypeError, ValueError):  # PyTorch antigo ou device sem a versão fundida
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


# ----------------------------------------------------------------------------- os lotes
class EpochPermutations:
    """A permutação das janelas de cada época, semeada por ``(seed, época)``.

    Guarda a da época corrente e só sorteia outra quando a época muda (o laço pede a
    mesma muitas vezes seguidas).
    """

    def __init__(self, n_windows: int, seed: int) -> None:
        self.n_windows, self.seed = n_windows, seed
        self.epoch, self.order = -1, torch.empty(0, dtype=torch.long)

    def get(self, epoch: int) -> Tensor:
        """A ordem ``(n_windows,)`` das janelas na época ``epoch``."""
        if epoch != self.epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self.epoch, self.order = epoch, torch.randperm(self.n_windows, generator=generator)
        return self.order


def batch_indices(
    n_windows: int, batch_size: int, seed: int, counter: int, permutations: EpochPermutations | None = None
) -> Tensor:
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
        permutations: as permutações já sorteadas (para não sorteá-las de novo a cada lote).

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
    order = (permutations or EpochPermutations(n_windows, seed)).get(epoch)
    return order[position * batch_size : (position + 1) * batch_size]


def distributed_info() -> tuple[int, int]:
    """``(rank, world_size)`` do processo; ``(0, 1)`` sem ``torch.distributed``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def step_seed(seed: int, rank: int, step: int) -> int:
    """Semente do gerador global no passo ``step`` (diferente em cada processo)."""
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63)


def new_history() -> dict[str, list]:
    """Um histórico de treino vazio (o formato que ``train`` preenche)."""
    return {"step": [], "tokens_seen": [], "train_loss": [], "val_loss": [], "step_loss": [], "lr": [], "grad_norm": []}


# ----------------------------------------------------------------------------- o laço
class _LossModule(nn.Module):
    """``(entradas, alvos) -> perda`` de um modelo, num módulo só (o que o DDP embrulha)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return lm_loss(self.model, inputs, targets)


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
    (com *autocast* em bf16 se ``cfg.precision == "bf16"``), divide pelo número de micro-lotes e faz a
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
    check_int("start_step", start_step, 0, cfg.steps)
    history = new_history() if history is None else history
    optimizer = make_optimizer(model, cfg) if optimizer is None else optimizer
    device = next(model.parameters()).device
    rank, world = distributed_info()
    permutations = EpochPermutations(len(train_data), cfg.seed)
    batch_indices(len(train_data), cfg.batch_size, cfg.seed, 0, permutations)  # confere o tamanho já

    net: nn.Module | None = None
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # O DDP embrulha o modelo COM a perda: assim a perda em pedaços (sem os logits inteiros)
        # também vale com vários processos, e o DDP vê a passada inteira para sincronizar os gradientes.
        net = DistributedDataParallel(_LossModule(model), device_ids=[device.index] if device.type == "cuda" else None)
    tokens_per_step = cfg.batch_size * len(train_data[0][0]) * cfg.grad_accum_steps * world

    def run_eval(step: int) -> None:
        train_loss = evaluate(model, train_data, cfg.batch_size, cfg.eval_batches, device, cfg.precision)
        val_loss = (
            evaluate(model, val_data, cfg.batch_size, cfg.eval_batches, device, cfg.precision) if val_data else float("nan")
        )
        history["step"].append(step)
        history["tokens_seen"].append(step * tokens_per_step)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        if verbose:
            message = f"passo {step:>5} | perda de treino {num(train_loss, 3)} | perda de validação {num(val_loss, 3)}"
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
            torch.manual_seed(step_seed(cfg.seed, rank, step))
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
                sync = contextlib.nullcontext() if last or net is None else net.no_sync()
                with sync:
                    with autocast(cfg.precision, device):
                        if net is None:
                            loss = calc_loss_batch(inputs, targets, model, device)
                        else:
                            loss = net(inputs.to(device), targets.to(device))
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
            bar.set_postfix(perda=f"{num(float(step_loss), 3)}", refresh=False)
            done = step + 1
            if rank == 0 and (done % cfg.eval_interval == 0 or done == cfg.steps):
                run_eval(done)
    bar.close()
    return history

"""A função de perda de um modelo de linguagem (cap. 5).

O capítulo 5 constrói, nesta ordem:

1. ``cross_entropy_by_hand`` — a entropia cruzada passo a passo (*softmax* em log, a
   probabilidade do token certo, a média dos negativos), conferida com
   ``torch.nn.functional.cross_entropy``; ``perplexity`` — ``exp(perda)``;
2. ``calc_loss_batch`` e ``calc_loss_loader`` — a perda de um lote e a média de um
   carregador inteiro (ou dos primeiros ``num_batches`` lotes), ponderada por token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion._checks import check_int

__all__ = ["cross_entropy_by_hand", "perplexity", "calc_loss_batch", "calc_loss_loader"]


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


def calc_loss_batch(
    input_batch: Tensor,
    target_batch: Tensor,
    model: nn.Module,
    device: torch.device | str,
    reduction: str = "mean",
) -> Tensor:
    """Perda de um lote: a entropia cruzada dos *logits* do modelo contra os alvos (cap. 5).

    Args:
        input_batch: IDs ``(B, T)``.
        target_batch: IDs ``(B, T)`` — a entrada deslocada um token.
        model: o modelo de linguagem.
        device: onde fazer a conta.
        reduction: ``"mean"`` (média por token) ou ``"sum"`` (soma, para médias ponderadas).

    Returns:
        Escalar com gradiente (se o modelo tiver parâmetros treináveis e o gradiente estiver ligado).
    """
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), target_batch.flatten(), reduction=reduction)  # (B*T, V) contra (B*T,)


@torch.no_grad()
def calc_loss_loader(
    data_loader: Iterable[tuple[Tensor, Tensor]],
    model: nn.Module,
    device: torch.device | str,
    num_batches: int | None = None,
) -> float:
    """Perda média por token de um carregador (ou dos primeiros ``num_batches`` lotes), sem gradiente.

    A média é sobre TOKENS, não sobre lotes: um último lote menor pesa o que os seus
    tokens pesam (a média das médias dos lotes daria a ele o peso de um lote cheio).
    Não muda o modo do modelo: chame ``model.eval()`` antes para desligar o *dropout*
    (``evaluate`` faz isso por você).

    Args:
        data_loader: qualquer iterável de pares ``(entrada, alvo)`` ``(B, T)``.
        model: o modelo de linguagem.
        device: onde fazer a conta.
        num_batches: quantos lotes usar (``None`` = todos).

    Returns:
        A perda média por token (``float``).

    Raises:
        ValueError: carregador vazio ou ``num_batches`` < 1.
    """
    check_int("num_batches", num_batches, 1, allow_none=True)
    total, tokens, batches = 0.0, 0, 0
    for input_batch, target_batch in data_loader:
        if num_batches is not None and batches >= num_batches:
            break
        total += calc_loss_batch(input_batch, target_batch, model, device, reduction="sum").item()
        tokens += target_batch.numel()
        batches += 1
    if batches == 0:
        raise ValueError("o carregador não tem nenhum lote: o texto é curto demais para o contexto e o lote escolhidos.")
    return total / tokens

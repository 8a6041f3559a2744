"""A função de perda de um modelo de linguagem (cap. 5).

O capítulo 5 constrói, nesta ordem:

1. ``cross_entropy_by_hand`` — a entropia cruzada passo a passo (*softmax* em log, a
   probabilidade do token certo, a média dos negativos), conferida com
   ``torch.nn.functional.cross_entropy``; ``perplexity`` — ``exp(perda)``;
2. ``calc_loss_batch`` e ``calc_loss_loader`` — a perda de um lote e a média de um
   carregador inteiro (ou dos primeiros ``num_batches`` lotes), ponderada por token.

O apêndice de escala acrescenta o caminho rápido, que dá os mesmos números:

3. ``chunked_cross_entropy`` — a cabeça de saída e a entropia cruzada juntas, em
   pedaços de posições, sem nunca montar o tensor inteiro de *logits* ``(B, T, V)``
   (com o vocabulário do GPT-2, 8 × 256 posições já são 411 MB por cópia);
4. ``lm_loss`` — a perda de um modelo: o caminho em pedaços para os ``CausalLM`` com
   cabeça linear comum, o de *logits* completos para qualquer outro módulo.
   ``calc_loss_batch`` (e com ele ``train`` e ``evaluate``), a perda de instruções e as
   log-probabilidades da DPO passam por ela.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion._checks import check_choice, check_int

__all__ = [
    "IGNORE_INDEX",
    "DEFAULT_CHUNK_SIZE",
    "cross_entropy_by_hand",
    "perplexity",
    "chunked_cross_entropy",
    "supports_chunked_loss",
    "lm_loss",
    "calc_loss_batch",
    "calc_loss_loader",
]

IGNORE_INDEX = -100  # o ignore_index padrão de F.cross_entropy: alvos com este valor não contam
DEFAULT_CHUNK_SIZE = 256  # posições por pedaço: 256 × 50.257 *logits* float32 ≈ 51 MB de memória de trabalho
REDUCTIONS = ("mean", "sum", "none")


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


# ----------------------------------------------------------------------------- sem os logits inteiros
def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """O ``dtype`` do *autocast* ligado para ``device_type``, ou ``None`` se ele está desligado."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # PyTorch < 2.4: uma função por device
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if device_type == "cuda" and torch.is_autocast_enabled() else None
    return torch.get_autocast_dtype(device_type) if enabled else None


def _matmul_into(a: Tensor, b: Tensor, out: Tensor) -> None:
    """``out = a @ b``, escrevendo direto em ``out`` quando os ``dtype`` deixam (sem memória nova)."""
    if out.dtype == a.dtype:
        torch.mm(a, b, out=out)
    else:
        out.copy_(a @ b)


def _add_matmul_into(out: Tensor, a: Tensor, b: Tensor, alpha: float, first: bool) -> None:
    """``out += alpha * (a @ b)`` em ``float32``; com ``first``, ``out = alpha * (a @ b)`` (o conteúdo antigo é ignorado)."""
    if out.dtype == a.dtype:
        out.addmm_(a, b, beta=0.0 if first else 1.0, alpha=alpha)  # beta=0: nem lê out (dispensa zerá-lo antes)
    elif first:
        torch.mul(a @ b, alpha, out=out)
    else:
        out.add_(a @ b, alpha=alpha)


class _LinearCrossEntropy(torch.autograd.Function):
    """Cabeça de saída + entropia cruzada, um pedaço de posições por vez, ida e volta.

    Para cada pedaço de ``n`` posições: *logits* ``(n, V)`` -> log-probabilidades (no
    mesmo lugar da memória) -> perda de cada posição. O gradiente da entropia cruzada
    em relação aos *logits* é ``softmax - one_hot(alvo)``; como ele já está ali, na
    ida mesmo calculamos as duas contas da volta — ``grad_hidden = G @ W`` e
    ``grad_weight += G.T @ h`` — e jogamos o pedaço fora. A volta só multiplica pelo
    gradiente que chega. Exceção: com ``per_token=True`` (uma perda por posição, cada
    uma com o seu peso na volta) e a matriz ``W`` treinável, os pesos ainda não são
    conhecidos na ida; aí a volta refaz os *logits* de cada pedaço.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: Tensor,  # (N, C): só as posições que têm alvo
        weight: Tensor,  # (V, C)
        targets: Tensor,  # (N,)
        scale: float,  # 1/N na média, 1 na soma (ignorado com per_token)
        per_token: bool,
        chunk_size: int,
        compute_dtype: torch.dtype,
    ) -> Tensor:
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # Guardar os gradientes na ida é mais rápido que refazer os logits na volta (uma multiplicação
        # (N, C) @ (C, V) a menos); só não dá com pesos por posição e W treinável.
        recompute = per_token and need_weight
        ctx.chunk_size, ctx.compute_dtype, ctx.per_token, ctx.scale = chunk_size, compute_dtype, per_token, scale
        ctx.save_for_backward(hidden, weight, targets)
        ctx.grad_hidden = ctx.grad_weight = None
        grads = (need_hidden, need_weight and not per_token) if not recompute else (False, False)
        losses, ctx.grad_hidden, ctx.grad_weight = _chunked_pass(
            hidden, weight, targets, chunk_size, compute_dtype, grads, 1.0 if per_token else scale
        )
        if per_token:
            return losses  # (N,)
        return losses.sum() * scale

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden, grad_weight = ctx.grad_hidden, ctx.grad_weight
        ctx.grad_hidden = ctx.grad_weight = None  # uma volta só usa o que a ida guardou
        hidden, weight, targets = ctx.saved_tensors
        ready = (grad_hidden is not None or not need_hidden) and (grad_weight is not None or not need_weight)
        if ctx.per_token:
            row_weights = grad_output.float()  # (N,): o peso de cada posição
            if ready:  # W congelada: só grad_hidden, e ele é linear em cada linha
                grad_hidden = grad_hidden * row_weights[:, None].to(grad_hidden.dtype)
            else:
                _, grad_hidden, grad_weight = _chunked_pass(
                    hidden, weight, targets, ctx.chunk_size, ctx.compute_dtype, (need_hidden, need_weight), 1.0,
                    row_weights,
                )
        else:
            if not ready:  # uma segunda volta (retain_graph=True): a primeira já usou o que a ida guardou
                _, grad_hidden, grad_weight = _chunked_pass(
                    hidden, weight, targets, ctx.chunk_size, ctx.compute_dtype, (need_hidden, need_weight), ctx.scale
                )
            if bool(grad_output != 1):  # quase sempre 1: a perda é a última conta do grafo
                grad_hidden = None if grad_hidden is None else grad_hidden * grad_output.to(grad_hidden.dtype)
                grad_weight = None if grad_weight is None else grad_weight * grad_output.float()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return (grad_hidden if need_hidden else None, grad_weight if need_weight else None,
                None, None, None, None, None)


def _chunked_pass(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    chunk_size: int,
    compute_dtype: torch.dtype,
    grads: tuple[bool, bool],
    scale: float,
    row_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Uma passada pelos pedaços: a perda de cada posição e, se pedidos, os gradientes.

    Args:
        hidden: ``(N, C)``; weight: ``(V, C)``; targets: ``(N,)`` em ``[0, V)``.
        grads: ``(calcular grad_hidden, calcular grad_weight)``.
        scale: multiplica os gradientes (``1/N`` na média).
        row_weights: ``(N,)`` ou ``None`` — o peso de cada posição nos gradientes.

    Returns:
        ``(perdas (N,) float32, grad_hidden (N, C) ou None, grad_weight (V, C) float32 ou None)``.
    """
    N, C = hidden.shape
    V = weight.shape[0]
    need_hidden, need_weight = grads
    w = weight.to(compute_dtype)  # (V, C); o mesmo tensor quando o dtype já é esse
    losses = torch.empty(N, dtype=torch.float32, device=hidden.device)
    grad_hidden = torch.empty(N, C, dtype=hidden.dtype, device=hidden.device) if need_hidden else None
    grad_weight = None
    if need_weight:  # sem posições não há pedaços: o gradiente é zero
        grad_weight = (torch.empty if N else torch.zeros)(V, C, dtype=torch.float32, device=hidden.device)
    # Um só buffer de trabalho (n, V), reaproveitado em todos os pedaços: nada de memória nova a cada um.
    work = torch.empty(min(chunk_size, N), V, dtype=torch.float32, device=hidden.device)
    rows = torch.arange(min(chunk_size, N), device=hidden.device)
    with torch.autocast(hidden.device.type, enabled=False):  # os dtype daqui são escolhidos à mão
        for start in range(0, N, chunk_size):
            stop = min(start + chunk_size, N)
            n = stop - start
            h = hidden[start:stop].to(compute_dtype)  # (n, C)
            t = targets[start:stop]  # (n,)
            logits = work[:n]  # (n, V)
            _matmul_into(h, w.t(), logits)  # (n, C) @ (C, V): os logits do pedaço, em float32
            torch.log_softmax(logits, dim=-1, out=logits)  # agora log-probabilidades, no mesmo lugar
            losses[start:stop] = -logits[rows[:n], t]  # perda = -log p(alvo)
            if not (need_hidden or need_weight):
                continue
            grad_logits = logits.exp_()  # softmax, no mesmo lugar
            grad_logits[rows[:n], t] -= 1.0  # softmax - one_hot(alvo): d perda / d logits
            if row_weights is not None:
                grad_logits.mul_(row_weights[start:stop, None])
            g = grad_logits.to(compute_dtype)  # (n, V)
            if need_hidden:
                _matmul_into(g, w, grad_hidden[start:stop])  # (n, V) @ (V, C)
                if scale != 1.0:
                    grad_hidden[start:stop].mul_(scale)
            if need_weight:
                _add_matmul_into(grad_weight, g.t(), h, scale, first=start == 0)  # (V, n) @ (n, C)
    return losses, grad_hidden, grad_weight


def _check_chunked_inputs(hidden: object, weight: object, targets: object) -> None:
    """Formatos e tipos de ``chunked_cross_entropy``, com erros claros em português."""
    for name, value in (("hidden", hidden), ("weight", weight), ("targets", targets)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} deve ser um tensor; recebi {type(value).__name__}.")
    if not hidden.dtype.is_floating_point or not weight.dtype.is_floating_point:
        raise TypeError(f"hidden e weight devem ser de ponto flutuante; recebi {hidden.dtype} e {weight.dtype}.")
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise TypeError(f"targets deve conter IDs inteiros (torch.long); recebi dtype {targets.dtype}.")
    if hidden.dim() < 2 or weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            "hidden deve ter formato (..., C) e weight (V, C), com o mesmo C; recebi hidden "
            f"{tuple(hidden.shape)} e weight {tuple(weight.shape)}."
        )
    if tuple(targets.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"targets deve ter o formato de hidden sem o C, {tuple(hidden.shape[:-1])}; recebi {tuple(targets.shape)}."
        )


def _no_targets_error() -> ValueError:
    return ValueError(
        "todos os alvos do lote são ignore_index: a perda média não existe (seria 0/0). "
        "Confira o lote (mask_prompt, max_length) ou use reduction='sum'."
    )


def chunked_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    reduction: str = "mean",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """A entropia cruzada de ``hidden @ weight.T`` contra os alvos, sem montar os *logits* inteiros.

    Dá o mesmo valor e o mesmo gradiente (a menos do arredondamento de ``float32``) que::

        F.cross_entropy(F.linear(hidden, weight).flatten(0, -2).float(), targets.flatten(),
                        ignore_index=ignore_index, reduction=reduction)

    mas calcula a cabeça de saída e a perda ``chunk_size`` posições por vez, na ida e na
    volta, e só nas posições que têm alvo (as ``ignore_index`` nem entram na conta). A
    memória de trabalho é um pedaço ``(chunk_size, V)``, não ``(B, T, V)``; o gradiente
    da matriz só é calculado se ela pede gradiente. Funciona com *autocast* (os
    *logits* saem no ``dtype`` do *autocast*, e a *softmax* roda em ``float32``, como
    no caminho comum). Construída no apêndice de escala; ``lm_loss`` a usa no cap. 5 e 6.

    Args:
        hidden: os vetores finais ``(..., C)`` (por exemplo ``(B, T, C)``, de ``hidden_states``).
        weight: a matriz da cabeça de saída ``(V, C)`` (``model.output_weight``).
        targets: ``(...)`` — o formato de ``hidden`` sem o ``C`` —, IDs em ``[0, V)`` ou ``ignore_index``.
        ignore_index: o valor dos alvos que não contam.
        reduction: ``"mean"`` (média sobre os alvos que contam), ``"sum"`` ou ``"none"``
            (uma perda por posição, ``0`` nas ignoradas, no formato de ``targets``).
        chunk_size: posições por pedaço (a memória de trabalho é ``chunk_size × V`` números).

    Returns:
        Escalar ``float32`` (``"mean"``/``"sum"``) ou ``(...)`` ``float32`` (``"none"``).
        Sem nenhum alvo válido: ``"sum"`` dá 0 (gradientes zero), ``"none"`` dá zeros.

    Raises:
        TypeError: argumentos que não são tensores ou com ``dtype`` errado.
        ValueError: formatos incompatíveis, alvo fora de ``[0, V)``, ``reduction`` ou
            ``chunk_size`` inválidos, ou ``reduction="mean"`` sem nenhum alvo válido.
    """
    _check_chunked_inputs(hidden, weight, targets)
    check_choice("reduction", reduction, REDUCTIONS)
    check_int("chunk_size", chunk_size, 1)
    check_int("ignore_index", ignore_index)
    V, C = weight.shape
    flat_hidden = hidden.reshape(-1, C)  # (N, C)
    flat_targets = targets.reshape(-1)  # (N,)
    N = flat_targets.shape[0]
    keep = flat_targets != ignore_index  # (N,)
    n_keep = int(keep.sum())
    if n_keep == N:  # o caso comum do pré-treino: nenhuma cópia
        positions, h, t = None, flat_hidden, flat_targets
    else:
        positions = keep.nonzero().squeeze(1)  # (n_keep,)
        h, t = flat_hidden.index_select(0, positions), flat_targets[positions]  # (n_keep, C), (n_keep,)
    if n_keep:
        low, high = int(t.min()), int(t.max())
        if low < 0 or high >= V:
            raise ValueError(
                f"alvo fora do vocabulário: {low if low < 0 else high}; os alvos vão de 0 a {V - 1} "
                f"(ou ignore_index={ignore_index})."
            )
    elif reduction == "mean":
        raise _no_targets_error()
    compute_dtype = _autocast_dtype(hidden.device.type) or torch.promote_types(hidden.dtype, weight.dtype)
    per_token = reduction == "none"
    scale = 1.0 / n_keep if reduction == "mean" else 1.0
    out = _LinearCrossEntropy.apply(h, weight, t, scale, per_token, chunk_size, compute_dtype)
    if not per_token:
        return out
    if positions is not None:
        out = out.new_zeros(N).index_copy(0, positions, out)  # 0 nas posições ignoradas
    return out.view(targets.shape)


def supports_chunked_loss(model: nn.Module) -> bool:
    """O modelo é um ``CausalLM`` cuja cabeça é só ``hidden @ output_weight.T``?

    Só então ``lm_loss`` pode pular os *logits* inteiros. Fica de fora quem troca a
    cabeça: ``logits`` ou ``forward`` reescritos numa subclasse, uma cabeça com viés ou
    embrulhada (uma ``LoRALinear``, cujo ``.weight`` não inclui a correção).
    """
    from companion.lm import CausalLM

    if not isinstance(model, CausalLM):
        return False
    if type(model).logits is not CausalLM.logits or type(model).forward is not CausalLM.forward:
        return False
    head = getattr(model, "out_head", None)
    return head is None or (type(head) is nn.Linear and head.bias is None)


def lm_loss(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    reduction: str = "mean",
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor:
    """A entropia cruzada de um modelo de linguagem num lote, pelo caminho mais rápido que dá o mesmo número.

    - ``CausalLM`` com cabeça linear comum (``supports_chunked_loss``): vetores finais
      ``(B, T, C)`` de ``hidden_states`` e ``chunked_cross_entropy`` com ``output_weight``
      — os *logits* ``(B, T, V)`` nunca existem inteiros;
    - qualquer outro módulo (``(B, T)`` -> ``(B, T, V)``): os *logits* completos e
      ``F.cross_entropy`` em ``float32``, como no cap. 5.

    Usada por ``calc_loss_batch`` (cap. 5), pela perda de instruções e pelas
    log-probabilidades da DPO (cap. 6).

    Args:
        model: o modelo.
        inputs: IDs ``(B, T)``.
        targets: IDs ``(B, T)``, com ``ignore_index`` onde não há alvo.
        reduction: ``"mean"``, ``"sum"`` ou ``"none"`` (``(B, T)``, ``0`` nas posições ignoradas).
        ignore_index: o valor dos alvos que não contam.
        chunk_size: posições por pedaço no caminho sem *logits* inteiros.

    Returns:
        Escalar ``float32``, ou ``(B, T)`` com ``reduction="none"``.

    Raises:
        ValueError: ``reduction`` inválido, ou ``"mean"`` sem nenhum alvo válido (e os
            erros de formato de ``chunked_cross_entropy``).
    """
    check_choice("reduction", reduction, REDUCTIONS)
    if supports_chunked_loss(model):
        hidden = model.hidden_states(inputs)  # (B, T, C)
        return chunked_cross_entropy(
            hidden, model.output_weight, targets, ignore_index=ignore_index, reduction=reduction, chunk_size=chunk_size
        )
    if reduction == "mean" and not bool((targets != ignore_index).any()):
        raise _no_targets_error()
    logits = model(inputs)  # (B, T, V)
    losses = F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index, reduction=reduction
    )  # (B*T, V) contra (B*T,)
    return losses.view(targets.shape) if reduction == "none" else losses


def calc_loss_batch(
    input_batch: Tensor,
    target_batch: Tensor,
    model: nn.Module,
    device: torch.device | str,
    reduction: str = "mean",
) -> Tensor:
    """Perda de um lote: a entropia cruzada dos *logits* do modelo contra os alvos (cap. 5).

    O número é o de ``F.cross_entropy(model(entrada).flatten(0, 1), alvo.flatten())``;
    a conta passa por ``lm_loss``, que, nos ``CausalLM`` do pacote, calcula a cabeça
    de saída e a perda em pedaços, sem guardar os *logits* ``(B, T, V)`` inteiros
    (veja o apêndice de escala). Qualquer outro ``nn.Module`` usa os *logits* completos.

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
    loss = lm_loss(model, input_batch, target_batch, reduction=reduction)
    return loss.flatten() if reduction == "none" else loss  # "none": (B*T,), como F.cross_entropy


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

"""Alinhamento por preferências com DPO, do zero (cap. 6).

O RLHF clássico (Ouyang et al., 2022) treina um modelo de recompensa com pares
"resposta preferida x rejeitada" e depois otimiza o modelo de linguagem contra ele com
PPO, preso a um modelo de referência por uma penalidade KL. A DPO (*Direct Preference
Optimization*, Rafailov et al., 2023) mostra que a política ótima desse problema tem
forma fechada e que a recompensa fica *implícita* no próprio modelo::

    r(x, y) = beta · [log pi(y | x) - log pi_ref(y | x)]

Com isso, o RLHF vira uma classificação binária sobre os pares: aumentar a margem entre
a recompensa implícita da resposta escolhida ``y_w`` e a da rejeitada ``y_l``::

    perda = -log sigmoid( r(x, y_w) - r(x, y_l) )

Sem modelo de recompensa separado, sem amostrar respostas durante o treino, sem PPO.

Este arquivo, na ordem do capítulo:

1. ``sequence_logprobs`` — ``log pi(y | x)``: a soma das log-probabilidades dos tokens
   da resposta (os alvos que não são ``-100``);
2. ``dpo_loss`` — a perda, as recompensas implícitas, a margem e a acurácia;
3. ``load_preferences`` / ``encode_preferences`` / ``collate_preferences`` — os pares do
   curso (``companion/assets/finetune/preferencias.jsonl``) como lotes: as escolhidas
   em cima, as rejeitadas embaixo;
4. ``reference_logprobs`` — as log-probabilidades da referência, calculadas uma vez só
   (a referência está congelada);
5. ``evaluate_dpo`` e ``train_dpo`` (o laço de ``companion.instruct`` com a perda DPO);
6. ``load_tuned`` — o Gemma 3 (ou o SmolLM2) com os adaptadores empilhados (instruções, DPO).

A tarefa ``python -m companion finetune dpo`` (``companion.cli.finetune``) parte do
modelo ajustado a instruções (o adaptador é somado aos pesos e vira a referência) e grava
só o adaptador novo, pequeno, e um ``metrics.json``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.data import SPLITS, load_jsonl
from companion.hardware import autocast
from companion.instruct import (
    IGNORE_INDEX,
    collate_instructions,
    format_prompt,
)
from companion.loss import lm_loss
from companion.textcodec import text_codec

__all__ = [
    "PREFERENCES_ASSET",
    "SPLITS",
    "PreferencePair",
    "sequence_logprobs",
    "dpo_loss",
    "load_preferences",
    "encode_preferences",
    "split_long_pairs",
    "collate_preferences",
    "reference_logprobs",
    "evaluate_dpo",
    "pair_margins",
    "train_dpo",
    "load_tuned",
    "load_tuned_smollm2",
]

PREFERENCES_ASSET = "finetune/preferencias.jsonl"


# ----------------------------------------------------------------------------- log-probabilidades
def sequence_logprobs(logits: Tensor, targets: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``log pi(y | x)`` de cada sequência: a soma das log-probabilidades dos alvos válidos.

    Args:
        logits: ``(B, T, V)``.
        targets: ``(B, T)``, com ``ignore_index`` nas posições que não contam (o
            *prompt* e o preenchimento, com ``collate_instructions(mask_prompt=True)``).
        ignore_index: o valor dos alvos ignorados.

    Returns:
        ``(B,)`` em ``float32``.

    Raises:
        ValueError: formatos incompatíveis.
    """
    if logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(targets.shape):
        raise ValueError(
            f"logits deve ser (B, T, V) e targets (B, T); recebi {tuple(logits.shape)} e {tuple(targets.shape)}."
        )
    keep = targets != ignore_index  # (B, T)
    safe = targets.masked_fill(~keep, 0)  # qualquer ID válido; a posição é zerada abaixo
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    token_lp = log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T)
    return (token_lp * keep).sum(dim=-1)  # (B,)


@dataclass
class DPOOutput:
    """O que ``dpo_loss`` devolve (as recompensas já sem gradiente)."""

    loss: Tensor  # escalar, com gradiente
    chosen_rewards: Tensor  # (B,)  beta · (log pi - log pi_ref) da escolhida
    rejected_rewards: Tensor  # (B,)  o mesmo da rejeitada

    @property
    def margins(self) -> Tensor:
        """``(B,)``: recompensa da escolhida menos a da rejeitada."""
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> float:
        """Fração dos pares em que a escolhida tem recompensa maior."""
        return float((self.margins > 0).float().mean())


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
) -> DPOOutput:
    """A perda DPO de Rafailov et al. (2023), média sobre os pares (cap. 6).

    ::

        r_w = beta · (log pi(y_w|x) - log pi_ref(y_w|x))
        r_l = beta · (log pi(y_l|x) - log pi_ref(y_l|x))
        perda = -log sigmoid(r_w - r_l)

    No início (política = referência) todas as recompensas são 0 e a perda é
    ``log 2 ≈ 0,693``.

    Args:
        policy_chosen, policy_rejected: ``(B,)`` log-probabilidades das respostas sob a
            política (o modelo que treina).
        ref_chosen, ref_rejected: ``(B,)`` as mesmas sob a referência congelada.
        beta: a força da "coleira" que prende a política à referência (0,1 é o usual):
            maior ``beta``, menor o desvio tolerado.

    Returns:
        ``DPOOutput`` com a perda, as recompensas, as margens e a acurácia.

    Raises:
        ValueError: ``beta`` <= 0 ou formatos diferentes.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta deve ser um número > 0 (0,1 é o usual); recebi {beta!r}.")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"as quatro log-probabilidades devem ter o mesmo formato (B,); recebi {sorted(shapes)}.")
    chosen = beta * (policy_chosen - ref_chosen)  # (B,)
    rejected = beta * (policy_rejected - ref_rejected)  # (B,)
    loss = -F.logsigmoid(chosen - rejected).mean()
    return DPOOutput(loss, chosen.detach(), rejected.detach())


# ----------------------------------------------------------------------------- os dados
@dataclass
class PreferencePair:
    """Um par codificado: ``prompt + resposta + fim`` para as duas respostas."""

    chosen: list[int]
    rejected: list[int]
    prompt_len: int
    ref_chosen: float = float("nan")  # log pi_ref(y_w | x), preenchido por reference_logprobs
    ref_rejected: float = float("nan")


def load_preferences(split: str | None = None) -> list[dict[str, str]]:
    """Os pares de preferência do curso (``instrucao``, ``entrada``, ``escolhida``,
    ``rejeitada``, ``defeito``, ``divisao``).

    Args:
        split: ``"treino"``, ``"validacao"``, ``"teste"`` ou ``None`` (todos).
    """
    return load_jsonl(
        PREFERENCES_ASSET, {"instrucao": None, "entrada": None, "escolhida": None, "rejeitada": None}, split,
        may_be_empty=("entrada",),
    )


def encode_preferences(entries: Sequence[Mapping[str, str]], tokenizer: Any) -> list[PreferencePair]:
    """Codifica os pares no molde Alpaca de ``companion.instruct`` (a resposta termina no fim de texto).

    Raises:
        ValueError / TypeError: par sem ``instrucao``, ``escolhida`` ou ``rejeitada``.
    """
    codec = text_codec(tokenizer)
    pairs = []
    for i, entry in enumerate(entries):
        for field in ("instrucao", "escolhida", "rejeitada"):
            if not isinstance(entry.get(field), str):
                raise ValueError(f"o par {i} não tem o texto {field!r} (campos: instrucao, entrada, escolhida, rejeitada).")
        prompt = codec.document(format_prompt(entry))
        chosen = prompt + codec.encode(entry["escolhida"].strip()) + [codec.eos_id]
        rejected = prompt + codec.encode(entry["rejeitada"].strip()) + [codec.eos_id]
        pairs.append(PreferencePair(chosen, rejected, len(prompt)))
    return pairs


def split_long_pairs(pairs: Sequence[PreferencePair], max_length: int) -> tuple[list[PreferencePair], int]:
    """Os pares em que as duas respostas cabem em ``max_length`` tokens, e quantos ficaram de fora.

    Cortar um par mudaria a log-probabilidade das respostas (e a recompensa implícita);
    por isso os longos saem inteiros, e quem chama diz quantos saíram.
    """
    kept = [p for p in pairs if max(len(p.chosen), len(p.rejected)) - 1 <= max_length]
    return kept, len(pairs) - len(kept)


def collate_preferences(batch: Sequence[PreferencePair], max_length: int | None = None) -> tuple[Tensor, Tensor]:
    """Um lote de ``2B`` linhas: as ``B`` escolhidas e, depois, as ``B`` rejeitadas.

    Os alvos do *prompt* e do preenchimento são ``-100``: ``sequence_logprobs`` soma só
    os tokens das respostas.

    Returns:
        ``(inputs, targets)``, cada um ``(2B, T)``.

    Raises:
        ValueError: lote vazio ou par mais longo que ``max_length`` (nunca é cortado).
    """
    if len(batch) == 0:
        raise ValueError("collate_preferences: o lote está vazio.")
    if max_length is not None:
        long = [i for i, p in enumerate(batch) if max(len(p.chosen), len(p.rejected)) - 1 > max_length]
        if long:
            raise ValueError(
                f"o par {long[0]} do lote passa de max_length={max_length} tokens: cortá-lo mudaria log pi(y | x) "
                "das respostas em silêncio. Aumente max_length ou tire os pares longos antes "
                "(companion.dpo.split_long_pairs)."
            )
    rows = [(p.chosen, p.prompt_len) for p in batch] + [(p.rejected, p.prompt_len) for p in batch]
    return collate_instructions(rows, mask_prompt=True, max_length=max_length)


def _pair_logprobs(model: nn.Module, batch: Sequence[PreferencePair], max_length: int | None) -> tuple[Tensor, Tensor]:
    device = next(model.parameters()).device
    inputs, targets = collate_preferences(batch, max_length)
    # log pi(y|x) = -(soma das perdas dos tokens da resposta): o mesmo que sequence_logprobs(model(inputs), targets),
    # sem os logits (2B, T, V) inteiros (companion.loss.lm_loss)
    logps = -lm_loss(model, inputs.to(device), targets.to(device), reduction="none").sum(dim=-1)  # (2B,)
    return logps[: len(batch)], logps[len(batch) :]


@torch.no_grad()
def reference_logprobs(
    model: nn.Module,
    pairs: Sequence[PreferencePair],
    batch_size: int = 8,
    precision: str = "fp32",
    max_length: int | None = None,
) -> None:
    """Preenche ``ref_chosen`` e ``ref_rejected`` de cada par com o modelo dado (a referência).

    A referência não muda durante o treino: calcular suas log-probabilidades uma vez só
    economiza metade das contas de cada passo (e a memória de um segundo modelo).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            with autocast(precision, device):
                chosen, rejected = _pair_logprobs(model, batch, max_length)
            for pair, c, r in zip(batch, chosen.tolist(), rejected.tolist()):
                pair.ref_chosen, pair.ref_rejected = c, r
    finally:
        model.train(was_training)


def _ref_tensors(batch: Sequence[PreferencePair], device: torch.device) -> tuple[Tensor, Tensor]:
    if any(math.isnan(p.ref_chosen) or math.isnan(p.ref_rejected) for p in batch):
        raise ValueError("os pares não têm as log-probabilidades da referência: chame reference_logprobs antes.")
    chosen = torch.tensor([p.ref_chosen for p in batch], device=device)
    rejected = torch.tensor([p.ref_rejected for p in batch], device=device)
    return chosen, rejected


def _scored_batches(
    model: nn.Module, pairs: Sequence[PreferencePair], beta: float, batch_size: int, precision: str,
    max_length: int | None,
) -> Iterator[tuple[int, DPOOutput, Tensor, Tensor]]:
    """Percorre os pares em lotes, em modo ``eval``: ``(tamanho, saída da DPO, logp escolhidas, logp rejeitadas)``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            ref_c, ref_r = _ref_tensors(batch, device)
            with autocast(precision, device):
                pol_c, pol_r = _pair_logprobs(model, batch, max_length)
            yield len(batch), dpo_loss(pol_c, pol_r, ref_c, ref_r, beta), pol_c, pol_r
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_dpo(
    model: nn.Module,
    pairs: Sequence[PreferencePair],
    beta: float = 0.1,
    batch_size: int = 8,
    precision: str = "fp32",
    max_length: int | None = None,
) -> dict[str, float]:
    """Perda DPO, margem média, acurácia das recompensas e log-probabilidades médias num conjunto.

    Returns:
        ``{"loss", "margin", "accuracy", "chosen_reward", "rejected_reward",
        "chosen_logp", "rejected_logp"}`` (médias por par).

    Raises:
        ValueError: conjunto vazio ou pares sem as log-probabilidades da referência.
    """
    if len(pairs) == 0:
        raise ValueError("evaluate_dpo: o conjunto está vazio.")
    sums = dict.fromkeys(("loss", "margin", "accuracy", "chosen_reward", "rejected_reward", "chosen_logp", "rejected_logp"), 0.0)
    for n, out, pol_c, pol_r in _scored_batches(model, pairs, beta, batch_size, precision, max_length):
        sums["loss"] += float(out.loss) * n
        sums["margin"] += float(out.margins.sum())
        sums["accuracy"] += out.accuracy * n
        sums["chosen_reward"] += float(out.chosen_rewards.sum())
        sums["rejected_reward"] += float(out.rejected_rewards.sum())
        sums["chosen_logp"] += float(pol_c.sum())
        sums["rejected_logp"] += float(pol_r.sum())
    return {k: v / len(pairs) for k, v in sums.items()}


@torch.no_grad()
def pair_margins(
    model: nn.Module,
    pairs: Sequence[PreferencePair],
    beta: float = 0.1,
    batch_size: int = 8,
    precision: str = "fp32",
    max_length: int | None = None,
) -> Tensor:
    """A margem ``r_w - r_l`` de cada par (para olhar além da média de ``evaluate_dpo``).

    Returns:
        ``(N,)``, na ordem de ``pairs``.

    Raises:
        ValueError: pares sem as log-probabilidades da referência.
    """
    margins = [out.margins for _, out, _, _ in _scored_batches(model, pairs, beta, batch_size, precision, max_length)]
    return torch.cat(margins) if margins else torch.zeros(0)


def train_dpo(
    model: nn.Module,
    pairs: Sequence[PreferencePair],
    cfg: Any,
    beta: float = 0.1,
    *,
    max_length: int | None = None,
    progress: bool = True,
) -> dict[str, list]:
    """Treina a política (os parâmetros treináveis, os da LoRA nova) com a perda DPO.

    Usa o laço de ``companion.instruct.train_instructions`` com a perda trocada. Os pares
    precisam das log-probabilidades da referência (``reference_logprobs``).

    Args:
        model: a política, com LoRA aplicada sobre o modelo de referência.
        pairs: os pares de treino.
        cfg: ``companion.train.TrainConfig``.
        beta: como em ``dpo_loss``.
        max_length: corta sequências longas.
        progress: barra de progresso.

    Returns:
        O histórico: ``step_loss``, ``lr``, e por passo ``margin`` e ``accuracy`` do lote.
    """
    from companion.instruct import train_instructions

    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta <= 0:
        raise ValueError(f"beta deve ser um número > 0 (0,1 é o usual); recebi {beta!r}.")
    device = next(model.parameters()).device
    _ref_tensors(pairs, device)  # confere já que a referência foi calculada
    margins: list[float] = []
    accuracies: list[float] = []

    def loss_fn(net: nn.Module, batch: Sequence[PreferencePair]) -> Tensor:
        ref_c, ref_r = _ref_tensors(batch, device)
        pol_c, pol_r = _pair_logprobs(net, batch, max_length)
        out = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta)
        margins.append(float(out.margins.mean()))
        accuracies.append(out.accuracy)
        return out.loss

    history = train_instructions(model, pairs, None, cfg, progress=progress, verbose=False, loss_fn=loss_fn)
    history["margin"] = margins
    history["accuracy"] = accuracies
    for key in ("step", "val_loss"):
        history.pop(key, None)
    return history


# ----------------------------------------------------------------------------- modelos ajustados
def load_tuned(
    model: str = "gemma3-270m",
    adapters: Sequence[str | Path] = (),
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, Any]:
    """Um modelo pré-treinado do curso com adaptadores LoRA empilhados e somados aos pesos.

    A ordem importa: o adaptador DPO foi treinado por cima do de instruções, e guarda
    o sha256 dele (``base_adapter_sha256``); conferimos que o anterior da lista é esse.
    Cada adaptador também diz para qual modelo foi treinado (``pretrained``), e um adaptador
    de outro modelo é recusado antes de qualquer conta.

    Args:
        model: ``"gemma3-270m"`` (padrão) ou ``"smollm2"``.
        adapters: pastas (ou arquivos) de adaptadores, na ordem em que foram treinados.
        dtype: como em ``load_gemma3`` / ``load_smollm2``.

    Returns:
        ``(model, tokenizer)``, com o modelo em modo ``eval``.

    Raises:
        ValueError: modelo desconhecido, adaptador de outro modelo ou empilhado sobre
            outro que não o do treino.
    """
    from companion.assets import sha256_of
    from companion.lora import adapter_file, load_lora_adapter, read_adapter_metadata
    from companion.pretrained import load_pretrained

    infos = [read_adapter_metadata(adapter)[1] for adapter in adapters]  # erros claros antes de carregar
    for adapter, info in zip(adapters, infos):
        trained_on = info.get("pretrained", "smollm2")  # os adaptadores antigos não diziam: eram do SmolLM2
        if trained_on != model:
            raise ValueError(
                f"o adaptador {adapter} foi treinado no modelo {trained_on!r}, não em {model!r}; "
                f"carregue-o com load_tuned({trained_on!r}, ...)."
            )
    net, tokenizer = load_pretrained(model, dtype)
    previous: str | None = None
    for adapter, info in zip(adapters, infos):
        wanted = info.get("base_adapter_sha256")
        if wanted is not None and wanted != previous:
            raise ValueError(
                f"o adaptador {adapter} foi treinado sobre outro adaptador (sha256 {wanted[:12]}...); "
                f"passe antes dele o adaptador de instruções usado no treino (--adapter na ordem do treino)."
            )
        load_lora_adapter(adapter, net, merge=True)
        previous = sha256_of(adapter_file(adapter))
    net.eval()
    return net, tokenizer


def load_tuned_smollm2(
    adapters: Sequence[str | Path] = (),
    dtype: torch.dtype = torch.float32,
) -> tuple[nn.Module, Any]:
    """``load_tuned("smollm2", adapters, dtype)``: o SmolLM2-135M-Instruct com adaptadores somados."""
    return load_tuned("smollm2", adapters, dtype)

"""Ajuste fino por instruções (*instruction tuning*) com LoRA (cap. 6).

Um modelo pré-treinado continua textos; para que ele *siga pedidos*, mostramos
centenas de exemplos "instrução -> resposta" num formato fixo e treinamos com a mesma
entropia cruzada do pré-treinamento. O capítulo 6 constrói, nesta ordem:

1. ``format_prompt`` / ``format_example`` — o molde no estilo Alpaca (Taori et al.,
   2023), em português: preâmbulo, ``### Instrução:``, ``### Entrada:`` (só quando há
   entrada) e ``### Resposta:``;
2. ``load_instructions`` e ``encode_instructions`` — os exemplos do curso
   (``companion/assets/finetune/instrucoes.jsonl``, com divisão fixa
   treino/validação/teste) já como IDs, cada um com o tamanho do seu *prompt*;
3. ``collate_instructions`` — junta exemplos de tamanhos diferentes num lote:
   completa com ``pad_id``, marca com ``-100`` (o ``ignore_index`` da entropia cruzada)
   os alvos de preenchimento e, como opção, os do *prompt* — aí o modelo só aprende a
   escrever a resposta;
4. ``instruction_loss`` e ``evaluate_instructions`` — a perda média por token de
   resposta (a perplexidade é ``exp`` dela);
5. ``train_instructions`` — o laço de treino (só os parâmetros treináveis, isto é, os
   da LoRA; *autocast* em bf16 onde o hardware o tem), que reaproveita ``TrainConfig``, ``lr_at``,
   ``make_optimizer`` e ``batch_indices`` do cap. 5;
6. ``generate_response`` — a resposta do modelo a uma instrução.

A tarefa ``python -m companion finetune instruct --model gemma3-270m``
(``companion.cli.finetune``) treina a LoRA no Gemma 3 270M (ou no SmolLM2, com
``--model smollm2``) e grava só o adaptador (alguns MB) e um ``metrics.json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from companion._checks import check_int
from companion.data import SPLITS, load_jsonl
from companion.hardware import autocast
from companion.loss import lm_loss
from companion.numbers import num
from companion.textcodec import text_codec
from companion.train import TrainConfig

__all__ = [
    "PROMPT_PREAMBLE",
    "RESPONSE_HEADER",
    "IGNORE_INDEX",
    "SPLITS",
    "INSTRUCTIONS_ASSET",
    "format_prompt",
    "format_example",
    "load_instructions",
    "encode_instructions",
    "collate_instructions",
    "split_by_length",
    "instruction_loss",
    "evaluate_instructions",
    "train_instructions",
    "generate_response",
]

PROMPT_PREAMBLE = (
    "Abaixo está uma instrução que descreve uma tarefa. Escreva uma resposta que complete o pedido de forma adequada."
)
INSTRUCTION_HEADER = "### Instrução:"
INPUT_HEADER = "### Entrada:"
RESPONSE_HEADER = "### Resposta:"
IGNORE_INDEX = -100  # o ignore_index padrão de F.cross_entropy

INSTRUCTIONS_ASSET = "finetune/instrucoes.jsonl"
# Campos do TrainConfig que o laço de instruções não usa: mudá-los é um erro, não um silêncio.
IGNORED_TRAIN_FIELDS = ("grad_accum_steps", "eval_batches")


# ----------------------------------------------------------------------------- o molde
def _check_entry(entry: object, fields: Sequence[str]) -> Mapping[str, str]:
    if not isinstance(entry, Mapping):
        raise TypeError(f"cada exemplo deve ser um dicionário com as chaves {list(fields)}; recebi {type(entry).__name__}.")
    for field in fields:
        if field not in entry:
            raise ValueError(f"o exemplo não tem a chave {field!r}; as obrigatórias são {list(fields)}.")
        if not isinstance(entry[field], str):
            raise TypeError(f"o campo {field!r} deve ser um texto (str); recebi {type(entry[field]).__name__}.")
    return entry


def format_prompt(entry: Mapping[str, str]) -> str:
    """O *prompt* no estilo Alpaca, em português, terminando na abertura da resposta (cap. 6).

    ::

        Abaixo está uma instrução que descreve uma tarefa. Escreva uma resposta ...

        ### Instrução:
        {instrucao}

        ### Entrada:          <- só quando "entrada" não é vazia
        {entrada}

        ### Resposta:

    Args:
        entry: dicionário com ``"instrucao"`` e, opcionalmente, ``"entrada"`` (textos).

    Returns:
        O texto do *prompt*, terminando em ``"### Resposta:\\n"``.

    Raises:
        TypeError / ValueError: exemplo mal formado (a mensagem diz o campo).
    """
    _check_entry(entry, ("instrucao",))
    entrada = entry.get("entrada", "")
    if not isinstance(entrada, str):
        raise TypeError(f"o campo 'entrada' deve ser um texto (str); recebi {type(entrada).__name__}.")
    text = f"{PROMPT_PREAMBLE}\n\n{INSTRUCTION_HEADER}\n{entry['instrucao'].strip()}\n\n"
    if entrada.strip():
        text += f"{INPUT_HEADER}\n{entrada.strip()}\n\n"
    return text + f"{RESPONSE_HEADER}\n"


def format_example(entry: Mapping[str, str]) -> str:
    """*Prompt* + resposta (o campo ``"saida"``): o texto completo de um exemplo de treino."""
    _check_entry(entry, ("instrucao", "saida"))
    return format_prompt(entry) + entry["saida"].strip()


# ----------------------------------------------------------------------------- os dados
def load_instructions(split: str | None = None) -> list[dict[str, str]]:
    """Os exemplos de instrução do curso (``instrucao``, ``entrada``, ``saida``, ``divisao``).

    Args:
        split: ``"treino"``, ``"validacao"``, ``"teste"`` ou ``None`` (todos).
    """
    return load_jsonl(INSTRUCTIONS_ASSET, {"instrucao": None, "entrada": None, "saida": None}, split,
                      may_be_empty=("entrada",))


def encode_instructions(
    entries: Sequence[Mapping[str, str]],
    tokenizer: Any,
    eos_id: int | None = None,
) -> list[tuple[list[int], int]]:
    """Codifica cada exemplo como ``(ids, tamanho_do_prompt)``.

    ``ids`` = ``bos`` do modelo (se ele usa) + tokens do *prompt* + tokens da resposta +
    ``eos_id`` (o modelo aprende a parar). O *prompt* e a resposta são codificados separadamente, para que a fronteira
    entre eles caia exatamente entre dois tokens.

    Args:
        entries: exemplos com ``instrucao``, ``entrada`` e ``saida``.
        tokenizer: o do modelo (SmolLM2 ou Gemma 3; veja ``companion.textcodec``).
        eos_id: o token de fim (padrão: o fim de documento do modelo, ``<|endoftext|>``
            no SmolLM2 e ``<eos>`` no Gemma 3).

    Returns:
        Lista de pares ``(ids, prompt_len)``.
    """
    codec = text_codec(tokenizer)
    eos_id = codec.eos_id if eos_id is None else eos_id
    items = []
    for entry in entries:
        _check_entry(entry, ("instrucao", "saida"))
        prompt = codec.document(format_prompt(entry))  # o Gemma começa com <bos>; o SmolLM2, direto no texto
        answer = codec.encode(entry["saida"].strip())
        items.append((prompt + answer + [eos_id], len(prompt)))
    return items


# ----------------------------------------------------------------------------- o lote
def collate_instructions(
    batch: Sequence[tuple[Sequence[int], int]],
    pad_id: int = 0,
    ignore_index: int = IGNORE_INDEX,
    mask_prompt: bool = False,
    max_length: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Junta exemplos de tamanhos diferentes num lote de entradas e alvos (cap. 6).

    Para cada sequência ``s`` (de ``n`` tokens): entrada = ``s[:-1]``, alvo = ``s[1:]``
    (o alvo da posição ``j`` é o token ``j + 1``). Depois:

    - as entradas são completadas com ``pad_id`` até a maior do lote;
    - os alvos dessas posições de preenchimento recebem ``ignore_index`` (``-100``):
      ``F.cross_entropy`` os pula;
    - com ``mask_prompt=True``, também os alvos que ainda são tokens do *prompt*
      (``j + 1 < prompt_len``) recebem ``ignore_index``: o primeiro alvo que conta é o
      primeiro token da resposta.

    Args:
        batch: pares ``(ids, prompt_len)`` (de ``encode_instructions``); ``ids`` com
            pelo menos 2 tokens.
        pad_id: o ID usado para completar as entradas (qualquer um serve: os alvos
            correspondentes são ignorados).
        ignore_index: o valor dos alvos ignorados.
        mask_prompt: ignora os alvos do *prompt*.
        max_length: corta cada sequência de entrada em ``max_length`` tokens (``None``
            = não corta).

    Returns:
        ``(inputs, targets)``, dois tensores ``torch.long`` de formato ``(B, T)``, com
        ``T`` = a maior sequência do lote menos 1 (ou ``max_length``).

    Raises:
        ValueError: lote vazio, sequência com menos de 2 tokens, ``prompt_len`` fora de
            ``[0, len(ids)]``, ``max_length`` < 1 ou, com ``mask_prompt``, um exemplo cujo
            *prompt* sozinho já ocupa ``max_length`` (não sobraria alvo nenhum).
    """
    if len(batch) == 0:
        raise ValueError("collate_instructions: o lote está vazio.")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length deve ser None ou um inteiro >= 1; recebi {max_length!r}.")
    seqs: list[list[int]] = []
    prompt_lens: list[int] = []
    for i, item in enumerate(batch):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"o item {i} do lote deve ser um par (ids, prompt_len); recebi {item!r}.")
        ids, prompt_len = list(item[0]), item[1]
        if len(ids) < 2:
            raise ValueError(f"o item {i} do lote tem {len(ids)} token(s); são precisos ao menos 2 (entrada e alvo).")
        if isinstance(prompt_len, bool) or not isinstance(prompt_len, int) or not 0 <= prompt_len <= len(ids):
            raise ValueError(f"o prompt_len do item {i} deve ser um inteiro em [0, {len(ids)}]; recebi {prompt_len!r}.")
        if max_length is not None:
            if mask_prompt and prompt_len > max_length:
                raise ValueError(
                    f"o item {i} do lote não tem nenhum alvo: o prompt tem {prompt_len} tokens e max_length="
                    f"{max_length} corta a resposta inteira (a perda seria NaN). Aumente max_length ou tire os "
                    "exemplos longos antes (companion.instruct.split_by_length)."
                )
            ids = ids[: max_length + 1]
        seqs.append(ids)
        prompt_lens.append(prompt_len)
    T = max(len(s) for s in seqs) - 1
    inputs = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # (B, T)
    targets = torch.full((len(seqs), T), ignore_index, dtype=torch.long)  # (B, T)
    for row, (ids, prompt_len) in enumerate(zip(seqs, prompt_lens)):
        n = len(ids) - 1
        inputs[row, :n] = torch.tensor(ids[:-1])
        targets[row, :n] = torch.tensor(ids[1:])
        if mask_prompt:
            targets[row, : max(0, min(prompt_len - 1, n))] = ignore_index
    return inputs, targets


def split_by_length(
    items: Sequence[tuple[Sequence[int], int]], max_length: int
) -> tuple[list[tuple[Sequence[int], int]], list[int]]:
    """Separa os exemplos cujo *prompt* cabe em ``max_length`` dos que não cabem.

    Um exemplo cuja resposta passa do limite é cortado no lote e ainda ensina o começo da
    resposta; um cujo *prompt* sozinho ocupa ``max_length`` tokens não tem alvo nenhum.

    Returns:
        ``(que_cabem, índices_dos_que_ficaram_de_fora)``.
    """
    check_int("max_length", max_length, 1)
    kept, dropped = [], []
    for i, (ids, prompt_len) in enumerate(items):
        (kept.append((ids, prompt_len)) if prompt_len <= max_length else dropped.append(i))
    return kept, dropped


# ----------------------------------------------------------------------------- a perda
def instruction_loss(model: nn.Module, inputs: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Entropia cruzada dos *logits* contra os alvos, pulando os ``-100``.

    A conta é a de ``companion.loss.lm_loss``: num ``CausalLM`` a cabeça de saída e a
    perda são calculadas em pedaços, só nas posições com alvo (o mesmo número que
    ``F.cross_entropy(model(inputs)...)``, sem os *logits* ``(B, T, V)`` inteiros).

    Args:
        model: o modelo de linguagem (``(B, T)`` -> ``(B, T, V)``).
        inputs, targets: de ``collate_instructions``.
        reduction: ``"mean"`` (média por alvo que conta) ou ``"sum"``.

    Returns:
        Escalar.

    Raises:
        ValueError: ``reduction="mean"`` num lote em que todos os alvos são ``-100``.
    """
    return lm_loss(model, inputs, targets, reduction=reduction, ignore_index=IGNORE_INDEX)


@torch.no_grad()
def evaluate_instructions(
    model: nn.Module,
    items: Sequence[tuple[Sequence[int], int]],
    batch_size: int = 8,
    mask_prompt: bool = True,
    precision: str = "fp32",
    max_length: int | None = None,
) -> float:
    """Perda média por token-alvo num conjunto inteiro (por padrão, só os da resposta).

    Os exemplos são agrupados em ordem de tamanho (menos preenchimento) e a média é
    ponderada pelo número de alvos de cada lote: o resultado não depende do tamanho do
    lote. O modo do modelo é restaurado no fim.

    Args:
        model: o modelo.
        items: pares ``(ids, prompt_len)``.
        batch_size: exemplos por lote.
        mask_prompt: conta só os tokens da resposta (padrão) ou também os do *prompt*.
        precision: ``"fp32"`` ou ``"bf16"`` (*autocast*).
        max_length: como em ``collate_instructions``.

    Returns:
        A perda média (``float``); a perplexidade é ``math.exp`` dela.

    Raises:
        ValueError: conjunto vazio ou ``batch_size`` < 1.
    """
    if len(items) == 0:
        raise ValueError("evaluate_instructions: o conjunto está vazio.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size deve ser um inteiro >= 1; recebi {batch_size!r}.")
    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, len(order), batch_size):
            batch = [items[i] for i in order[start : start + batch_size]]
            inputs, targets = collate_instructions(batch, mask_prompt=mask_prompt, max_length=max_length)
            with autocast(precision, device):
                total += float(instruction_loss(model, inputs.to(device), targets.to(device), reduction="sum"))
            count += int((targets != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    return total / count


# ----------------------------------------------------------------------------- o laço
def train_instructions(
    model: nn.Module,
    train_items: Sequence[tuple[Sequence[int], int]],
    val_items: Sequence[tuple[Sequence[int], int]] | None,
    cfg: Any,
    *,
    mask_prompt: bool = True,
    max_length: int | None = None,
    progress: bool = True,
    verbose: bool = True,
    loss_fn: Callable[[nn.Module, Sequence[Any]], Tensor] | None = None,
) -> dict[str, list]:
    """Treina os parâmetros treináveis do modelo (os da LoRA) nos exemplos (cap. 6).

    O mesmo passo do cap. 5 — perda, retropropagação, corte da norma do gradiente,
    AdamW com aquecimento e cosseno —, mas com lotes de tamanhos variáveis montados por
    ``collate_instructions``. O lote do passo ``s`` é ``batch_indices(n, B, seed, s)``:
    reprodutível e sem repetir exemplos dentro de uma época.

    Args:
        model: o modelo, com LoRA aplicada (só os parâmetros com ``requires_grad`` treinam).
        train_items: pares ``(ids, prompt_len)`` de treino.
        val_items: os de validação (ou ``None``).
        cfg: um ``companion.train.TrainConfig`` (usa ``steps``, ``batch_size``, ``lr``,
            ``min_lr``, ``warmup_steps``, ``weight_decay``, ``grad_clip``,
            ``eval_interval``, ``precision`` e ``seed``).
        mask_prompt: ignora os alvos do *prompt* no treino.
        max_length: corta sequências longas.
        progress: barra de progresso (``tqdm.auto``).
        verbose: imprime uma linha a cada avaliação.
        loss_fn: outra perda ``loss_fn(model, exemplos_do_lote)`` (o DPO usa este laço);
            com ela, ``val_items`` não é avaliado pela perda de instruções.

    Returns:
        Histórico: ``step``, ``val_loss`` (por avaliação) e ``step_loss``, ``lr`` (por passo).

    Raises:
        TypeError: ``cfg`` não é ``TrainConfig``.
        ValueError: modelo sem parâmetros treináveis ou poucos exemplos para um lote.
    """
    from tqdm.auto import tqdm

    from companion.train import EpochPermutations, batch_indices, lr_at, make_optimizer

    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg deve ser um companion.train.TrainConfig; recebi {type(cfg).__name__}.")
    defaults = TrainConfig()
    ignored = [name for name in IGNORED_TRAIN_FIELDS if getattr(cfg, name) != getattr(defaults, name)]
    if ignored:
        raise ValueError(
            f"train_instructions não usa {', '.join(ignored)} do TrainConfig (o laço não acumula gradientes e "
            "avalia a validação inteira); deixe esses campos no padrão."
        )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("o modelo não tem parâmetros treináveis: aplique a LoRA antes (apply_lora).")
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, cfg)
    permutations = EpochPermutations(len(train_items), cfg.seed)
    batch_indices(len(train_items), cfg.batch_size, cfg.seed, 0, permutations)  # confere o tamanho já
    history: dict[str, list] = {"step": [], "val_loss": [], "step_loss": [], "lr": []}

    def run_eval(step: int) -> None:
        if val_items is None or loss_fn is not None:
            return
        val = evaluate_instructions(model, val_items, cfg.batch_size, True, cfg.precision, max_length)
        history["step"].append(step)
        history["val_loss"].append(val)
        if verbose:
            message = f"passo {step:>4} | perda de validação {num(val, 4)} (perplexidade {num(math.exp(val), 2)})"
            (bar.write if progress else print)(message)

    bar = tqdm(total=cfg.steps, disable=not progress, desc="ajuste", unit="passo")
    model.train()
    with torch.random.fork_rng(devices=[]):
        for step in range(cfg.steps):
            if step % cfg.eval_interval == 0:
                run_eval(step)
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # o dropout da LoRA depende só de (seed, passo)
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            idx = batch_indices(len(train_items), cfg.batch_size, cfg.seed, step, permutations).tolist()
            batch = [train_items[i] for i in idx]
            with autocast(cfg.precision, device):
                if loss_fn is None:
                    inputs, targets = collate_instructions(batch, mask_prompt=mask_prompt, max_length=max_length)
                    loss = instruction_loss(model, inputs.to(device), targets.to(device))
                else:
                    loss = loss_fn(model, batch)
            loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            history["step_loss"].append(loss.item())
            history["lr"].append(lr)
            bar.update(1)
            bar.set_postfix(perda=f"{num(history['step_loss'][-1], 3)}", refresh=False)
        run_eval(cfg.steps)
    bar.close()
    model.eval()
    return history


# ----------------------------------------------------------------------------- gerar
@torch.no_grad()
def generate_response(
    model: nn.Module,
    tokenizer: Any,
    entry: Mapping[str, str] | str,
    max_new_tokens: int = 64,
) -> str:
    """A resposta do modelo (gulosa) a uma instrução, no molde Alpaca.

    Args:
        model: o ``CausalLM`` (SmolLM2 ou Gemma 3, com ou sem adaptador).
        tokenizer: o tokenizador do modelo.
        entry: ``{"instrucao": ..., "entrada": ...}`` ou só o texto da instrução.
        max_new_tokens: limite da resposta.

    Returns:
        O texto gerado até o fim de texto (ou até o limite), sem espaços nas pontas.
    """
    from companion.generation import generate

    if isinstance(entry, str):
        entry = {"instrucao": entry, "entrada": ""}
    codec = text_codec(tokenizer)
    ids = codec.document(format_prompt(entry))
    device = next(model.parameters()).device
    out = generate(model, torch.tensor([ids], device=device), max_new_tokens, eos_id=list(codec.stop_ids))  # (1, T + n)
    text = codec.decode(out[0, len(ids) :].tolist())
    return text.split(f"\n{INSTRUCTION_HEADER}")[0].strip()  # um modelo sem ajuste às vezes inventa outra instrução

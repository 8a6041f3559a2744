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
   da LoRA; *autocast* em bf16 opcional), que reaproveita ``TrainConfig``, ``lr_at``,
   ``make_optimizer`` e ``batch_indices`` do cap. 5;
6. ``generate_response`` — a resposta do modelo a uma instrução;
7. a tarefa ``python -m companion finetune instruct`` (``FINETUNE_HELP``,
   ``add_finetune_arguments``, ``run_finetune``), que treina a LoRA no SmolLM2 e grava
   só o adaptador (alguns MB) e um ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.lora import LoRAConfig
from companion.train import TrainConfig

__all__ = [
    "PROMPT_PREAMBLE",
    "RESPONSE_HEADER",
    "IGNORE_INDEX",
    "SPLITS",
    "format_prompt",
    "format_example",
    "load_jsonl_split",
    "load_instructions",
    "encode_instructions",
    "collate_instructions",
    "instruction_loss",
    "evaluate_instructions",
    "train_instructions",
    "generate_response",
    "FINETUNE_HELP",
    "add_finetune_arguments",
    "run_finetune",
]

PROMPT_PREAMBLE = (
    "Abaixo está uma instrução que descreve uma tarefa. Escreva uma resposta que complete o pedido de forma adequada."
)
INSTRUCTION_HEADER = "### Instrução:"
INPUT_HEADER = "### Entrada:"
RESPONSE_HEADER = "### Resposta:"
IGNORE_INDEX = -100  # o ignore_index padrão de F.cross_entropy
SPLITS = ("treino", "validacao", "teste")
EOS_TOKEN = "<|endoftext|>"  # o fim de texto do SmolLM2 (ID 0): a resposta termina nele

INSTRUCTIONS_ASSET = "finetune/instrucoes.jsonl"


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
def load_jsonl_split(asset: str, split: str | None = None) -> list[dict[str, str]]:
    """Lê um JSONL do curso (conferido por sha256) e filtra pela chave ``"divisao"``.

    Args:
        asset: caminho relativo a ``companion/assets`` (ex.: ``"finetune/instrucoes.jsonl"``).
        split: ``"treino"``, ``"validacao"``, ``"teste"`` ou ``None`` (todos).

    Returns:
        Os registros, na ordem do arquivo.

    Raises:
        ValueError: divisão desconhecida.
    """
    from companion.assets import asset_path

    if split is not None and split not in SPLITS:
        raise ValueError(f"divisão desconhecida: {split!r}; use uma de {list(SPLITS)} ou None (todas).")
    rows = []
    with open(asset_path(asset), encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                rows.append(json.loads(line))
    return [r for r in rows if split is None or r.get("divisao") == split]


def load_instructions(split: str | None = None) -> list[dict[str, str]]:
    """Os exemplos de instrução do curso (``instrucao``, ``entrada``, ``saida``, ``divisao``).

    Args:
        split: ``"treino"``, ``"validacao"``, ``"teste"`` ou ``None`` (todos).
    """
    return load_jsonl_split(INSTRUCTIONS_ASSET, split)


def encode_instructions(
    entries: Sequence[Mapping[str, str]],
    tokenizer: Any,
    eos_id: int | None = None,
) -> list[tuple[list[int], int]]:
    """Codifica cada exemplo como ``(ids, tamanho_do_prompt)``.

    ``ids`` = tokens do *prompt* + tokens da resposta + ``eos_id`` (o modelo aprende a
    parar). O *prompt* e a resposta são codificados separadamente, para que a fronteira
    entre eles caia exatamente entre dois tokens.

    Args:
        entries: exemplos com ``instrucao``, ``entrada`` e ``saida``.
        tokenizer: um ``tiktoken.Encoding`` (o do SmolLM2).
        eos_id: o token de fim (padrão: o ID de ``<|endoftext|>`` do tokenizador).

    Returns:
        Lista de pares ``(ids, prompt_len)``.
    """
    if eos_id is None:
        eos_id = tokenizer.encode_single_token(EOS_TOKEN)
    items = []
    for entry in entries:
        _check_entry(entry, ("instrucao", "saida"))
        prompt = tokenizer.encode(format_prompt(entry), disallowed_special=())
        answer = tokenizer.encode(entry["saida"].strip(), disallowed_special=())
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
            ``[0, len(ids)]`` ou ``max_length`` < 1.
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


# ----------------------------------------------------------------------------- a perda
def instruction_loss(model: nn.Module, inputs: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Entropia cruzada dos *logits* contra os alvos, pulando os ``-100``.

    Args:
        model: o modelo de linguagem (``(B, T)`` -> ``(B, T, V)``).
        inputs, targets: de ``collate_instructions``.
        reduction: ``"mean"`` (média por alvo que conta) ou ``"sum"``.

    Returns:
        Escalar.
    """
    logits = model(inputs)  # (B, T, V)
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction
    )  # (B*T, V) contra (B*T,)


@torch.no_grad()
def evaluate_instructions(
    model: nn.Module,
    items: Sequence[tuple[Sequence[int], int]],
    batch_size: int = 8,
    mask_prompt: bool = True,
    bf16: bool = False,
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
        bf16: *autocast* em bf16.
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
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
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
            ``eval_interval``, ``bf16`` e ``seed``).
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

    from companion.train import TrainConfig, _Permutations, batch_indices, lr_at, make_optimizer

    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg deve ser um companion.train.TrainConfig; recebi {type(cfg).__name__}.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("o modelo não tem parâmetros treináveis: aplique a LoRA antes (apply_lora).")
    device = next(model.parameters()).device
    optimizer = make_optimizer(model, cfg)
    permutations = _Permutations(len(train_items), cfg.seed)
    batch_indices(len(train_items), cfg.batch_size, cfg.seed, 0, permutations)  # confere o tamanho já
    history: dict[str, list] = {"step": [], "val_loss": [], "step_loss": [], "lr": []}

    def run_eval(step: int) -> None:
        if val_items is None or loss_fn is not None:
            return
        val = evaluate_instructions(model, val_items, cfg.batch_size, True, cfg.bf16, max_length)
        history["step"].append(step)
        history["val_loss"].append(val)
        if verbose:
            message = f"passo {step:>4} | perda de validação {val:.4f} (perplexidade {math.exp(val):.2f})"
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
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
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
            bar.set_postfix(perda=f"{history['step_loss'][-1]:.3f}", refresh=False)
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
        model: um ``LlamaModel`` (com ou sem adaptador).
        tokenizer: o ``tiktoken.Encoding`` do SmolLM2.
        entry: ``{"instrucao": ..., "entrada": ...}`` ou só o texto da instrução.
        max_new_tokens: limite da resposta.

    Returns:
        O texto gerado até o fim de texto (ou até o limite), sem espaços nas pontas.
    """
    from companion.llama import generate_llama

    if isinstance(entry, str):
        entry = {"instrucao": entry, "entrada": ""}
    ids = tokenizer.encode(format_prompt(entry), disallowed_special=())
    specials = tokenizer.special_tokens_set
    stop = [tokenizer.encode_single_token(t) for t in (EOS_TOKEN, "<|im_end|>") if t in specials]
    device = next(model.parameters()).device
    out = generate_llama(model, torch.tensor([ids], device=device), max_new_tokens, eos_id=stop)  # (1, T + n)
    new = [t for t in out[0, len(ids) :].tolist() if t not in stop]
    text = tokenizer.decode(new)
    return text.split(f"\n{INSTRUCTION_HEADER}")[0].strip()  # um modelo sem ajuste às vezes inventa outra instrução


# ----------------------------------------------------------------------------- linha de comando
FINETUNE_HELP = "ajuste fino por instruções do SmolLM2 com LoRA; grava só o adaptador (cap. 6)"

DEFAULT_STEPS = 150


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    """Opções de ``python -m companion finetune instruct``."""
    parser.add_argument("--out", required=True, help="pasta de saída (adapter.safetensors e metrics.json)")
    add_lora_training_arguments(parser, steps=DEFAULT_STEPS, batch_size=8, unit="exemplos", lr=1e-3, dropout=0.05)
    parser.add_argument("--no-mask-prompt", action="store_true",
                        help="treina também nos tokens do prompt (por padrão só a resposta conta)")
    parser.add_argument("--eval-interval", type=int, default=40, help="avalia a cada N passos (padrão 40)")


def add_lora_training_arguments(
    parser: argparse.ArgumentParser, *, steps: int, batch_size: int, unit: str, lr: float, dropout: float
) -> None:
    """As opções comuns aos ajustes com LoRA (``finetune instruct`` e ``finetune dpo``).

    Cada tarefa passa os seus padrões; ``unit`` diz o que vai num lote ("exemplos", "pares").
    Leia as opções de volta com ``lora_training_configs``.
    """
    parser.add_argument("--steps", type=int, default=steps, help=f"passos de otimização (padrão {steps})")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"{unit} por lote (padrão {batch_size})")
    parser.add_argument("--lr", type=float, default=lr, help=f"taxa de aprendizado máxima (padrão {lr:g})")
    parser.add_argument("--warmup-steps", type=int, default=10, help="passos de aquecimento (padrão 10)")
    parser.add_argument("--rank", type=int, default=8, help="posto r da LoRA (padrão 8)")
    parser.add_argument("--alpha", type=float, default=16.0, help="alpha da LoRA (padrão 16)")
    parser.add_argument("--dropout", type=float, default=dropout, help=f"dropout da LoRA (padrão {dropout:g})")
    parser.add_argument("--targets", default="q_proj,v_proj",
                        help="camadas adaptadas, separadas por vírgula (padrão q_proj,v_proj)")
    parser.add_argument("--max-length", type=int, default=256, help="corta exemplos com mais tokens (padrão 256)")
    parser.add_argument("--no-bf16", action="store_true", help="treina em float32 puro (sem autocast bf16)")
    parser.add_argument("--seed", type=int, default=123, help="semente (padrão 123)")
    parser.add_argument("--threads", type=int, default=1, help="threads do PyTorch (padrão 1)")
    parser.add_argument("--limit", type=int, default=None, help=f"usa só os N primeiros {unit} de cada divisão (testes)")
    parser.add_argument("--examples", type=int, default=4, help="respostas de teste guardadas no metrics.json (padrão 4)")
    parser.add_argument("--no-progress", action="store_true", help="sem barra de progresso")


def lora_training_configs(args: argparse.Namespace, eval_interval: int) -> tuple[LoRAConfig, TrainConfig]:
    """Confere as opções de ``add_lora_training_arguments`` e monta ``(LoRAConfig, TrainConfig)``.

    Também recusa uma pasta ``--out`` que já tem um adaptador (nada é sobrescrito).

    Raises:
        FileExistsError: ``--out`` já tem ``adapter.safetensors``.
        ValueError: ``--limit`` ou ``--threads`` < 1, ou valores que as configurações recusam.
    """
    out = Path(args.out)
    if (out / "adapter.safetensors").exists():
        raise FileExistsError(f"já existe um adaptador em {out}; escolha outra pasta com --out.")
    lora_cfg = LoRAConfig(r=args.rank, alpha=args.alpha, dropout=args.dropout, targets=_parse_targets(args.targets))
    train_cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        weight_decay=0.0, grad_clip=1.0, eval_interval=eval_interval, bf16=not args.no_bf16, seed=args.seed,
    )
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit deve ser >= 1; recebi {args.limit}.")
    if args.threads < 1:
        raise ValueError(f"--threads deve ser >= 1; recebi {args.threads}.")
    return lora_cfg, train_cfg


def _parse_targets(text: str) -> tuple[str, ...]:
    targets = tuple(t.strip() for t in text.split(",") if t.strip())
    if not targets:
        raise ValueError(f"--targets precisa de ao menos um nome de camada; recebi {text!r}.")
    return targets


def _load_base(threads: int) -> tuple[nn.Module, Any]:
    from companion.pretrained import load_smollm2

    torch.set_num_threads(threads)
    return load_smollm2(torch.float32)


def _sample_answers(model: nn.Module, tokenizer: Any, entries: Sequence[Mapping[str, str]], max_new_tokens: int = 48) -> list[str]:
    return [generate_response(model, tokenizer, e, max_new_tokens) for e in entries]


def run_finetune(args: argparse.Namespace) -> int:
    """Executa ``python -m companion finetune instruct`` (veja ``add_finetune_arguments``)."""
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as error:
        print(f"erro: {error}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from companion.checkpoint import atomic_write_json
    from companion.lora import apply_lora, count_parameters, save_lora_adapter

    out = Path(args.out)
    lora_cfg, train_cfg = lora_training_configs(args, args.eval_interval)
    mask_prompt = not args.no_mask_prompt
    began = time.perf_counter()
    model, tokenizer = _load_base(args.threads)
    splits = {s: load_instructions(s)[: args.limit] for s in SPLITS}
    items = {s: encode_instructions(rows, tokenizer) for s, rows in splits.items()}
    print(
        f"instruções: {len(items['treino'])} de treino, {len(items['validacao'])} de validação, "
        f"{len(items['teste'])} de teste | prompt mascarado: {'sim' if mask_prompt else 'não'}"
    )
    shown = splits["teste"][: args.examples]

    def measure() -> dict[str, float]:
        return {
            s: evaluate_instructions(model, items[s], args.batch_size, True, train_cfg.bf16, args.max_length)
            for s in ("validacao", "teste")
        }

    before = measure()
    answers_before = _sample_answers(model, tokenizer, shown)
    print(f"antes:  perda de validação {before['validacao']:.4f} | de teste {before['teste']:.4f}")

    torch.manual_seed(args.seed)  # o sorteio de A da LoRA
    apply_lora(model, lora_cfg.targets, lora_cfg.r, lora_cfg.alpha, lora_cfg.dropout)
    trainable, total = count_parameters(model)
    counts = f"{trainable:,} parâmetros treináveis de {total:,}".replace(",", ".")
    print(f"LoRA r={lora_cfg.r}, alpha={lora_cfg.alpha:g} em {', '.join(lora_cfg.targets)}: "
          f"{counts} ({100 * trainable / total:.2f}%)")
    train_began = time.perf_counter()
    history = train_instructions(
        model, items["treino"], items["validacao"], train_cfg, mask_prompt=mask_prompt,
        max_length=args.max_length, progress=not args.no_progress,
    )
    train_seconds = time.perf_counter() - train_began
    after = measure()
    answers_after = _sample_answers(model, tokenizer, shown)
    print(f"depois: perda de validação {after['validacao']:.4f} | de teste {after['teste']:.4f}")

    command = command_line("instruct", args)
    info = {"task": "instruct", "seed": args.seed, "mask_prompt": mask_prompt, "steps": args.steps,
            "data_sha256": _asset_sha256(INSTRUCTIONS_ASSET)}
    file = save_lora_adapter(out, model, lora_cfg, **info)
    metrics = {
        "task": "instruct",
        "command": command,
        "seed": args.seed,
        "lora": lora_cfg.to_dict(),
        "train": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": args.warmup_steps,
                  "bf16": train_cfg.bf16, "mask_prompt": mask_prompt, "max_length": args.max_length,
                  "threads": args.threads},
        "data": {"file": INSTRUCTIONS_ASSET, "sha256": info["data_sha256"],
                 "counts": {s: len(v) for s, v in items.items()}},
        "parameters": {"trainable": trainable, "total": total},
        "loss_before": before,
        "loss_after": after,
        "perplexity_before": {s: math.exp(v) for s, v in before.items()},
        "perplexity_after": {s: math.exp(v) for s, v in after.items()},
        "history": history,
        "examples": [
            {"instrucao": e["instrucao"], "entrada": e.get("entrada", ""), "esperado": e["saida"],
             "antes": a, "depois": b}
            for e, a, b in zip(shown, answers_before, answers_after)
        ],
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - began, 1),
        "adapter_bytes": file.stat().st_size,
    }
    atomic_write_json(out / "metrics.json", metrics)
    print(f"treino em {train_seconds:.0f} s; adaptador de {file.stat().st_size / 1e6:.2f} MB gravado em {file}")
    return 0


def command_line(task: str, args: argparse.Namespace) -> str:
    """O comando completo (todas as opções explícitas) que reproduz um ajuste: vai para o metrics.json."""
    import shlex

    parts = ["python", "-m", "companion", "finetune", task]
    for name, value in vars(args).items():
        if name in ("handler", "task", "command") or value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


def _asset_sha256(name: str) -> str:
    from companion.assets import asset_path, sha256_of

    return sha256_of(asset_path(name))

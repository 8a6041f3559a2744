"""``python -m companion finetune TAREFA``: o ajuste fino de um modelo pré-treinado nos dados do curso (cap. 6).

O modelo é escolhido com ``--model``: ``gemma3-270m`` (o padrão, o do livro) ou ``smollm2``.

Três tarefas, cada uma com as suas opções e uma função ``_run_<tarefa>`` que chama a
biblioteca (``companion.classifier``, ``companion.instruct``, ``companion.dpo``) e grava
um artefato pequeno com as métricas:

- ``classify``: o classificador de golpes (só os pesos treinados);
- ``instruct``: o ajuste por instruções com LoRA (só o adaptador);
- ``dpo``: o alinhamento por preferências, por cima do adaptador de instruções.
"""

from __future__ import annotations

import argparse
import math
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from companion._checks import check_int, check_number
from companion.assets import asset_path, sha256_of
from companion.cli.common import add_runtime_options, start
from companion.lora import LoRAConfig
from companion.numbers import num, pct
from companion.train import TrainConfig

__all__ = ["add_command"]

PRETRAINED_NAMES = ("gemma3-270m", "smollm2")  # as chaves de companion.pretrained.PRETRAINED_MODELS
# o adaptador de instruções publicado com o curso, ponto de partida da DPO (só o do Gemma 3 é publicado)
SFT_ARTIFACTS = {"gemma3-270m": "gemma-instrucoes-lora"}


# ----------------------------------------------------------------------------- finetune classify
def _classify_arguments(parser: argparse.ArgumentParser) -> None:
    """Opções de ``python -m companion finetune classify``."""
    from companion.classifier import PROMPT_FORMATS, SCHEDULES, ClassifierConfig
    from companion.probe import ProbeConfig

    defaults = ClassifierConfig()
    probe_defaults = ProbeConfig()
    parser.add_argument("--out", required=True,
                        help="pasta de saída (gemma3-270m: sonda.safetensors + sonda.json; smollm2: "
                             "classificador.safetensors + classificador.json)")
    parser.add_argument("--model", choices=PRETRAINED_NAMES, default="gemma3-270m",
                        help="gemma3-270m (padrão): sonda linear sobre o Gemma 3 congelado; smollm2: o último "
                             "bloco do SmolLM2 + uma cabeça nova, ajustados")
    parser.add_argument("--layers", default=",".join(map(str, probe_defaults.layers)),
                        help="só gemma3-270m: blocos cujas médias formam o vetor da mensagem "
                             f"(padrão {','.join(map(str, probe_defaults.layers))})")
    parser.add_argument("--hidden", type=int, default=probe_defaults.hidden,
                        help=f"só gemma3-270m: neurônios da camada escondida da sonda, 0 = linear (padrão {probe_defaults.hidden})")
    parser.add_argument("--probe-dropout", type=float, default=probe_defaults.dropout,
                        help=f"só gemma3-270m: dropout nos vetores durante o treino da sonda (padrão {probe_defaults.dropout:g})")
    parser.add_argument("--probe-steps", type=int, default=probe_defaults.steps,
                        help=f"só gemma3-270m: passos da regressão logística (padrão {probe_defaults.steps})")
    parser.add_argument("--probe-lr", type=float, default=probe_defaults.lr,
                        help=f"só gemma3-270m: taxa de aprendizado da sonda (padrão {probe_defaults.lr:g})")
    parser.add_argument("--probe-weight-decay", type=float, default=probe_defaults.weight_decay,
                        help=f"só gemma3-270m: decaimento de peso da sonda (padrão {probe_defaults.weight_decay:g})")
    parser.add_argument("--data", default=None, help="outro JSONL no formato de mensagens.jsonl (padrão: o do pacote)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"épocas (padrão {defaults.epochs})")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"mensagens por lote (padrão {defaults.batch_size})")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"taxa do bloco e da norma (padrão {defaults.lr:g})")
    parser.add_argument("--head-lr", type=float, default=defaults.head_lr, help=f"taxa da cabeça nova (padrão {defaults.head_lr:g})")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help=f"decaimento de peso (padrão {defaults.weight_decay:g})")
    parser.add_argument("--trainable-blocks", type=int, default=defaults.trainable_blocks, help="blocos do topo a treinar (padrão 1)")
    parser.add_argument("--max-length", type=int, default=defaults.max_length, help=f"tokens por mensagem (padrão {defaults.max_length})")
    parser.add_argument("--prompt-format", choices=PROMPT_FORMATS, default=defaults.prompt_format,
                        help=f"a mensagem dentro do molde de conversa, com uma pergunta, ou sozinha (padrão {defaults.prompt_format})")
    parser.add_argument("--max-steps", type=int, default=None, help="para depois de N passos (padrão: todas as épocas)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"semente (padrão {defaults.seed})")
    parser.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                        help=f"taxa de aprendizado: aquecimento + cosseno ou constante (padrão {defaults.schedule})")
    parser.add_argument("--warmup-fraction", type=float, default=defaults.warmup_fraction,
                        help=f"fração dos passos com aquecimento (padrão {defaults.warmup_fraction:g})")
    parser.add_argument("--no-keep-best", action="store_true",
                        help="termina com os pesos da última época (padrão: os da melhor época de validação)")
    parser.add_argument("--train-on-validation", action="store_true",
                        help="reajuste final: treina com treino + validação, depois que a validação já escolheu a "
                             "configuração; sem validação separada, ficam os pesos da última época")
    parser.add_argument("--limit", type=int, default=None, help="usa só as N primeiras mensagens de cada divisão (testes rápidos)")
    parser.add_argument("--float32", action="store_true", help="grava os pesos em float32 (padrão: bfloat16, metade do tamanho)")
    parser.add_argument("--no-progress", action="store_true", help="sem barras de progresso")


def _run_classify(args: argparse.Namespace) -> int:
    """``finetune classify``: treina, mede e grava o classificador (sonda no Gemma, bloco no SmolLM2)."""
    # Os números valem para os dois modelos: um erro de digitação aparece antes de carregar qualquer coisa.
    check_int("--epochs", args.epochs, 1)
    check_int("--batch-size", args.batch_size, 1)
    check_int("--max-length", args.max_length, 1)
    if args.limit is not None:
        check_int("--limit", args.limit, 1)
    if args.model == "gemma3-270m":
        return _run_classify_probe(args)
    from companion.classifier import (
        LABELS,
        SPLITS,
        WEIGHTS_FILE,
        ClassifierConfig,
        SpamClassifier,
        accuracy,
        compute_prefix_features,
        confusion_matrix,
        encode_messages,
        load_messages,
        predict_from_features,
        round_trainable_,
        save_classifier,
        split_messages,
        train_classifier,
    )
    from companion.pretrained import load_smollm2

    started = time.perf_counter()
    runtime = start(args)
    cfg = ClassifierConfig(
        trainable_blocks=args.trainable_blocks, max_length=args.max_length, batch_size=args.batch_size,
        epochs=args.epochs, lr=args.lr, head_lr=args.head_lr, weight_decay=args.weight_decay,
        seed=args.seed, max_steps=args.max_steps, schedule=args.schedule,
        warmup_fraction=args.warmup_fraction, keep_best=not args.no_keep_best, prompt_format=args.prompt_format,
    )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} existe e não é uma pasta.")
    refit = args.train_on_validation
    data = split_messages(load_messages(path=args.data), args.limit)
    counts = {split: len(items) for split, items in data.items()}
    print(f"mensagens: {counts['treino']} de treino, {counts['validacao']} de validação, {counts['teste']} de teste")
    if refit:
        if not data["validacao"]:
            raise ValueError("--train-on-validation pede mensagens com divisao='validacao'; os dados não têm nenhuma.")
        print(f"reajuste final: o treino usa treino + validação ({counts['treino'] + counts['validacao']} mensagens); "
              "ficam os pesos da última época")

    llama, tokenizer = load_smollm2()
    llama.to(runtime.device)
    torch.manual_seed(cfg.seed)
    model = SpamClassifier(llama, trainable_blocks=cfg.trainable_blocks, prompt_format=cfg.prompt_format)
    counts_p = model.parameter_counts()
    print(f"parâmetros: {num(counts_p['treinaveis'])} treináveis e {num(counts_p['congelados'])} congelados")

    features, labels = {}, {}
    for split, items in data.items():
        ids = encode_messages(tokenizer, [r["texto"] for r in items], cfg.max_length, cfg.prompt_format)
        features[split] = compute_prefix_features(model, ids, cfg.batch_size, progress=not args.no_progress)
        labels[split] = torch.tensor([LABELS.index(r["rotulo"]) for r in items])
    prefix_seconds = time.perf_counter() - started

    if refit:  # a validação vira treino: nada de keep_best, nada de métrica de validação
        features["treino"] = features["treino"] + features.pop("validacao")
        labels["treino"] = torch.cat([labels["treino"], labels.pop("validacao")])
        features["validacao"], labels["validacao"] = [], torch.zeros(0, dtype=torch.long)
    has_val = bool(features["validacao"])
    history = train_classifier(
        model, features["treino"], labels["treino"], cfg,
        features["validacao"] if has_val else None, labels["validacao"] if has_val else None,
        progress=not args.no_progress, log=print,
    )
    if history["best_epoch"] is not None:
        print(f"ficam os pesos da época {history['best_epoch']}, a melhor na validação")
    weights_dtype = torch.float32 if args.float32 else torch.bfloat16
    round_trainable_(model, weights_dtype)  # as métricas são as dos pesos como gravados

    metrics: dict[str, Any] = {}
    for split in SPLITS:
        if not features[split]:
            continue
        preds = predict_from_features(model, features[split]).argmax(-1)
        metrics[split] = {
            "accuracy": round(accuracy(preds, labels[split]), 4),
            "confusion_matrix": confusion_matrix(preds, labels[split]).tolist(),
            "n": len(features[split]),
        }
    seconds = time.perf_counter() - started
    metrics["history"] = {"step_loss": [round(v, 4) for v in history["loss"]],
                          "val_accuracy_per_epoch": [round(v, 4) for v in history["val_accuracy"]],
                          "val_loss_per_epoch": [round(v, 4) for v in history["val_loss"]],
                          "best_epoch": history["best_epoch"]}
    metrics["train_splits"] = ["treino", "validacao"] if refit else ["treino"]
    metrics["seconds"] = {"total": round(seconds, 1), "prefix": round(prefix_seconds, 1)}
    metrics["threads"] = runtime.threads
    save_classifier(out, model, cfg, metrics, weights_dtype)
    for split in SPLITS:
        if split in metrics:
            print(f"acurácia de {split}: {pct(metrics[split]['accuracy'], 2)} ({metrics[split]['n']} mensagens)")
    print(f"gravado em {out}/ ({WEIGHTS_FILE}: {num((out / WEIGHTS_FILE).stat().st_size / 1e6, 1)} MB) em {num(seconds)} s")
    return 0



def _parse_layers(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"--layers deve ser uma lista de blocos separados por vírgula, como 6,9,12; recebi {text!r}.") from None
    if not layers:
        raise ValueError(f"--layers precisa de ao menos um bloco; recebi {text!r}.")
    return layers


def _run_classify_probe(args: argparse.Namespace) -> int:
    """``finetune classify --model gemma3-270m``: a sonda linear sobre o Gemma 3 congelado."""
    from companion.classifier import LABELS, SPLITS, accuracy, confusion_matrix, load_messages, split_messages
    from companion.probe import PROBE_WEIGHTS_FILE, ProbeConfig, message_features, save_probe, train_probe
    from companion.pretrained import load_pretrained

    started = time.perf_counter()
    runtime = start(args)
    cfg = ProbeConfig(layers=_parse_layers(args.layers), hidden=args.hidden, dropout=args.probe_dropout,
                      max_length=args.max_length, batch_size=args.batch_size,
                      steps=args.probe_steps, lr=args.probe_lr, weight_decay=args.probe_weight_decay, seed=args.seed)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} existe e não é uma pasta.")
    data = split_messages(load_messages(path=args.data), args.limit)
    print(f"mensagens: {len(data['treino'])} de treino, {len(data['validacao'])} de validação, "
          f"{len(data['teste'])} de teste")
    if args.train_on_validation and not data["validacao"]:
        raise ValueError("--train-on-validation pede mensagens com divisao='validacao'; os dados não têm nenhuma.")
    model, tokenizer = load_pretrained(args.model)
    model.to(runtime.device)
    features, labels = {}, {}
    for split, rows in data.items():
        features[split] = message_features(model, tokenizer, [r["texto"] for r in rows], cfg, progress=not args.no_progress)
        labels[split] = torch.tensor([LABELS.index(r["rotulo"]) for r in rows])
    feature_seconds = time.perf_counter() - started
    train_splits = ["treino", "validacao"] if args.train_on_validation else ["treino"]
    probe, losses = train_probe(torch.cat([features[s] for s in train_splits]),
                                torch.cat([labels[s] for s in train_splits]), cfg, len(LABELS), log=print)
    metrics: dict[str, Any] = {}
    with torch.no_grad():
        for split in SPLITS:
            if split in train_splits[1:] or not len(labels[split]):
                continue
            preds = probe(features[split]).argmax(-1)
            metrics[split] = {"accuracy": round(accuracy(preds, labels[split]), 4),
                              "confusion_matrix": confusion_matrix(preds, labels[split]).tolist(),
                              "n": len(labels[split])}
    seconds = time.perf_counter() - started
    info = {
        "labels": list(LABELS),
        "pretrained": args.model,
        "command": _command_line("classify", args),
        "train_splits": train_splits,
        "data_sha256": sha256_of(Path(args.data) if args.data else asset_path("finetune/mensagens.jsonl")),
        "metrics": {**metrics, "step_loss": [round(v, 5) for v in losses[::10]]},
        "seconds": {"total": round(seconds, 1), "features": round(feature_seconds, 1)},
        "threads": runtime.threads,
    }
    save_probe(out, probe, cfg, info)
    for split, values in metrics.items():
        print(f"acurácia de {split}: {pct(values['accuracy'], 2)} ({values['n']} mensagens)")
    size = (out / PROBE_WEIGHTS_FILE).stat().st_size
    print(f"gravado em {out}/ ({PROBE_WEIGHTS_FILE}: {num(size / 1e3, 1)} KB) em {num(seconds)} s")
    return 0


# ----------------------------------------------------------------------------- opções comuns da LoRA
def _instruct_arguments(parser: argparse.ArgumentParser) -> None:
    """Opções de ``python -m companion finetune instruct``."""
    parser.add_argument("--out", required=True, help="pasta de saída (adapter.safetensors e metrics.json)")
    _lora_arguments(parser, steps=150, batch_size=8, unit="exemplos", lr=1e-3, dropout=0.05)
    parser.add_argument("--no-mask-prompt", action="store_true",
                        help="treina também nos tokens do prompt (por padrão só a resposta conta)")
    parser.add_argument("--eval-interval", type=int, default=40, help="avalia a cada N passos (padrão 40)")


def _lora_arguments(
    parser: argparse.ArgumentParser, *, steps: int, batch_size: int, unit: str, lr: float, dropout: float
) -> None:
    """As opções comuns aos ajustes com LoRA (``finetune instruct`` e ``finetune dpo``).

    Cada tarefa passa os seus padrões; ``unit`` diz o que vai num lote ("exemplos", "pares").
    Leia as opções de volta com ``_lora_configs``.
    """
    parser.add_argument("--model", choices=PRETRAINED_NAMES, default="gemma3-270m",
                        help="o modelo pré-treinado ajustado (padrão gemma3-270m; smollm2 = SmolLM2-135M-Instruct)")
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
    parser.add_argument("--seed", type=int, default=123, help="semente (padrão 123)")
    parser.add_argument("--limit", type=int, default=None, help=f"usa só os N primeiros {unit} de cada divisão (testes)")
    parser.add_argument("--examples", type=int, default=4, help="respostas de teste, espalhadas pela divisão, guardadas no metrics.json (padrão 4)")
    parser.add_argument("--no-progress", action="store_true", help="sem barra de progresso")


def _lora_configs(args: argparse.Namespace, eval_interval: int, precision: str) -> tuple[LoRAConfig, TrainConfig]:
    """Confere as opções de ``_lora_arguments`` e monta ``(LoRAConfig, TrainConfig)``.

    Também recusa uma pasta ``--out`` que já tem um adaptador (nada é sobrescrito).

    Raises:
        FileExistsError: ``--out`` já tem ``adapter.safetensors``.
        ValueError: ``--limit`` < 1, ou valores que as configurações recusam.
    """
    out = Path(args.out)
    if (out / "adapter.safetensors").exists():
        raise FileExistsError(f"já existe um adaptador em {out}; escolha outra pasta com --out.")
    lora_cfg = LoRAConfig(r=args.rank, alpha=args.alpha, dropout=args.dropout, targets=_parse_targets(args.targets))
    train_cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        weight_decay=0.0, grad_clip=1.0, eval_interval=eval_interval, precision=precision, seed=args.seed,
    )
    if args.limit is not None:
        check_int("--limit", args.limit, 1)
    return lora_cfg, train_cfg


def _parse_targets(text: str) -> tuple[str, ...]:
    targets = tuple(t.strip() for t in text.split(",") if t.strip())
    if not targets:
        raise ValueError(f"--targets precisa de ao menos um nome de camada; recebi {text!r}.")
    return targets


def _spread(rows: Sequence[Mapping[str, str]], count: int) -> list[Mapping[str, str]]:
    """``count`` exemplos espalhados pela lista (o teste vem agrupado por tipo de tarefa)."""
    check_int("--examples", count, 0)
    if count == 0 or not rows:
        return []
    step = max(1, len(rows) // count)
    return list(rows[::step][:count])


def _sample_answers(model: nn.Module, tokenizer: Any, entries: Sequence[Mapping[str, str]], max_new_tokens: int = 48) -> list[str]:
    from companion.instruct import generate_response

    return [generate_response(model, tokenizer, e, max_new_tokens) for e in entries]




def _command_line(task: str, args: argparse.Namespace) -> str:
    """O comando completo (todas as opções explícitas) que reproduz um ajuste: vai para o metrics.json."""

    parts = ["python", "-m", "companion", "finetune", task]
    for name, value in vars(args).items():
        if name in ("handler", "task", "command") or value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)



# ----------------------------------------------------------------------------- finetune instruct
def _run_instruct(args: argparse.Namespace) -> int:
    """``finetune instruct``: ajuste por instruções com LoRA; grava o adaptador e as métricas."""
    from companion.checkpoint import atomic_write_json
    from companion.instruct import (
        INSTRUCTIONS_ASSET,
        SPLITS,
        encode_instructions,
        evaluate_instructions,
        load_instructions,
        split_by_length,
        train_instructions,
    )
    from companion.lora import apply_lora, save_lora_adapter
    from companion.model import count_parameters
    from companion.pretrained import load_pretrained

    runtime = start(args)
    out = Path(args.out)
    lora_cfg, train_cfg = _lora_configs(args, args.eval_interval, runtime.precision)
    mask_prompt = not args.no_mask_prompt
    began = time.perf_counter()
    model, tokenizer = load_pretrained(args.model, torch.float32)
    model.to(runtime.device)
    splits = {s: load_instructions(s)[: args.limit] for s in SPLITS}
    items = {s: encode_instructions(rows, tokenizer) for s, rows in splits.items()}
    for split, split_items in items.items():
        items[split], dropped = split_by_length(split_items, args.max_length)
        if dropped:
            print(f"aviso: {len(dropped)} exemplo(s) de {split} têm o prompt maior que --max-length "
                  f"{args.max_length} e ficaram de fora (não sobraria resposta para aprender).")
    print(
        f"instruções: {len(items['treino'])} de treino, {len(items['validacao'])} de validação, "
        f"{len(items['teste'])} de teste | prompt mascarado: {'sim' if mask_prompt else 'não'}"
    )
    shown = _spread(splits["teste"], args.examples)

    def measure() -> dict[str, float]:
        return {
            s: evaluate_instructions(model, items[s], args.batch_size, True, train_cfg.precision, args.max_length)
            for s in ("validacao", "teste")
        }

    before = measure()
    answers_before = _sample_answers(model, tokenizer, shown)
    print(f"antes:  perda de validação {num(before['validacao'], 4)} | de teste {num(before['teste'], 4)}")

    torch.manual_seed(args.seed)  # o sorteio de A da LoRA
    apply_lora(model, lora_cfg.targets, lora_cfg.r, lora_cfg.alpha, lora_cfg.dropout)
    trainable, total = count_parameters(model, trainable_only=True), count_parameters(model)
    counts = f"{num(trainable)} parâmetros treináveis de {num(total)}"
    print(f"LoRA r={lora_cfg.r}, alpha={lora_cfg.alpha:g} em {', '.join(lora_cfg.targets)}: "
          f"{counts} ({num(100 * trainable / total, 2)}%)")
    train_began = time.perf_counter()
    history = train_instructions(
        model, items["treino"], items["validacao"], train_cfg, mask_prompt=mask_prompt,
        max_length=args.max_length, progress=not args.no_progress,
    )
    train_seconds = time.perf_counter() - train_began
    after = measure()
    answers_after = _sample_answers(model, tokenizer, shown)
    print(f"depois: perda de validação {num(after['validacao'], 4)} | de teste {num(after['teste'], 4)}")

    command = _command_line("instruct", args)
    info = {"task": "instruct", "pretrained": args.model, "seed": args.seed, "mask_prompt": mask_prompt, "steps": args.steps,
            "data_sha256": sha256_of(asset_path(INSTRUCTIONS_ASSET))}
    file = save_lora_adapter(out, model, lora_cfg, **info)
    metrics = {
        "task": "instruct",
        "model": args.model,
        "command": command,
        "seed": args.seed,
        "lora": lora_cfg.to_dict(),
        "train": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": args.warmup_steps,
                  "precision": train_cfg.precision, "mask_prompt": mask_prompt, "max_length": args.max_length,
                  "threads": runtime.threads},
        "data": {"file": INSTRUCTIONS_ASSET, "sha256": info["data_sha256"],
                 "counts": {s: len(v) for s, v in items.items()}},
        "parameters": {"trainable": trainable, "total": total},
        "loss_before": before,
        "loss_after": after,
        "perplexity_before": {s: math.exp(v) for s, v in before.items()},
        "perplexity_after": {s: math.exp(v) for s, v in after.items()},
        "history": history,
        "examples": [
            {"instruction": e["instrucao"], "input": e.get("entrada", ""), "expected": e["saida"],
             "before": a, "after": b}
            for e, a, b in zip(shown, answers_before, answers_after)
        ],
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - began, 1),
        "adapter_bytes": file.stat().st_size,
    }
    atomic_write_json(out / "metrics.json", metrics)
    print(f"treino em {num(train_seconds)} s; adaptador de {num(file.stat().st_size / 1e6, 2)} MB gravado em {file}")
    return 0



# ----------------------------------------------------------------------------- finetune dpo
def _dpo_arguments(parser: argparse.ArgumentParser) -> None:
    """Opções de ``python -m companion finetune dpo``."""
    parser.add_argument("--out", required=True, help="pasta de saída (adapter.safetensors e metrics.json)")
    parser.add_argument("--sft-adapter", default=None,
                        help="adaptador do ajuste por instruções, ponto de partida e referência "
                             "(padrão: o do curso, que vem com o pacote)")
    # beta 0,5 e taxa 1e-4: os do adaptador do curso, escolhidos na validação (README de gemma-dpo-lora)
    parser.add_argument("--beta", type=float, default=0.5, help="beta da DPO, a \"coleira\" (padrão 0.5)")
    _lora_arguments(parser, steps=120, batch_size=4, unit="pares", lr=1e-4, dropout=0.0)


def _run_dpo(args: argparse.Namespace) -> int:
    """``finetune dpo``: alinhamento por preferências sobre o adaptador de instruções."""
    from companion.assets import artifact_path
    from companion.checkpoint import atomic_write_json
    from companion.dpo import (
        PREFERENCES_ASSET,
        SPLITS,
        encode_preferences,
        evaluate_dpo,
        load_preferences,
        load_tuned,
        reference_logprobs,
        split_long_pairs,
        train_dpo,
    )
    from companion.instruct import (
        encode_instructions,
        evaluate_instructions,
        generate_response,
        load_instructions,
        split_by_length,
    )
    from companion.lora import (
        adapter_file,
        apply_lora,
        read_adapter_metadata,
        save_lora_adapter,
    )
    from companion.model import count_parameters

    runtime = start(args)
    out = Path(args.out)
    check_number("--beta", args.beta, 0.0, min_open=True)
    if args.sft_adapter is None:
        if args.model not in SFT_ARTIFACTS:
            raise ValueError(f"o curso não publica um adaptador de instruções para --model {args.model}: treine um com "
                             f"'finetune instruct --model {args.model}' e passe a pasta em --sft-adapter.")
        args.sft_adapter = str(artifact_path(SFT_ARTIFACTS[args.model]))
    lora_cfg, train_cfg = _lora_configs(args, args.steps, runtime.precision)
    read_adapter_metadata(args.sft_adapter)  # confere já que o adaptador de instruções existe
    sft_sha = sha256_of(adapter_file(args.sft_adapter))

    began = time.perf_counter()
    model, tokenizer = load_tuned(args.model, [args.sft_adapter])  # a referência: o modelo ajustado, somado
    model.to(runtime.device)
    rows = {s: load_preferences(s)[: args.limit] for s in SPLITS}
    pairs = {s: encode_preferences(r, tokenizer) for s, r in rows.items()}
    for split in pairs:
        pairs[split], dropped = split_long_pairs(pairs[split], args.max_length)
        if dropped:
            print(f"aviso: {dropped} par(es) de {split} passam de --max-length {args.max_length} tokens e ficaram "
                  "de fora (cortar mudaria as log-probabilidades das respostas).")
    instr_test, _ = split_by_length(encode_instructions(load_instructions("teste")[: args.limit], tokenizer),
                                    args.max_length)
    print(f"preferências: {len(pairs['treino'])} pares de treino, {len(pairs['validacao'])} de validação, "
          f"{len(pairs['teste'])} de teste | beta {args.beta:g}")
    precision = train_cfg.precision
    for split_pairs in pairs.values():
        reference_logprobs(model, split_pairs, args.batch_size, precision, args.max_length)

    def measure() -> dict[str, Any]:
        result: dict[str, Any] = {
            s: evaluate_dpo(model, pairs[s], args.beta, args.batch_size, precision, args.max_length) for s in ("validacao", "teste")
        }
        result["instructions_test_loss"] = evaluate_instructions(model, instr_test, 8, True, precision, args.max_length)
        return result

    shown = _spread(rows["teste"], args.examples)
    answers_before = [generate_response(model, tokenizer, e, 64) for e in shown]
    before = measure()
    # fração dos pares em que a referência já acha a escolhida mais provável que a rejeitada
    before["reference_prefers_chosen"] = {
        s: sum(p.ref_chosen > p.ref_rejected for p in pairs[s]) / len(pairs[s]) for s in ("validacao", "teste")
    }
    print(f"antes:  perda DPO de teste {num(before['teste']['loss'], 4)} (log 2) | a referência já prefere a escolhida "
          f"em {num(100 * before['reference_prefers_chosen']['teste'])}% dos pares de teste")

    torch.manual_seed(args.seed)
    apply_lora(model, lora_cfg.targets, lora_cfg.r, lora_cfg.alpha, lora_cfg.dropout)
    trainable, total = count_parameters(model, trainable_only=True), count_parameters(model)
    train_began = time.perf_counter()
    history = train_dpo(model, pairs["treino"], train_cfg, args.beta, max_length=args.max_length,
                        progress=not args.no_progress)
    train_seconds = time.perf_counter() - train_began
    after = measure()
    answers_after = [generate_response(model, tokenizer, e, 64) for e in shown]
    for s in ("validacao", "teste"):
        print(f"depois ({s}): perda DPO {num(after[s]['loss'], 4)} | margem {num(after[s]['margin'], 3)} | "
              f"acurácia das recompensas {num(100 * after[s]['accuracy'], 1)}%")
    print(f"perda nas instruções de teste: {num(before['instructions_test_loss'], 4)} -> {num(after['instructions_test_loss'], 4)}")

    info = {"task": "dpo", "pretrained": args.model, "seed": args.seed, "beta": args.beta, "steps": args.steps,
            "base_adapter": Path(args.sft_adapter).name, "base_adapter_sha256": sft_sha,
            "data_sha256": sha256_of(asset_path(PREFERENCES_ASSET))}
    file = save_lora_adapter(out, model, lora_cfg, **info)
    metrics = {
        "task": "dpo",
        "model": args.model,
        "command": _command_line("dpo", args),
        "seed": args.seed,
        "beta": args.beta,
        "base_adapter": info["base_adapter"],
        "base_adapter_sha256": sft_sha,
        "lora": lora_cfg.to_dict(),
        "train": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "warmup_steps": args.warmup_steps,
                  "precision": precision, "max_length": args.max_length, "threads": runtime.threads},
        "data": {"file": PREFERENCES_ASSET, "sha256": info["data_sha256"], "counts": {s: len(v) for s, v in pairs.items()}},
        "parameters": {"trainable": trainable, "total": total},
        "before": before,
        "after": after,
        "history": history,
        "examples": [
            {"instruction": e["instrucao"], "input": e.get("entrada", ""), "chosen": e["escolhida"],
             "rejected": e["rejeitada"], "before": a, "after": b}
            for e, a, b in zip(shown, answers_before, answers_after)
        ],
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - began, 1),
        "adapter_bytes": file.stat().st_size,
    }
    atomic_write_json(out / "metrics.json", metrics)
    print(f"treino em {num(train_seconds)} s; adaptador de {num(file.stat().st_size / 1e6, 2)} MB gravado em {file}")
    return 0


# ----------------------------------------------------------------------------- o comando
# tarefa -> (ajuda, opções, execução)
TASKS = {
    "classify": ("treina o classificador de golpes (spam/normal): uma sonda sobre o Gemma 3 congelado (ou o bloco do topo do SmolLM2); grava só o que treinou",
                 _classify_arguments, _run_classify),
    "instruct": ("ajuste fino por instruções com LoRA (Gemma 3 ou SmolLM2); grava só o adaptador",
                 _instruct_arguments, _run_instruct),
    "dpo": ("alinhamento por preferências (DPO) sobre o modelo ajustado a instruções; grava só o adaptador",
            _dpo_arguments, _run_dpo),
}


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Registra ``python -m companion finetune classify|instruct|dpo``."""
    parser = subparsers.add_parser(
        "finetune",
        help="ajuste fino do Gemma 3 (ou do SmolLM2) nos dados do curso (cap. 6)",
        description="Ajuste fino do Gemma 3 270M (padrão) ou do SmolLM2-135M-Instruct nos dados em pt-BR do curso.",
    )
    tasks = parser.add_subparsers(dest="task", metavar="TAREFA", required=True, parser_class=type(parser))
    for task, (help_text, add_arguments, handler) in TASKS.items():
        task_parser = tasks.add_parser(task, help=help_text, description=help_text)
        add_arguments(task_parser)
        add_runtime_options(task_parser)
        task_parser.set_defaults(handler=handler)

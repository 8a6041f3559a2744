"""``python -m companion train``: pré-treina um GPT pequeno num arquivo de texto (cap. 5).

Grava a pasta do treino (``companion.runs``); com ``--resume`` continua **exatamente** de
onde parou. Roda também com vários processos:
``torchrun --standalone --nproc_per_node=2 -m companion train ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import torch

from companion.cli.common import add_runtime_options, start
from companion.data import split_datasets
from companion.hardware import describe
from companion.loss import perplexity
from companion.numbers import num
from companion.runs import (
    CHECKPOINT_NAME,
    TOKENIZER_NAME,
    load_run_tokenizer,
    read_text_file,
    save_run,
)
from companion.train import TrainConfig, make_optimizer, new_history, train

__all__ = ["add_command", "run"]

# Opções que podem mudar ao retomar um treino (as outras mudariam o resultado; a precisão
# só muda o arredondamento e depende da máquina em que se retoma).
_RESUMABLE = {"steps", "eval_interval", "eval_batches", "precision"}


def _setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Inicia o ``torch.distributed`` se o processo veio do ``torchrun`` (gloo na CPU, NCCL na GPU)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local_rank)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def _resolve_train_config(args: argparse.Namespace, stored: dict[str, Any] | None, precision: str) -> TrainConfig:
    """Junta as opções da linha de comando com as do treino anterior (ao retomar).

    A precisão vem da partida (``--precision``, resolvida pelo hardware) e pode mudar ao
    retomar: ela não muda o fluxo de lotes, só o arredondamento das contas.
    """
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "precision"]
    given = {name: getattr(args, name) for name in fields if getattr(args, name, None) is not None}
    given["precision"] = precision
    if stored is None:
        return TrainConfig(**given)
    for name, value in given.items():
        if name not in _RESUMABLE and value != stored.get(name):
            raise ValueError(
                f"--{name.replace('_', '-')} {value} difere do treino que você quer retomar "
                f"({stored.get(name)}); ao retomar só podem mudar: "
                f"{', '.join('--' + n.replace('_', '-') for n in sorted(_RESUMABLE - {'precision'}))}. "
                "Para mudar o resto, comece um treino novo em outra pasta."
            )
    return TrainConfig(**{**stored, **given})


def run(args: argparse.Namespace) -> int:
    """``python -m companion train``: pré-treina (ou retoma) e grava a pasta do treino."""
    from companion.checkpoint import load_checkpoint, read_checkpoint_metadata
    from companion.model import GPTConfig, GPTModel
    from companion.tokenizers import BPETokenizer

    runtime = start(args)
    rank, world, device = _setup_distributed(runtime.device)
    try:
        out = Path(args.out)
        checkpoint_path = out / CHECKPOINT_NAME
        data_path = Path(args.data)
        text = read_text_file(data_path)
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
        train_cfg = _resolve_train_config(args, None if stored is None else stored["train"], runtime.precision)

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
            f"treino: {data_path.name} ({num(n_train + n_val)} tokens; {num(n_train)} de treino) | preset "
            f"{options['preset']} ({num(n_params)} parâmetros) | {world} processo(s) | passos {start_step} -> {train_cfg.steps}"
        )
        say(describe(device, train_cfg.precision))

        def on_eval(step: int, hist: dict[str, list]) -> None:
            if args.save_interval and step % args.save_interval == 0 and step not in (0, train_cfg.steps):
                save_run(out, model, optimizer, step, hist, run)

        if start_step >= train_cfg.steps:
            say(f"o treino em {out} já está no passo {start_step} (>= --steps {train_cfg.steps}); nada a fazer.")
            return 0
        began = time.perf_counter()
        history = train(model, train_data, val_data, train_cfg, optimizer=optimizer, start_step=start_step,
                        history=history, progress=not args.no_progress, on_eval=on_eval)
        elapsed = time.perf_counter() - began
        if rank == 0:
            save_run(out, model, optimizer, train_cfg.steps, history, run)
            tokens = (train_cfg.steps - start_step) * train_cfg.batch_size * ctx * train_cfg.grad_accum_steps * world
            say(f"velocidade: {num(tokens / elapsed)} tokens/s em {num(elapsed, 1)} s")
            say(
                f"final: passo {train_cfg.steps} | perda de treino {num(history['train_loss'][-1], 4)} | "
                f"perda de validação {num(history['val_loss'][-1], 4)} | "
                f"perplexidade de validação {num(perplexity(history['val_loss'][-1]), 1)}"
            )
            say(f"gravado em {checkpoint_path}")
        return 0
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Registra ``python -m companion train``."""
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
    parser.add_argument("--context", type=int, default=None, help="tokens por janela (padrão: o do preset)")
    parser.add_argument("--drop-rate", type=float, default=None, help="dropout (padrão: o do preset)")
    parser.add_argument("--tokenizer", choices=["gpt2", "bpe"], default=None,
                        help="gpt2 (50.257 tokens) ou bpe (treinado nos dados; padrão gpt2)")
    parser.add_argument("--vocab-size", type=int, default=None, help="tamanho do vocabulário do BPE (padrão 1024)")
    parser.add_argument("--val-fraction", type=float, default=None, help="fração final do texto para validação (padrão 0.1)")
    parser.add_argument("--save-interval", type=int, default=0, help="grava o checkpoint a cada N passos (0 = só no fim)")
    parser.add_argument("--no-progress", action="store_true", help="sem barra de progresso")
    add_runtime_options(parser)
    parser.set_defaults(handler=run)

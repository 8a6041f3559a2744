"""``python -m companion bench``: tokens por segundo no treino e na geração (cap. 4).

No treino, mede os dois caminhos da perda (*logits* inteiros e em pedaços) com MFU e
pico de memória (apêndice de escala). As medidas em si estão em ``companion.bench``.
"""

from __future__ import annotations

import argparse

from companion import bench
from companion._checks import check_int
from companion.bench import (
    LOSS_PATHS,
    PRETRAINED_MODELS,
    format_table,
    run_benchmark,
    run_pretrained_benchmark,
)
from companion.cli.common import add_runtime_options, start
from companion.model import GPTConfig

__all__ = ["add_command", "run"]


def run(args: argparse.Namespace) -> int:
    """Mede e imprime a tabela."""
    runtime = start(args)
    check_int("--steps", args.steps, 1)
    check_int("--gen-tokens", args.gen_tokens, 1)
    if args.model is not None:
        check_int("--batch-size", args.batch_size, 1)
        result = run_pretrained_benchmark(
            args.model, gen_tokens=args.gen_tokens, steps=args.steps, threads=runtime.threads,
            lora_batch=None if args.no_train else args.batch_size, lora_context=args.context or 128,
            loss_paths=tuple(LOSS_PATHS) if args.loss_path == "both" else (args.loss_path,),
        )
        print(format_table(result))
        return 0
    result = run_benchmark(
        preset=args.preset,
        batch_size=args.batch_size,
        context=args.context,
        steps=args.steps,
        gen_tokens=args.gen_tokens,
        threads=runtime.threads,
        train=not args.no_train,
        gen=not args.no_gen,
        seed=args.seed,
        loss_paths=tuple(LOSS_PATHS) if args.loss_path == "both" else (args.loss_path,),
    )
    print(format_table(result))
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Registra ``python -m companion bench``."""
    parser = subparsers.add_parser(
        "bench",
        help="mede tokens/s do modelo no treino e na geração (com e sem KV cache)",
        description=bench.__doc__.split("\n\n")[0],
    )
    parser.add_argument("--preset", default="curso-medio", choices=list(GPTConfig.PRESETS), help="preset do modelo")
    parser.add_argument("--model", default=None, choices=PRETRAINED_MODELS,
                        help="mede a geração com KV cache e um passo de ajuste com LoRA de um modelo pré-treinado "
                             "de verdade (no lugar do --preset; o passo usa --batch-size x --context, padrão 8 x 128)")
    parser.add_argument("--batch-size", type=int, default=8, help="lote do treino (padrão: 8)")
    parser.add_argument("--context", type=int, default=None, help="tokens por sequência no treino (padrão: do preset)")
    parser.add_argument("--steps", type=int, default=3, help="repetições medidas de cada medida (padrão: 3)")
    parser.add_argument("--gen-tokens", type=int, default=200, help="tokens novos por geração (padrão: 200)")
    parser.add_argument("--seed", type=int, default=0, help="semente (padrão: 0)")
    parser.add_argument("--loss-path", default="both", choices=[*LOSS_PATHS, "both"],
                        help="caminho da perda no treino: full (logits inteiros), chunked (em pedaços) "
                             "ou both (os dois, intercalados; padrão)")
    parser.add_argument("--no-train", action="store_true", help="não mede o treino")
    parser.add_argument("--no-gen", action="store_true", help="não mede a geração")
    add_runtime_options(parser, precision=False)
    parser.set_defaults(handler=run)

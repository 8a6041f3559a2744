"""``python -m companion generate``: continua um texto com um modelo do curso (cap. 5).

Com ``--checkpoint PASTA`` usa o GPT de um treino (``companion.runs.load_trained``); com
``--smollm2`` usa o SmolLM2-135M-Instruct e o formato de conversa dele
(``companion.chat.chat_reply``). A geração é sempre o ``companion.generation.generate``.
"""

from __future__ import annotations

import argparse

import torch

from companion.cli.common import add_runtime_options, start
from companion.generation import check_decoding_args, generate

__all__ = ["add_command", "run"]


def run(args: argparse.Namespace) -> int:
    """Gera e imprime o texto."""
    runtime = start(args)
    if not args.prompt:
        raise ValueError("o --prompt está vazio: escreva o começo do texto que o modelo deve continuar.")
    check_decoding_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                        repetition_penalty=args.repetition_penalty)
    if args.smollm2 == (args.checkpoint is not None):
        raise ValueError("diga de onde vem o modelo: --checkpoint PASTA (de um treino) ou --smollm2 (um dos dois).")

    if args.smollm2:
        from companion.chat import chat_reply
        from companion.pretrained import load_smollm2

        model, tokenizer = load_smollm2(runtime.dtype)
        model.to(runtime.device)
        print(chat_reply(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                         repetition_penalty=args.repetition_penalty))
        return 0

    from companion.runs import load_trained

    model, tokenizer = load_trained(args.checkpoint)
    model.to(runtime.device)
    idx = torch.tensor([tokenizer.encode(args.prompt, allowed_special="all")], dtype=torch.long,
                       device=runtime.device)  # (1, T)
    eot = tokenizer.encode_single_token("<|endoftext|>") if args.stop_at_eos else None
    generator = torch.Generator(device=runtime.device).manual_seed(args.seed)
    out = generate(model, idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, eos_id=eot, generator=generator, repetition_penalty=args.repetition_penalty)
    print(tokenizer.decode(out[0].tolist()))
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Registra ``python -m companion generate``."""
    parser = subparsers.add_parser(
        "generate",
        help="gera texto com um modelo treinado ou com o SmolLM2 (cap. 5)",
        description="Continua um prompt com o modelo de um treino (--checkpoint PASTA) ou com o SmolLM2 (--smollm2).",
    )
    parser.add_argument("--checkpoint", default=None, help="pasta do treino (ou o arquivo checkpoint.safetensors)")
    parser.add_argument("--smollm2", action="store_true", help="usa o SmolLM2-135M-Instruct (conversa em ChatML)")
    parser.add_argument("--prompt", required=True, help="o começo do texto (ou a pergunta, com --smollm2)")
    parser.add_argument("--max-new-tokens", type=int, default=50, help="tokens a gerar (padrão 50)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = gulosa; > 0 = amostragem (padrão 0)")
    parser.add_argument("--top-k", type=int, default=None, help="só os k tokens mais prováveis")
    parser.add_argument("--top-p", type=float, default=None, help="amostragem de núcleo: massa de probabilidade em (0, 1]")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="> 1 desestimula repetir tokens (padrão 1 = desligada)")
    parser.add_argument("--seed", type=int, default=123, help="semente do sorteio (padrão 123)")
    parser.add_argument("--stop-at-eos", action="store_true", help="para no token <|endoftext|>")
    add_runtime_options(parser)
    parser.set_defaults(handler=run)

"""``python -m companion generate``: continua um texto com um modelo do curso (cap. 5).

Com ``--checkpoint PASTA`` usa o GPT de um treino (``companion.runs.load_trained``); com
``--smollm2`` usa o SmolLM2-135M-Instruct e o formato de conversa dele
(``companion.chat.chat_reply``); com ``--model gemma3-270m``, o Gemma 3 270M
(``companion.pretrained.gemma3``), um modelo base: continua o texto, começando com
``<bos>`` e parando no ``<eos>``. A geração é sempre o ``companion.generation.generate``.
"""

from __future__ import annotations

import argparse

import torch

from companion.cli.common import add_runtime_options, start
from companion.generation import check_decoding_args, generate

__all__ = ["MODELS", "add_command", "run"]

# Modelos pré-treinados que --model aceita (o SmolLM2 tem a sua opção, --smollm2).
MODELS = ("gemma3-270m",)


def run(args: argparse.Namespace) -> int:
    """Gera e imprime o texto."""
    runtime = start(args)
    if not args.prompt:
        raise ValueError("o --prompt está vazio: escreva o começo do texto que o modelo deve continuar.")
    check_decoding_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                        repetition_penalty=args.repetition_penalty)
    if sum((args.smollm2, args.checkpoint is not None, args.model is not None)) != 1:
        raise ValueError(
            "diga de onde vem o modelo com uma só opção: --checkpoint PASTA (de um treino), --smollm2 "
            "ou --model gemma3-270m."
        )

    if args.smollm2:
        from companion.chat import chat_reply
        from companion.pretrained import load_smollm2

        model, tokenizer = load_smollm2(runtime.dtype)
        model.to(runtime.device)
        print(chat_reply(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                         repetition_penalty=args.repetition_penalty))
        return 0

    if args.model == "gemma3-270m":
        from companion.pretrained import load_gemma3

        model, tokenizer = load_gemma3(runtime.dtype)
        model.to(runtime.device)
        idx = torch.tensor([tokenizer.encode(args.prompt, bos=True)], device=runtime.device)  # (1, T)
        generator = torch.Generator(device=runtime.device).manual_seed(args.seed)
        out = generate(model, idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                       top_p=args.top_p, eos_id=tokenizer.eos_id, generator=generator,
                       repetition_penalty=args.repetition_penalty)
        print(tokenizer.decode(out[0].tolist(), skip_special=True))
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
        help="gera texto com um modelo treinado, com o SmolLM2 ou com o Gemma 3 (cap. 5)",
        description="Continua um prompt com o modelo de um treino (--checkpoint PASTA), com o SmolLM2 (--smollm2) "
        "ou com um modelo pré-treinado (--model gemma3-270m).",
    )
    parser.add_argument("--checkpoint", default=None, help="pasta do treino (ou o arquivo checkpoint.safetensors)")
    parser.add_argument("--smollm2", action="store_true", help="usa o SmolLM2-135M-Instruct (conversa em ChatML)")
    parser.add_argument("--model", default=None, choices=MODELS,
                        help="um modelo pré-treinado base: gemma3-270m (continua o texto e para no <eos>)")
    parser.add_argument("--prompt", required=True, help="o começo do texto (ou a pergunta, com --smollm2)")
    parser.add_argument("--max-new-tokens", type=int, default=50, help="tokens a gerar (padrão 50)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = gulosa; > 0 = amostragem (padrão 0)")
    parser.add_argument("--top-k", type=int, default=None, help="só os k tokens mais prováveis")
    parser.add_argument("--top-p", type=float, default=None, help="amostragem de núcleo: massa de probabilidade em (0, 1]")
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="> 1 desestimula repetir tokens (padrão 1 = desligada)")
    parser.add_argument("--seed", type=int, default=123, help="semente do sorteio (padrão 123)")
    parser.add_argument("--stop-at-eos", action="store_true",
                        help="para no token <|endoftext|> (com --checkpoint; o Gemma sempre para no <eos>)")
    add_runtime_options(parser)
    parser.set_defaults(handler=run)

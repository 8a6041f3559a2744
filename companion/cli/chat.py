"""``python -m companion chat``: conversar no terminal com o SmolLM2 ou o Gemma 3 ajustado (cap. 6).

Com ``--model gemma3-270m``, o Gemma 3 270M com os adaptadores LoRA do cap. 6 (os do
curso, sem ``--adapter``), no molde Alpaca: o Gemma do curso é um modelo base, que
antes do ajuste só continua textos.

Sem ``--adapter``, conversamos com o SmolLM2-135M-Instruct original, no formato de
conversa com que ele foi ajustado (ChatML, ``companion.chat.chat_reply``), e o
histórico da conversa vai junto a cada pergunta. Com ``--adapter PASTA`` (uma ou mais
vezes, na ordem em que foram treinados: instruções, depois DPO), os adaptadores LoRA
são somados aos pesos e cada linha vira uma instrução no molde Alpaca de
``companion.instruct`` — o formato em que esses adaptadores foram treinados (uma
pergunta por vez, sem histórico).

Lê uma linha por vez da entrada padrão até o fim (EOF) ou até ``sair``; por isso
também funciona com texto redirecionado::

    printf 'Qual é a capital da Bahia?\\nsair\\n' | python -m companion chat --model gemma3-270m
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from companion._checks import check_int
from companion.cli.common import add_runtime_options, start

__all__ = ["EXIT_WORDS", "chat_loop", "add_command", "run"]

EXIT_WORDS = ("sair", "exit", "quit")
# Com --model gemma3-270m e sem --adapter: os adaptadores do curso, na ordem do treino.
GEMMA_ADAPTERS = ("gemma-instrucoes-lora", "gemma-dpo-lora")


def chat_loop(
    reply: Any,
    stdin: TextIO,
    stdout: TextIO,
    interactive: bool = False,
) -> int:
    """Lê perguntas de ``stdin`` e escreve as respostas de ``reply(pergunta)`` em ``stdout``.

    Linhas vazias são puladas; ``sair`` (ou ``exit``/``quit``) encerra.

    Args:
        reply: função ``texto -> resposta``.
        stdin, stdout: os fluxos de entrada e saída.
        interactive: mostra o convite ``você>`` antes de cada linha.

    Returns:
        Quantas perguntas foram respondidas.
    """
    answered = 0
    while True:
        if interactive:
            stdout.write("você> ")
            stdout.flush()
        line = stdin.readline()
        if not line:  # fim da entrada
            break
        text = line.strip()
        if not text:
            continue
        if text.lower() in EXIT_WORDS:
            break
        stdout.write(f"modelo> {reply(text)}\n")
        stdout.flush()
        answered += 1
    return answered


def run(args: argparse.Namespace) -> int:
    """Abre a conversa (com ou sem adaptadores) e responde linha a linha."""
    from companion.assets import artifact_path
    from companion.chat import chat_reply
    from companion.dpo import load_tuned
    from companion.instruct import generate_response

    check_int("--max-new-tokens", args.max_new_tokens, 1)
    runtime = start(args)
    adapters = args.adapter or []
    if args.model == "gemma3-270m":
        if args.format == "chatml":
            raise ValueError("o Gemma 3 270M do curso é um modelo base, sem formato de conversa: use --format alpaca "
                             "(o molde em que os adaptadores do cap. 6 foram treinados).")
        if not adapters:  # o base só continua textos: conversamos com o ajustado do curso
            adapters = [str(artifact_path(name)) for name in GEMMA_ADAPTERS]
    fmt = args.format or ("alpaca" if adapters else "chatml")
    model, tokenizer = load_tuned(args.model, adapters)
    model.to(runtime.device)
    history: list[dict[str, str]] = []

    def reply(text: str) -> str:
        if fmt == "alpaca":
            return generate_response(model, tokenizer, text, args.max_new_tokens)
        history.append({"role": "user", "content": text})
        answer = chat_reply(model, tokenizer, history, args.max_new_tokens)
        history.append({"role": "assistant", "content": answer})
        return answer

    name = "Gemma 3 270M" if args.model == "gemma3-270m" else "SmolLM2-135M-Instruct"
    which = f"{name} + " + " + ".join(adapters) if adapters else f"{name} original"
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"Conversando com: {which} (formato {fmt}). Digite 'sair' para encerrar.")
    chat_loop(reply, sys.stdin, sys.stdout, interactive=interactive)
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Registra ``python -m companion chat``."""
    parser = subparsers.add_parser(
        "chat",
        help="conversa no terminal com o SmolLM2 ou com o Gemma 3 ajustado (cap. 6)",
        description=(
            "Conversa com um modelo do curso: uma pergunta por linha, até o fim da entrada ou 'sair'. "
            "Com --adapter, usa os adaptadores LoRA do cap. 6 (na ordem do treino) e o molde Alpaca. "
            "Com --model gemma3-270m e sem --adapter, usa os adaptadores do curso (instruções e DPO)."
        ),
    )
    parser.add_argument("--model", choices=["smollm2", "gemma3-270m"], default="smollm2",
                        help="smollm2 (padrão; sem adaptador conversa em ChatML) ou gemma3-270m (sempre com "
                             "adaptadores: os do curso, se você não passar --adapter)")
    parser.add_argument("--adapter", action="append", default=None, metavar="PASTA",
                        help="adaptador LoRA a somar (repita na ordem do treino: instruções, depois DPO)")
    parser.add_argument("--format", choices=["alpaca", "chatml"], default=None,
                        help="formato do prompt (padrão: alpaca com --adapter, chatml sem)")
    parser.add_argument("--max-new-tokens", type=int, default=80, help="tamanho máximo de cada resposta (padrão 80)")
    add_runtime_options(parser, precision=False)
    parser.set_defaults(handler=run)

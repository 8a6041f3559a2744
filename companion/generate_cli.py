"""O comando ``python -m companion generate``: gera texto com um modelo treinado (cap. 5).

Lê a pasta gravada por ``python -m companion train`` (``checkpoint.safetensors`` e
``tokenizer.json``, se o tokenizador for o BPE do treino), monta o ``GPTModel`` com a
configuração guardada no próprio *checkpoint* e continua o *prompt* com
``companion.generation.generate`` (temperatura, top-k, top-p, semente). Com
``--smollm2`` usa o SmolLM2-135M-Instruct (``companion.pretrained.load_smollm2``) e o
formato de conversa dele.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_trained", "add_command"]


def load_trained(checkpoint: str | Path) -> tuple[Any, Any]:
    """O modelo e o tokenizador de um treino do comando ``train``.

    Args:
        checkpoint: a pasta do treino ou o arquivo ``checkpoint.safetensors``.

    Returns:
        ``(modelo, tokenizador)``: um ``GPTModel`` em modo ``eval`` com os pesos gravados e
        um ``tiktoken.Encoding``.

    Raises:
        FileNotFoundError: o *checkpoint* não existe.
        ValueError: arquivo truncado/corrompido ou sem a configuração do treino.
    """
    from companion.checkpoint import load_checkpoint, read_checkpoint_metadata
    from companion.model import GPTConfig, GPTModel
    from companion.train import load_run_tokenizer

    path = Path(checkpoint)
    file = path / "checkpoint.safetensors" if path.is_dir() else path
    meta = read_checkpoint_metadata(file)
    run = meta["state"].get("run")
    if meta["model_config"] is None or run is None:
        raise ValueError(
            f"{file} não foi gravado pelo comando train (faltam a configuração do modelo e a do tokenizador)."
        )
    model = GPTModel(GPTConfig(**meta["model_config"]))
    load_checkpoint(file, model)
    model.eval()
    return model, load_run_tokenizer(run["tokenizer"], file.parent)


def _run_generate(args: argparse.Namespace) -> int:
    from companion.generation import check_decoding_args, generate

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not args.prompt:
        raise ValueError("o --prompt está vazio: escreva o começo do texto que o modelo deve continuar.")
    check_decoding_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                        repetition_penalty=args.repetition_penalty)

    if args.smollm2:
        if args.repetition_penalty != 1.0:
            raise ValueError(
                "--repetition-penalty só vale para os checkpoints do curso (--checkpoint PASTA); "
                "com --smollm2 a geração não aplica penalidade. Tire a opção ou use 1."
            )
        try:
            from companion.pretrained import chat_reply, load_smollm2
        except ImportError as error:  # pragma: no cover - depende do módulo do SmolLM2
            raise ValueError(f"o suporte ao SmolLM2 não está disponível neste pacote ({error}).") from error
        model, tokenizer = load_smollm2()
        reply = chat_reply(
            model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        )
        print(reply)
        return 0

    if args.checkpoint is None:
        raise ValueError("diga de onde vem o modelo: --checkpoint PASTA (de um treino) ou --smollm2.")
    model, tokenizer = load_trained(args.checkpoint)
    prompt_ids = tokenizer.encode(args.prompt, allowed_special="all")
    idx = torch.tensor([prompt_ids], dtype=torch.long)  # (1, T)
    eot = tokenizer.encode_single_token("<|endoftext|>") if args.stop_at_eos else None
    generator = torch.Generator().manual_seed(args.seed)
    out = generate(model, idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, eos_id=eot, generator=generator,
                   repetition_penalty=args.repetition_penalty)
    print(tokenizer.decode(out[0].tolist()))
    return 0


def _handle_generate(args: argparse.Namespace) -> int:
    try:
        return _run_generate(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"erro: {error}", file=sys.stderr)
        return 1


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Registra ``python -m companion generate`` (veja ``companion.cli``)."""
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
    parser.add_argument("--repetition-penalty", type=float, default=1.0,
                        help="> 1 desestimula repetir tokens (só para checkpoints do curso; 1 = desligada)")
    parser.add_argument("--top-p", type=float, default=None, help="amostragem de núcleo: massa de probabilidade em (0, 1]")
    parser.add_argument("--seed", type=int, default=123, help="semente do sorteio (padrão 123)")
    parser.add_argument("--stop-at-eos", action="store_true", help="para no token <|endoftext|>")
    parser.add_argument("--threads", type=int, default=None, help="threads do PyTorch")
    parser.set_defaults(handler=_handle_generate)

"""``python -m companion classify``: rótulo spam/normal para mensagens, com um classificador treinado (cap. 6)."""

from __future__ import annotations

import argparse
from pathlib import Path

from companion.cli.common import add_runtime_options, start

__all__ = ["add_command", "run"]


def _read_inputs(args: argparse.Namespace) -> list[str]:
    if args.file is not None and args.texts:
        raise ValueError("use TEXTO... ou --file ARQUIVO, não os dois.")
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise FileNotFoundError(f"arquivo não encontrado: {path}.")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise ValueError(f"{path} não tem nenhuma mensagem (uma por linha).")
        return texts
    if not args.texts:
        raise ValueError("passe as mensagens: TEXTO... (uma por argumento) ou --file ARQUIVO (uma por linha).")
    return list(args.texts)


def run(args: argparse.Namespace) -> int:
    """Classifica e imprime um rótulo por linha."""
    from companion.assets import artifact_path
    from companion.classifier import classify_texts, load_classifier
    from companion.probe import PROBE_INFO_FILE, classify_with_probe, load_probe

    runtime = start(args)
    texts = _read_inputs(args)
    if any(not t.strip() for t in texts):
        raise ValueError("há uma mensagem vazia entre os argumentos: não há o que classificar.")
    folder = Path(args.model) if args.model is not None else artifact_path("gemma-classificador")
    if (folder / PROBE_INFO_FILE).is_file():  # uma sonda sobre um modelo congelado (o Gemma 3)
        from companion.pretrained import load_pretrained

        probe, cfg, info = load_probe(folder)
        model, tokenizer = load_pretrained(info["pretrained"])
        model.to(runtime.device)
        labels = [label for label, _ in classify_with_probe(model, tokenizer, probe, cfg, texts, info["labels"])]
    else:  # o classificador do SmolLM2 (último bloco + cabeça nova)
        model, tokenizer, info = load_classifier(folder)
        labels, _ = classify_texts(model, tokenizer, texts, info["config"]["max_length"])
    for label in labels:
        print(label)
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Registra ``python -m companion classify``."""
    parser = subparsers.add_parser(
        "classify",
        help="classifica mensagens como spam ou normal com um classificador treinado (cap. 6)",
        description=(
            "Classifica mensagens com o classificador gravado por `finetune classify` e imprime "
            "um rótulo (spam/normal) por linha, na ordem das mensagens."
        ),
    )
    parser.add_argument("texts", nargs="*", metavar="TEXTO", help="mensagens a classificar (uma por argumento)")
    parser.add_argument("--model", default=None,
                        help="pasta gravada por `finetune classify` (padrão: a sonda do curso sobre o Gemma 3)")
    parser.add_argument("--file", default=None, help="arquivo UTF-8 com uma mensagem por linha")
    add_runtime_options(parser, precision=False)
    parser.set_defaults(handler=run)

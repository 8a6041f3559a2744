"""``python -m companion export-onnx``: o modelo de um treino num arquivo ONNX (cap. 5).

Grava o grafo IDs ``(1, T)`` -> *logits* ``(1, T, V)`` (``companion.onnx_export``; com
``--kv-cache``, o grafo com as chaves e os valores de entrada e de saída) e confere, com o
``onnxruntime``, que ele dá os mesmos *logits* que o PyTorch. A versão com cache é a que a
página "O modelo no seu navegador" do site roda em WebAssembly.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from companion.cli.common import add_runtime_options, fail, start

__all__ = ["add_command", "run"]


def run(args: argparse.Namespace) -> int:
    """Exporta, confere e imprime um resumo."""
    from companion.onnx_export import export_run

    start(args)
    check = importlib.util.find_spec("onnxruntime") is not None
    if not check:
        print("aviso: o onnxruntime não está instalado; o arquivo será gravado sem a conferência dos logits "
              "(pip install -r requirements.txt).", file=sys.stderr)
    try:
        result = export_run(args.run, args.out, kv_cache=args.kv_cache, check=check)
    except ModuleNotFoundError as error:
        fail(str(error))
    print(f"modelo exportado: {result.path} ({result.size_bytes / 1000:.0f} kB, sha256 {result.sha256})")
    ctx, vocab = result.context_length, result.vocab_size
    if result.kv_cache:
        print(f"entradas input_ids (1, T) e past (chaves e valores de P posições, P + T <= {ctx}); "
              f"saídas logits (1, T, {vocab}) e present")
    else:
        print(f"entrada input_ids (1, T) com 1 <= T <= {ctx}; saída logits (1, T, {vocab})")
    if result.max_abs_diff is not None:
        print(f"logits conferidos com o onnxruntime: diferença máxima {result.max_abs_diff:.2g} em relação ao PyTorch")
    return 0


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Registra ``python -m companion export-onnx``."""
    parser = subparsers.add_parser(
        "export-onnx",
        help="exporta o modelo de um treino para ONNX (para rodar no navegador, cap. 5)",
        description=(
            "Exporta o GPT de uma pasta de treino para um arquivo ONNX (IDs (1, T) -> logits (1, T, V), "
            "T dinâmico) e confere com o onnxruntime que os logits são os do PyTorch."
        ),
    )
    parser.add_argument("--run", required=True, help="pasta do treino (ou o arquivo checkpoint.safetensors)")
    parser.add_argument("--out", required=True, help="arquivo .onnx a gravar (as pastas que faltarem são criadas)")
    parser.add_argument("--kv-cache", action="store_true",
                        help="grafo com KV cache: as chaves e os valores entram e saem (passos de 1 token)")
    add_runtime_options(parser, precision=False, device=False)
    parser.set_defaults(handler=run)

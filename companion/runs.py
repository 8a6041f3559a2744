"""A pasta de um treino: o que ``python -m companion train`` grava e como ler de volta (cap. 5).

Uma pasta de treino tem::

    checkpoint.safetensors   pesos, estado do AdamW, passo, histórico e as opções do treino
    config.json              configuração do modelo, do tokenizador e do treino (para ler sem o torch)
    history.json             as perdas de cada avaliação e de cada passo
    tokenizer.json           o BPE treinado nos dados (só com --tokenizer bpe)

``save_run`` grava as três primeiras de forma atômica (nada fica pela metade) e
``load_trained`` devolve o modelo pronto para gerar e o tokenizador.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from companion.checkpoint import (
    atomic_write_json,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "HISTORY_NAME",
    "TOKENIZER_NAME",
    "read_text_file",
    "load_run_tokenizer",
    "save_run",
    "load_trained",
]

CHECKPOINT_NAME = "checkpoint.safetensors"
CONFIG_NAME = "config.json"
HISTORY_NAME = "history.json"
TOKENIZER_NAME = "tokenizer.json"


def read_text_file(path: str | Path) -> str:
    """O conteúdo de um arquivo de texto UTF-8 não vazio.

    Raises:
        FileNotFoundError: o arquivo não existe.
        ValueError: não é UTF-8 ou está vazio.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"arquivo de texto não encontrado: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} não é um texto UTF-8 válido ({error}); converta-o para UTF-8.") from error
    if not text.strip():
        raise ValueError(f"{path} está vazio: não há o que aprender.")
    return text


def load_run_tokenizer(spec: dict[str, Any], folder: str | Path) -> Any:
    """O tokenizador de um treino, como ``tiktoken.Encoding`` (``encode``/``decode``/``n_vocab``).

    Args:
        spec: ``{"kind": "gpt2"}`` ou ``{"kind": "bpe", "file": "tokenizer.json"}`` (de ``config.json``).
        folder: a pasta do treino (onde está o ``tokenizer.json`` do BPE).

    Returns:
        Um ``tiktoken.Encoding``.

    Raises:
        ValueError: tipo de tokenizador desconhecido.
    """
    from companion.tokenizers import BPETokenizer, gpt2_tokenizer

    kind = spec.get("kind")
    if kind == "gpt2":
        return gpt2_tokenizer()
    if kind == "bpe":
        return BPETokenizer.load(Path(folder) / spec.get("file", TOKENIZER_NAME)).to_tiktoken()
    raise ValueError(f"tokenizador desconhecido {kind!r}: os válidos são 'gpt2' e 'bpe'.")


def save_run(
    folder: str | Path,
    model: nn.Module,
    optimizer: Any,
    step: int,
    history: dict[str, list],
    run: dict[str, Any],
) -> Path:
    """Grava ``checkpoint.safetensors``, ``config.json`` e ``history.json`` (cada um de forma atômica).

    Args:
        folder: a pasta do treino (criada se faltar).
        model, optimizer: o modelo e o AdamW.
        step: o passo em que o treino está.
        history: o histórico de ``companion.train.train``.
        run: as opções do treino (``options``, ``train``, ``model``, ``tokenizer``, ``data``).

    Returns:
        O caminho do *checkpoint*.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = save_checkpoint(folder / CHECKPOINT_NAME, model, optimizer, step=step, history=history, run=run)
    atomic_write_json(folder / CONFIG_NAME, {"model": run["model"], "tokenizer": run["tokenizer"], "run": run})
    atomic_write_json(folder / HISTORY_NAME, history)
    return checkpoint


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
    from companion.model import GPTConfig, GPTModel

    path = Path(checkpoint)
    file = path / CHECKPOINT_NAME if path.is_dir() else path
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

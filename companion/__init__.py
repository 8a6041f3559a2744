"""`companion`: o pacote do curso *LLM do Zero*.

Cada capítulo do livro constrói uma peça à mão e depois a importa daqui. Os nomes
públicos abaixo são carregados sob demanda (``companion.GPTModel`` só importa
``companion.model`` quando você o usa), para que ``import companion`` seja rápido
e um módulo em construção não quebre os outros.

Três camadas, uma por pasta: a biblioteca (os módulos daqui), a linha de comando
(``companion.cli``) e o que só o livro usa (``companion.book``: estilo, gráficos,
controles interativos).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# nome público -> módulo que o define (o capítulo que o constrói está no docstring do módulo)
_EXPORTS: dict[str, str] = {
    # partida: reprodutibilidade, device e precisão
    "setup": "reproducibility",
    "device": "hardware",
    "precision": "hardware",
    "autocast": "hardware",
    # cap. 1 — fundamentos
    "split_words": "ngram",
    "join_words": "ngram",
    "NGramModel": "ngram",
    "BigramModel": "ngram",
    # cap. 2 — dados
    "load_corpus": "data",
    "GPTDataset": "data",
    "create_dataloader": "data",
    "SimpleTokenizer": "tokenizers",
    "BPETokenizer": "tokenizers",
    "gpt2_tokenizer": "tokenizers",
    # cap. 3 — atenção
    "MultiHeadAttention": "attention",
    "KVCache": "attention",
    "causal_mask": "attention",
    "simplified_attention": "attention",
    "SelfAttentionV1": "attention",
    "SelfAttentionV2": "attention",
    "CausalAttention": "attention",
    "MultiHeadAttentionWrapper": "attention",
    # cap. 4 — arquitetura
    "CausalLM": "lm",
    "GPTConfig": "model",
    "GPTModel": "model",
    "generate": "generation",
    # cap. 5 — pré-treinamento
    "cross_entropy_by_hand": "loss",
    "perplexity": "loss",
    "calc_loss_batch": "loss",
    "calc_loss_loader": "loss",
    "lm_loss": "loss",
    "chunked_cross_entropy": "loss",
    "TrainConfig": "train",
    "train": "train",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_trained": "runs",
    "load_gpt2_from_hf": "pretrained.hf_gpt2",
    # cap. 5 — do GPT-2 ao Llama (pesos pré-treinados de verdade)
    "LlamaConfig": "llama",
    "LlamaModel": "llama",
    "load_smollm2": "pretrained.smollm2",
    "chat_reply": "chat",
    # cap. 5 — do Llama ao Gemma 3
    "Gemma3Config": "gemma3",
    "Gemma3Model": "gemma3",
    "load_gemma3": "pretrained.gemma3",
    # cap. 6 — ajuste fino para classificação
    "SpamClassifier": "classifier",
    "ClassifierConfig": "classifier",
    "load_messages": "classifier",
    "load_classifier": "classifier",
    # cap. 6 — instruções com LoRA e alinhamento com DPO
    "LoRAConfig": "lora",
    "LoRALinear": "lora",
    "apply_lora": "lora",
    "merge_lora": "lora",
    "load_lora_adapter": "lora",
    "format_prompt": "instruct",
    "collate_instructions": "instruct",
    "load_instructions": "instruct",
    "dpo_loss": "dpo",
    "load_preferences": "dpo",
    "load_tuned_smollm2": "dpo",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"o módulo 'companion' não tem o atributo {name!r}")
    value = getattr(importlib.import_module(f"companion.{module_name}"), name)
    globals()[name] = value  # próximas consultas não passam mais por aqui
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

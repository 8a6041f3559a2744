"""Pesos do GPT-2 de verdade: de uma pasta do Hugging Face para o nosso ``GPTModel`` (cap. 5).

A OpenAI publicou os pesos do GPT-2, e o Hugging Face os distribui numa pasta com
``config.json`` (os hiperparâmetros) e ``model.safetensors`` (os tensores). A
arquitetura é a mesma que construímos no cap. 4; só os nomes e alguns formatos mudam:

- as camadas lineares do GPT-2 original são ``Conv1D``, que guardam o peso como
  ``(entrada, saída)``; o ``nn.Linear`` do PyTorch guarda ``(saída, entrada)``: cada
  matriz precisa ser **transposta**;
- consulta, chave e valor vêm numa matriz só, ``c_attn`` de formato ``(C, 3C)``: é
  preciso **parti-la em três** ao longo da dimensão 1 (e o viés, ``(3C,)``, na dimensão 0);
- a cabeça de saída não está no arquivo: ela é **amarrada** ao *embedding* de tokens.

Nada aqui acessa a internet: ``load_gpt2_from_hf`` lê uma pasta local (no Colab, o
capítulo baixa a pasta do GPT-2 antes, numa célula separada).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["gpt2_config_from_hf", "convert_gpt2_state_dict", "load_gpt2_from_hf"]

# Buffers que versões antigas do GPT-2 gravavam junto com os pesos (a máscara causal): ignoramos.
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def gpt2_config_from_hf(hf_config: dict):
    """Um ``GPTConfig`` equivalente ao ``config.json`` de um GPT-2 do Hugging Face.

    Args:
        hf_config: o conteúdo do ``config.json`` (``n_embd``, ``n_layer``, ``n_head``,
            ``n_positions``, ``vocab_size``...).

    Returns:
        ``GPTConfig`` com ``qkv_bias=True``, cabeça amarrada e *dropout* do arquivo.

    Raises:
        ValueError: campo faltando, ou uma variante que o nosso modelo não reproduz
            (outra ativação, outro ``eps`` de normalização, cabeça não amarrada).
    """
    from companion.model import GPTConfig

    missing = [k for k in ("n_embd", "n_layer", "n_head", "vocab_size") if k not in hf_config]
    if missing:
        raise ValueError(f"config.json não parece ser de um GPT-2: faltam os campos {missing}.")
    activation = hf_config.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(
            f"activation_function={activation!r} não é suportada: o nosso GPTModel usa a GELU com "
            "tangente hiperbólica do GPT-2 ('gelu_new')."
        )
    eps = hf_config.get("layer_norm_epsilon", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        raise ValueError(f"layer_norm_epsilon={eps} não é suportado: o nosso GPTModel usa 1e-5, como o GPT-2.")
    if not hf_config.get("tie_word_embeddings", True):
        raise ValueError("tie_word_embeddings=False não é suportado: o GPT-2 amarra a cabeça ao embedding.")
    return GPTConfig(
        vocab_size=hf_config["vocab_size"],
        context_length=hf_config.get("n_positions", hf_config.get("n_ctx", 1024)),
        emb_dim=hf_config["n_embd"],
        n_heads=hf_config["n_head"],
        n_layers=hf_config["n_layer"],
        drop_rate=float(hf_config.get("resid_pdrop", 0.1)),
        qkv_bias=True,
        tie_weights=True,
    )


def convert_gpt2_state_dict(hf_tensors: dict[str, Tensor], n_layers: int) -> dict[str, Tensor]:
    """Renomeia (e transpõe, e parte) os tensores do GPT-2 do Hugging Face para o ``GPTModel``.

    Args:
        hf_tensors: nome -> tensor, como em ``model.safetensors`` (com ou sem o prefixo
            ``transformer.``).
        n_layers: número de blocos.

    Returns:
        O ``state_dict`` para ``GPTModel.load_state_dict`` (com ``out_head.weight`` = o
        *embedding* de tokens).

    Raises:
        ValueError: tensor faltando ou sobrando (a mensagem diz qual).
    """
    src = {k.removeprefix("transformer."): v for k, v in hf_tensors.items()}
    src.pop("lm_head.weight", None)  # se existir, é o mesmo tensor do embedding (amarrado)
    used: set[str] = set()

    def take(name: str) -> Tensor:
        if name not in src:
            raise ValueError(f"model.safetensors não tem o tensor {name!r} de um GPT-2 com {n_layers} blocos.")
        used.add(name)
        return src[name]

    out: dict[str, Tensor] = {
        "tok_emb.weight": take("wte.weight"),
        "pos_emb.weight": take("wpe.weight"),
        "final_norm.weight": take("ln_f.weight"),
        "final_norm.bias": take("ln_f.bias"),
    }
    out["out_head.weight"] = out["tok_emb.weight"]
    for i in range(n_layers):
        hf, ours = f"h.{i}.", f"trf_blocks.{i}."
        out[ours + "norm1.weight"] = take(hf + "ln_1.weight")
        out[ours + "norm1.bias"] = take(hf + "ln_1.bias")
        out[ours + "norm2.weight"] = take(hf + "ln_2.weight")
        out[ours + "norm2.bias"] = take(hf + "ln_2.bias")
        # c_attn: (C, 3C) no formato do Conv1D -> três matrizes (C, C), cada uma transposta
        q_w, k_w, v_w = take(hf + "attn.c_attn.weight").chunk(3, dim=1)  # (C, C) cada
        q_b, k_b, v_b = take(hf + "attn.c_attn.bias").chunk(3, dim=0)  # (C,) cada
        for name, w, b in (("W_query", q_w, q_b), ("W_key", k_w, k_b), ("W_value", v_w, v_b)):
            out[ours + f"att.{name}.weight"] = w.t().contiguous()  # (saída, entrada)
            out[ours + f"att.{name}.bias"] = b.contiguous()
        out[ours + "att.out_proj.weight"] = take(hf + "attn.c_proj.weight").t().contiguous()  # (C, C)
        out[ours + "att.out_proj.bias"] = take(hf + "attn.c_proj.bias")
        out[ours + "ff.fc1.weight"] = take(hf + "mlp.c_fc.weight").t().contiguous()  # (C, 4C) -> (4C, C)
        out[ours + "ff.fc1.bias"] = take(hf + "mlp.c_fc.bias")
        out[ours + "ff.fc2.weight"] = take(hf + "mlp.c_proj.weight").t().contiguous()  # (4C, C) -> (C, 4C)
        out[ours + "ff.fc2.bias"] = take(hf + "mlp.c_proj.bias")
    leftover = sorted(k for k in set(src) - used if not k.endswith(_IGNORED_SUFFIXES))
    if leftover:
        raise ValueError(
            f"model.safetensors tem tensores que um GPT-2 com {n_layers} bloco(s) não tem: {leftover[:5]}; "
            "confira se a pasta é mesmo de um GPT-2 e se config.json combina com os pesos."
        )
    return out


def load_gpt2_from_hf(path: str | Path, dtype: torch.dtype = torch.float32):
    """Carrega um GPT-2 do Hugging Face (pasta local) num ``GPTModel`` do curso (cap. 5).

    Args:
        path: pasta com ``config.json`` e ``model.safetensors`` (o que
            ``save_pretrained`` grava, ou o que se baixa de ``openai-community/gpt2``).
        dtype: tipo dos pesos do modelo devolvido.

    Returns:
        ``GPTModel`` em modo ``eval``, com os mesmos *logits* do ``GPT2LMHeadModel``.

    Raises:
        FileNotFoundError: pasta ou arquivos faltando.
        ValueError: configuração não suportada ou tensores que não combinam.
    """
    from safetensors.torch import load_file

    from companion.model import GPTModel

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"pasta do GPT-2 não encontrada: {folder}")
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} não tem config.json: é mesmo uma pasta de modelo do Hugging Face?")
    if not weights_file.is_file():
        raise FileNotFoundError(
            f"{folder} não tem model.safetensors. (Só lemos safetensors: pytorch_model.bin é um pickle, "
            "que pode executar código ao ser aberto.)"
        )
    cfg = gpt2_config_from_hf(json.loads(config_file.read_text(encoding="utf-8")))
    state = convert_gpt2_state_dict(load_file(str(weights_file)), cfg.n_layers)
    model = GPTModel(cfg)
    expected = model.state_dict()
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"o tensor {name!r} tem formato {tuple(tensor.shape)} no arquivo, mas o modelo do "
                f"config.json espera {tuple(expected[name].shape)}."
            )
    model.load_state_dict(state)  # copia para os Parameters existentes: a cabeça continua amarrada
    return model.to(dtype).eval()

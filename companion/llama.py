"""Do GPT-2 ao Llama: o modelo da família Llama, peça por peça (cap. 5).

O GPT do cap. 4 e um Llama são o mesmo tipo de máquina — *embeddings*, uma pilha de
blocos com atenção causal e *feed-forward*, normalização final e uma cabeça que devolve
*logits*. O que muda são cinco peças, cada uma uma classe ou função deste arquivo:

1. ``RMSNorm`` no lugar da ``LayerNorm``: só divide pela raiz da média dos quadrados
   (sem subtrair a média, sem viés);
2. RoPE (``rope_angles``, ``rotate_half``, ``apply_rope``) no lugar do *embedding*
   posicional aprendido: a posição entra girando pares de coordenadas das consultas e
   das chaves, na forma "meia rotação" (*rotate-half*);
3. ``SwiGLUFeedForward`` no lugar de ``Linear -> GELU -> Linear``: um portão
   ``silu(gate(x)) * up(x)`` antes da projeção de volta;
4. ``GroupedQueryAttention``: menos cabeças de chave/valor do que de consulta (cada
   cabeça de chave/valor é compartilhada por um grupo de cabeças de consulta), o que
   encolhe o KV cache;
5. cabeça de saída amarrada ao *embedding* (``tie_weights``), sem vieses em lugar nenhum.

``LlamaModel`` junta tudo sobre a interface comum ``companion.lm.CausalLM`` — a mesma do
GPT —, e por isso o mesmo ``companion.generation.generate`` gera texto com ele, com o
``KVCache`` do cap. 3. O carregamento do SmolLM2-135M-Instruct de verdade está
em ``companion.pretrained``.

Nomes dos parâmetros (estáveis; ``companion.pretrained`` os usa ao carregar o GGUF)::

    tok_emb.weight,
    blocks.{i}.attn_norm.weight,
    blocks.{i}.attn.q_proj.weight, ...k_proj.weight, ...v_proj.weight, ...o_proj.weight,
    blocks.{i}.ffn_norm.weight,
    blocks.{i}.ffn.gate_proj.weight, ...up_proj.weight, ...down_proj.weight,
    final_norm.weight, [out_head.weight, só com tie_weights=False]

Convenção de formatos: ``B`` = lote, ``T`` = tokens, ``C`` = ``emb_dim``, ``V`` =
vocabulário, ``H`` = cabeças de consulta, ``G`` = cabeças de chave/valor, ``D`` =
``head_dim``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion._checks import check_bool, check_int, check_number, is_int
from companion.attention import KVCache
from companion.lm import CausalLM, PresetsMixin

__all__ = [
    "LlamaConfig",
    "RMSNorm",
    "rope_angles",
    "rotate_half",
    "apply_rope",
    "SwiGLUFeedForward",
    "GroupedQueryAttention",
    "LlamaBlock",
    "LlamaModel",
]


# ----------------------------------------------------------------------------- configuração
@dataclass
class LlamaConfig(PresetsMixin):
    """Hiperparâmetros de um modelo da família Llama (cap. 5).

    Os valores padrão são os do SmolLM2-135M (``LlamaConfig.preset("smollm2-135m")``).

    Args:
        vocab_size: número de tokens do vocabulário ``V`` (49.152 no SmolLM2).
        context_length: máximo de posições que o modelo aceita. Com RoPE não há tabela
            de posições a aprender: é só o limite com que o modelo foi treinado.
        emb_dim: dimensão ``C`` de tudo o que circula entre os blocos.
        n_layers: número de blocos.
        n_heads: cabeças de consulta ``H``; precisa dividir ``emb_dim``.
        n_kv_heads: cabeças de chave/valor ``G``; precisa dividir ``n_heads``. Com
            ``n_kv_heads == n_heads`` a atenção é a multi-cabeça comum; com 1, é a
            *multi-query attention*.
        hidden_dim: largura interna da SwiGLU (o SmolLM2 usa 1536 ≈ 2,67 x 576).
        rope_base: a base ``b`` das frequências da RoPE, ``b^(-2i/D)`` (10.000 no artigo
            original; 100.000 no SmolLM2, para contextos longos).
        norm_eps: somado à média dos quadrados na RMSNorm, para nunca dividir por zero.
        tie_weights: se a cabeça de saída reutiliza a matriz do *embedding* de tokens.

    Raises:
        ValueError: valores fora do permitido (a mensagem diz qual e o que é aceito).
    """

    vocab_size: int = 49152
    context_length: int = 8192
    emb_dim: int = 576
    n_layers: int = 30
    n_heads: int = 9
    n_kv_heads: int = 3
    hidden_dim: int = 1536
    rope_base: float = 100000.0
    norm_eps: float = 1e-5
    tie_weights: bool = True

    # nome -> valores; preenchido logo abaixo da classe.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        owner = "LlamaConfig: "
        for name in ("vocab_size", "context_length", "emb_dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim"):
            check_int(name, getattr(self, name), 1, owner=owner)
        if self.emb_dim % self.n_heads != 0:
            raise ValueError(
                f"LlamaConfig: emb_dim ({self.emb_dim}) deve ser divisível por n_heads ({self.n_heads}), "
                "porque cada cabeça recebe emb_dim // n_heads dimensões."
            )
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"LlamaConfig: n_heads ({self.n_heads}) deve ser divisível por n_kv_heads "
                f"({self.n_kv_heads}): cada cabeça de chave/valor atende um grupo do mesmo tamanho "
                "de cabeças de consulta."
            )
        if self.head_dim % 2 != 0:
            raise ValueError(
                f"LlamaConfig: head_dim = emb_dim // n_heads = {self.head_dim} deve ser par, porque "
                "a RoPE gira as coordenadas aos pares."
            )
        self.rope_base = check_number("rope_base", self.rope_base, 1.0, min_open=True, owner=owner)
        self.norm_eps = check_number("norm_eps", self.norm_eps, 0.0, min_open=True, owner=owner)
        check_bool("tie_weights", self.tie_weights, owner=owner)

    @property
    def head_dim(self) -> int:
        """Dimensão ``D`` de cada cabeça: ``emb_dim // n_heads`` (64 no SmolLM2)."""
        return self.emb_dim // self.n_heads

    @property
    def group_size(self) -> int:
        """Quantas cabeças de consulta compartilham cada cabeça de chave/valor (3 no SmolLM2)."""
        return self.n_heads // self.n_kv_heads

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LlamaConfig:
        """Uma configuração pronta, com trocas opcionais.

        - ``smollm2-135m``: o SmolLM2-135M(-Instruct) da Hugging Face (Allal et al., 2025):
          30 blocos, ``emb_dim`` 576, 9 cabeças de consulta e 3 de chave/valor, SwiGLU
          de 1536, RoPE com base 100.000, contexto 8192, vocabulário 49.152, cabeça amarrada;
        - ``llama-mini``: o mesmo desenho em miniatura (2 blocos, ``emb_dim`` 64, 4 cabeças
          de consulta e 2 de chave/valor, contexto 64), para testes e experimentos no livro.

        Args:
            name: nome do *preset* (veja ``LlamaConfig.PRESETS``).
            **overrides: campos a trocar, por exemplo ``vocab_size=1000``.

        Returns:
            Um ``LlamaConfig`` novo (validado).

        Raises:
            ValueError: nome desconhecido (a mensagem lista os válidos) ou campo inválido.
        """
        return super().preset(name, **overrides)


LlamaConfig.PRESETS = {
    "smollm2-135m": {
        "vocab_size": 49152,
        "context_length": 8192,
        "emb_dim": 576,
        "n_layers": 30,
        "n_heads": 9,
        "n_kv_heads": 3,
        "hidden_dim": 1536,
        "rope_base": 100000.0,
        "norm_eps": 1e-5,
        "tie_weights": True,
    },
    "llama-mini": {
        "vocab_size": 49152,
        "context_length": 64,
        "emb_dim": 64,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 2,
        "hidden_dim": 176,
        "rope_base": 10000.0,
        "norm_eps": 1e-5,
        "tie_weights": True,
    },
}


# ----------------------------------------------------------------------------- RMSNorm
class RMSNorm(nn.Module):
    """Normalização pela raiz da média dos quadrados (Zhang e Sennrich, 2019; cap. 5).

    Mais simples que a ``LayerNorm`` do GPT-2: não subtrai a média nem soma viés; só
    divide cada vetor pelo seu "tamanho típico" e aplica uma escala aprendida::

        y = x / sqrt(mean(x²) + eps) * weight

    As contas são feitas em ``float32`` mesmo quando o modelo está em ``bfloat16`` (a
    média de quadrados é sensível a arredondamento). Mesmos resultados de
    ``torch.nn.RMSNorm`` (os testes conferem).

    Args:
        emb_dim: tamanho da última dimensão.
        eps: somado à média dos quadrados (1e-5 no SmolLM2).
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(emb_dim))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(..., emb_dim)`` -> mesmo formato e ``dtype``."""
        x32 = x.float()
        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return (x32 * inv_rms * self.weight.float()).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


# ----------------------------------------------------------------------------- RoPE
def rope_angles(
    head_dim: int,
    positions: Tensor,
    base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Cossenos e senos da RoPE (Su et al., 2021) para as posições dadas (cap. 5).

    A coordenada ``i`` (e sua parceira ``i + D/2``) de uma cabeça gira com a frequência
    ``θ_i = base^(-2i/D)``: na posição ``m`` o ângulo é ``m·θ_i``. As primeiras
    coordenadas giram depressa (veem a vizinhança), as últimas devagar (veem longe).

    Args:
        head_dim: dimensão ``D`` de cada cabeça (par).
        positions: posições inteiras, formato ``(T,)``.
        base: a base ``b`` das frequências.
        dtype: tipo da saída (as contas são sempre em ``float32``).

    Returns:
        ``(cos, sin)``, cada um de formato ``(T, D)``; as duas metades da última
        dimensão são iguais (a forma *rotate-half*).

    Raises:
        ValueError: ``head_dim`` ímpar ou < 2, ou ``positions`` que não é 1-D.
    """
    if not is_int(head_dim) or head_dim < 2 or head_dim % 2 != 0:
        raise ValueError(f"head_dim deve ser um inteiro par >= 2; recebi {head_dim!r}.")
    if not isinstance(positions, Tensor) or positions.dim() != 1:
        shape = tuple(positions.shape) if isinstance(positions, Tensor) else type(positions).__name__
        raise ValueError(f"positions deve ser um tensor 1-D de posições (T,); recebi {shape}.")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim
    inv_freq = 1.0 / (base**exponents)  # (D/2,)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, D)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """``[x1, x2] -> [-x2, x1]`` na última dimensão (cada metade com ``D/2`` coordenadas).

    É a "multiplicação por ``i``" dos pares ``(x[j], x[j + D/2])`` vistos como números
    complexos; somada com pesos ``cos`` e ``sin``, vira uma rotação.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (..., D/2) cada
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Gira as consultas ou chaves ``x`` pelos ângulos de cada posição (RoPE, cap. 5).

    Cada par ``(x[j], x[j + D/2])`` da posição ``m`` gira pelo ângulo ``m·θ_j``::

        x_girado = x * cos + rotate_half(x) * sin

    Como girar não muda comprimentos, o produto escalar entre uma consulta na posição
    ``m`` e uma chave na posição ``n`` só depende de ``m - n``: a atenção enxerga
    posições *relativas*.

    Args:
        x: formato ``(B, heads, T, D)``.
        cos, sin: de ``rope_angles``, formato ``(T, D)``.

    Returns:
        Tensor do mesmo formato e ``dtype`` de ``x``.
    """
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


# ----------------------------------------------------------------------------- SwiGLU
class SwiGLUFeedForward(nn.Module):
    """A *feed-forward* com portão SwiGLU (Shazeer, 2020; cap. 5).

    Duas projeções da entrada: uma passa pela SiLU (``x · sigmoid(x)``) e funciona como
    portão que multiplica, elemento a elemento, a outra; o resultado volta a ``C``::

        y = down( silu(gate(x)) * up(x) )

    Três matrizes em vez de duas; por isso a largura interna costuma ser ~8/3 de ``C``
    (e não 4x), para manter o número de parâmetros.

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
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


# ----------------------------------------------------------------------------- atenção
class GroupedQueryAttention(nn.Module):
    """Atenção causal com consultas agrupadas, GQA (Ainslie et al., 2023; cap. 5).

    ``n_heads`` cabeças de consulta, mas só ``n_kv_heads`` de chave e de valor: a
    cabeça de consulta ``h`` usa a de chave/valor ``h // group_size``. As chaves e os
    valores ocupam ``n_heads / n_kv_heads`` vezes menos memória (o KV cache do SmolLM2 é
    3x menor). Consultas e chaves recebem a RoPE antes do produto escalar; a conta em si
    é ``torch.nn.functional.scaled_dot_product_attention``.

    Args:
        emb_dim: dimensão ``C`` da entrada e da saída.
        n_heads: cabeças de consulta ``H`` (dividem ``emb_dim``).
        n_kv_heads: cabeças de chave/valor ``G`` (dividem ``n_heads``).

    Raises:
        ValueError: divisões que não dão certo (a mensagem diz qual).
    """

    def __init__(self, emb_dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        for name, value in (("emb_dim", emb_dim), ("n_heads", n_heads), ("n_kv_heads", n_kv_heads)):
            check_int(name, value, 1, owner="GroupedQueryAttention: ")
        if emb_dim % n_heads != 0:
            raise ValueError(
                f"GroupedQueryAttention: emb_dim ({emb_dim}) deve ser divisível por n_heads ({n_heads})."
            )
        if n_heads % n_kv_heads != 0:
            raise ValueError(
                f"GroupedQueryAttention: n_heads ({n_heads}) deve ser divisível por n_kv_heads ({n_kv_heads})."
            )
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = emb_dim // n_heads
        self.group_size = n_heads // n_kv_heads
        self.q_proj = nn.Linear(emb_dim, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(emb_dim, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(emb_dim, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, emb_dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """Atenção causal de ``x`` sobre si mesmo (e sobre o que já está no cache).

        Args:
            x: ``(B, T, C)``; com ``kv_cache``, só os tokens novos.
            cos, sin: ângulos da RoPE das posições de ``x``, formato ``(T, D)``.
            kv_cache: cache de chaves/valores desta camada (``G`` cabeças), atualizado no lugar.

        Returns:
            ``(B, T, C)``.
        """
        B, T, _ = x.shape
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, G, D).transpose(1, 2)  # (B, G, T, D)
        v = self.v_proj(x).view(B, T, G, D).transpose(1, 2)  # (B, G, T, D)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)

        start = 0
        if kv_cache is not None:
            start = kv_cache.length
            k, v = kv_cache.update(k, v)  # (B, G, start + T, D) cada
        S = k.shape[2]

        # Cada cabeça de chave/valor serve group_size cabeças de consulta seguidas:
        # [k0, k1, k2] -> [k0, k0, k0, k1, k1, k1, k2, k2, k2]. (O SDPA também aceita
        # enable_gqa=True, que faz o mesmo sem copiar; aqui a repetição fica à vista.)
        if self.group_size > 1:
            k = k.repeat_interleave(self.group_size, dim=1)  # (B, H, S, D)
            v = v.repeat_interleave(self.group_size, dim=1)  # (B, H, S, D)

        if start == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # com T = 1 é o mesmo que sem máscara
        elif T == 1:
            out = F.scaled_dot_product_attention(q, k, v)  # o token novo vê tudo o que veio antes
        else:
            # consulta i (posição start + i) vê as chaves 0 .. start + i
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=start)  # (T, S)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(B, T, H * D)  # (B, T, C)
        return self.o_proj(out)

    def extra_repr(self) -> str:
        return f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}"


# ----------------------------------------------------------------------------- o bloco e o modelo
class LlamaBlock(nn.Module):
    """Um bloco Llama (cap. 5): o mesmo *pre-norm* com conexões residuais do GPT-2.

    ::

        x = x + atenção(rmsnorm(x))
        x = x + swiglu(rmsnorm(x))

    Sem *dropout*: modelos deste porte são pré-treinados com tantos dados que não o usam.

    Args:
        cfg: a configuração do modelo.
    """

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.attn = GroupedQueryAttention(cfg.emb_dim, cfg.n_heads, cfg.n_kv_heads)
        self.ffn_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.ffn = SwiGLUFeedForward(cfg.emb_dim, cfg.hidden_dim)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """``(B, T, C)`` -> ``(B, T, C)``."""
        x = x + self.attn(self.attn_norm(x), cos, sin, kv_cache)
        return x + self.ffn(self.ffn_norm(x))


class LlamaModel(CausalLM):
    """Um modelo de linguagem da família Llama (cap. 5): IDs ``(B, T)`` -> *logits* ``(B, T, V)``.

    *Embedding* de tokens (sem *embedding* posicional: a posição entra pela RoPE dentro
    da atenção), ``n_layers`` blocos ``LlamaBlock``, ``RMSNorm`` final e a cabeça de
    saída — com ``tie_weights`` é a própria matriz do *embedding*, usada ao contrário:
    ``logits = x @ tok_emb.weightᵀ``.

    Pesos iniciais: normal com desvio 0,02 e as normalizações em 1 (só importam para
    modelos treinados do zero; ``companion.pretrained`` sobrescreve tudo).

    Args:
        cfg: a configuração (veja ``LlamaConfig`` e ``LlamaConfig.preset``).

    Raises:
        TypeError: se ``cfg`` não for um ``LlamaConfig``.
    """

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        if not isinstance(cfg, LlamaConfig):
            raise TypeError(f"LlamaModel espera um LlamaConfig; recebi {type(cfg).__name__}.")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.blocks = nn.ModuleList([LlamaBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.emb_dim, cfg.norm_eps)
        self.out_head = None if cfg.tie_weights else nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Re)inicializa os pesos (veja o docstring da classe)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    # ------------------------------------------------------------------ a interface CausalLM
    def embed(self, idx: Tensor, start: int) -> Tensor:
        """Só o *embedding* de tokens: a posição entra pela RoPE, dentro da atenção."""
        return self.tok_emb(idx)  # (B, T, C)

    def block_inputs(self, start: int, T: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Os ângulos da RoPE das posições ``[start, start + T)``: ``(cos, sin)``, cada um ``(T, D)``."""
        positions = torch.arange(start, start + T, device=x.device)  # (T,)
        return rope_angles(self.cfg.head_dim, positions, self.cfg.rope_base, dtype=x.dtype)

    # hidden_states, forward, check_input e new_kv_caches vêm de CausalLM (companion.lm).

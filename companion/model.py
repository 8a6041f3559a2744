"""O modelo GPT: configuração, peças do bloco Transformer e o modelo completo (cap. 4).

O capítulo 4 monta o GPT de baixo para cima, e cada passo é uma peça deste arquivo:

1. ``GPTConfig`` — os hiperparâmetros, validados, com *presets* (GPT-2 e os do curso);
2. ``DummyGPTModel`` — o esqueleto, com blocos e normalização que não fazem nada, para
   ver os formatos antes das contas;
3. ``LayerNorm`` e ``GELU`` — escritos à mão (``fused=False``), com um caminho rápido
   (``fused=True``, o padrão) que chama o *kernel* do PyTorch; os testes conferem que
   os dois caminhos e os módulos do PyTorch dão o mesmo resultado;
4. ``FeedForward`` — a rede de duas camadas aplicada a cada posição;
5. ``TransformerBlock`` — atenção + *feed-forward*, cada um com normalização antes e
   conexão residual em volta (*pre-LN*, como no GPT-2);
6. ``GPTModel`` — *embeddings* de token e de posição, os blocos, a normalização final e
   a cabeça de saída, que pode compartilhar os pesos do *embedding* (*weight tying*);
7. contabilidade: ``count_parameters``, ``parameter_breakdown`` e ``memory_bytes``.

Os nomes dos parâmetros são estáveis (o cap. 5 carrega os pesos do GPT-2 por nome e
grava *checkpoints*)::

    tok_emb.weight, pos_emb.weight,
    trf_blocks.{i}.norm1.{weight,bias}, trf_blocks.{i}.att.W_query.{weight,bias}, ...W_key, ...W_value,
    trf_blocks.{i}.att.out_proj.{weight,bias}, trf_blocks.{i}.norm2.{weight,bias},
    trf_blocks.{i}.ff.fc1.{weight,bias}, trf_blocks.{i}.ff.fc2.{weight,bias},
    final_norm.{weight,bias}, out_head.weight

Com ``tie_weights=True``, ``out_head.weight`` e ``tok_emb.weight`` são o MESMO tensor
(o ``state_dict`` mostra as duas chaves; para gravar com safetensors use
``safetensors.torch.save_model``, que entende pesos compartilhados).

Convenção de formatos: ``B`` = lote, ``T`` = tokens, ``C`` = ``emb_dim``, ``V`` = vocabulário.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion._checks import check_bool, check_int, check_probability
from companion.attention import KVCache, MultiHeadAttention
from companion.lm import CausalLM, PresetsMixin

__all__ = [
    "GPTConfig",
    "DummyGPTModel",
    "LayerNorm",
    "GELU",
    "FeedForward",
    "TransformerBlock",
    "GPTModel",
    "count_parameters",
    "parameter_breakdown",
    "memory_bytes",
]


# ----------------------------------------------------------------------------- configuração
@dataclass
class GPTConfig(PresetsMixin):
    """Hiperparâmetros de um GPT (cap. 4).

    Os valores padrão são os do GPT-2 pequeno, exceto ``qkv_bias`` (use
    ``GPTConfig.preset("gpt2-small")`` para o GPT-2 exato).

    Args:
        vocab_size: número de tokens do vocabulário ``V`` (50.257 no GPT-2).
        context_length: máximo de tokens que o modelo vê de uma vez (tamanho do
            *embedding* posicional).
        emb_dim: dimensão ``C`` dos *embeddings* e de tudo o que circula entre os blocos.
        n_heads: cabeças de atenção; precisa dividir ``emb_dim``.
        n_layers: número de blocos Transformer.
        drop_rate: probabilidade de *dropout* (embeddings, atenção e ramos residuais).
        qkv_bias: se as projeções de consulta/chave/valor têm viés (o GPT-2 tem).
        tie_weights: se a cabeça de saída reutiliza os pesos do *embedding* de tokens
            (o GPT-2 faz isso; economiza ``vocab_size * emb_dim`` parâmetros).

    Raises:
        ValueError: valores fora do permitido (a mensagem diz qual e o que é aceito).
    """

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    tie_weights: bool = True

    # nome -> valores; preenchido logo abaixo da classe.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            check_int(name, getattr(self, name), 1, owner="GPTConfig: ")
        if self.emb_dim % self.n_heads != 0:
            raise ValueError(
                f"GPTConfig: emb_dim ({self.emb_dim}) deve ser divisível por n_heads "
                f"({self.n_heads}), porque cada cabeça recebe emb_dim // n_heads dimensões."
            )
        self.drop_rate = check_probability("drop_rate", self.drop_rate, owner="GPTConfig: ")
        for name in ("qkv_bias", "tie_weights"):
            check_bool(name, getattr(self, name), owner="GPTConfig: ")

    @property
    def head_dim(self) -> int:
        """Dimensão de cada cabeça de atenção: ``emb_dim // n_heads``."""
        return self.emb_dim // self.n_heads

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """Uma configuração pronta, com trocas opcionais.

        *Presets* do GPT-2 (Radford et al., 2019; ``qkv_bias=True``, cabeça amarrada,
        contexto 1024, vocabulário 50.257): ``gpt2-small`` (124M), ``gpt2-medium`` (355M),
        ``gpt2-large`` (774M), ``gpt2-xl`` (1,5B).

        *Presets* do curso, pensados para treinar na CPU com o corpus do curso
        (~110 mil caracteres) e o tokenizador do GPT-2:

        - ``curso-mini``: 2 blocos, ``emb_dim`` 64, contexto 64 — poucos minutos de treino;
        - ``curso-pequeno``: 4 blocos, ``emb_dim`` 128, contexto 128;
        - ``curso-medio``: 6 blocos, ``emb_dim`` 384, 6 cabeças, contexto 256 — o do
          *benchmark* (``python -m companion bench``), grande demais para treinar no livro.

        Args:
            name: nome do *preset* (veja ``GPTConfig.PRESETS``).
            **overrides: campos a trocar, por exemplo ``vocab_size=5000``.

        Raises:
            ValueError: nome desconhecido (a mensagem lista os válidos) ou campo inválido.
        """
        return super().preset(name, **overrides)


_GPT2 = {"vocab_size": 50257, "context_length": 1024, "drop_rate": 0.1, "qkv_bias": True, "tie_weights": True}
_CURSO = {"vocab_size": 50257, "drop_rate": 0.1, "qkv_bias": False, "tie_weights": True}
GPTConfig.PRESETS = {
    "gpt2-small": {**_GPT2, "emb_dim": 768, "n_heads": 12, "n_layers": 12},
    "gpt2-medium": {**_GPT2, "emb_dim": 1024, "n_heads": 16, "n_layers": 24},
    "gpt2-large": {**_GPT2, "emb_dim": 1280, "n_heads": 20, "n_layers": 36},
    "gpt2-xl": {**_GPT2, "emb_dim": 1600, "n_heads": 25, "n_layers": 48},
    "curso-mini": {**_CURSO, "context_length": 64, "emb_dim": 64, "n_heads": 4, "n_layers": 2},
    "curso-pequeno": {**_CURSO, "context_length": 128, "emb_dim": 128, "n_heads": 4, "n_layers": 4},
    "curso-medio": {**_CURSO, "context_length": 256, "emb_dim": 384, "n_heads": 6, "n_layers": 6},
}


# ----------------------------------------------------------------------------- o esqueleto
class DummyGPTModel(nn.Module):
    """Esqueleto do GPT (cap. 4): *embeddings* e cabeça de verdade, blocos que não fazem nada.

    Serve para ver o caminho dos formatos — ``(B, T)`` de IDs vira ``(B, T, C)`` e depois
    ``(B, T, V)`` de *logits* — antes de escrever as peças. Os blocos e a normalização
    são ``nn.Identity``.

    Args:
        cfg: a configuração do modelo.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[nn.Identity() for _ in range(cfg.n_layers)])
        self.final_norm = nn.Identity()
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)

    def forward(self, idx: Tensor) -> Tensor:
        """``idx`` ``(B, T)`` de IDs -> *logits* ``(B, T, V)``."""
        T = idx.shape[1]
        positions = torch.arange(T, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions)  # (B, T, C) + (T, C) -> (B, T, C)
        x = self.trf_blocks(self.drop_emb(x))
        return self.out_head(self.final_norm(x))  # (B, T, V)


# ----------------------------------------------------------------------------- as peças
class LayerNorm(nn.Module):
    """Normalização de camada (Ba et al., 2016; cap. 4), com as contas escritas à mão.

    Para cada vetor ``x`` (a última dimensão), subtrai a média, divide pelo desvio
    padrão (variância *enviesada*, dividindo por ``n`` como o GPT-2) e aplica uma escala
    ``weight`` e um deslocamento ``bias`` aprendidos::

        y = (x - média) / sqrt(variância + eps) * weight + bias

    Dois caminhos dão o mesmo resultado (os testes conferem), como na atenção do cap. 3:

    - ``fused=False`` (legível): a fórmula acima, operação por operação;
    - ``fused=True`` (rápido, o padrão): ``torch.nn.functional.layer_norm``, que faz as
      mesmas contas num só *kernel* — sem guardar cada resultado intermediário na
      memória, o que pesa no treino (sete operações viram uma, para frente e para trás).

    Mesmos nomes de parâmetros de ``torch.nn.LayerNorm`` (``weight``, ``bias``).

    Args:
        emb_dim: tamanho da última dimensão.
        eps: somado à variância para nunca dividir por zero (1e-5, como no GPT-2).
        fused: usa o *kernel* do PyTorch (``True``) ou a fórmula escrita à mão (``False``).
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5, fused: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.fused = fused
        self.weight = nn.Parameter(torch.ones(emb_dim))
        self.bias = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(..., emb_dim)`` -> mesmo formato, cada vetor com média 0 e variância 1 (antes da escala)."""
        if self.fused:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # (..., 1), dividindo por n
        x_hat = (x - mean) / torch.sqrt(var + self.eps)
        return x_hat * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, fused={self.fused}"


class GELU(nn.Module):
    """GELU com a aproximação por tangente hiperbólica (Hendrycks e Gimpel, 2016; cap. 4).

    ``GELU(x) = x * Φ(x)``, onde ``Φ`` é a distribuição acumulada da normal padrão. O
    GPT-2 usa a aproximação::

        GELU(x) ≈ 0.5 * x * (1 + tanh( sqrt(2/π) * (x + 0.044715 * x³) ))

    Dois caminhos com o mesmo resultado (os testes conferem): ``fused=False`` escreve a
    fórmula acima; ``fused=True`` (o padrão) chama
    ``torch.nn.functional.gelu(x, approximate="tanh")``, um único *kernel* — no treino,
    a GELU age sobre o maior tensor do bloco (``4 * emb_dim`` por posição), e cada
    operação separada o leria e escreveria inteiro na memória.

    Args:
        fused: usa o *kernel* do PyTorch (``True``) ou a fórmula escrita à mão (``False``).
    """

    def __init__(self, fused: bool = True) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, x: Tensor) -> Tensor:
        """Aplica a GELU elemento a elemento; o formato não muda."""
        if self.fused:
            return F.gelu(x, approximate="tanh")
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))

    def extra_repr(self) -> str:
        return f"fused={self.fused}"


class FeedForward(nn.Module):
    """Rede *feed-forward* de cada posição: ``C -> 4C -> GELU -> C`` (cap. 4).

    Expande cada vetor para quatro vezes a largura, aplica a não linearidade e volta ao
    tamanho original. É onde mora a maior parte dos parâmetros de cada bloco.

    Args:
        cfg: a configuração (usa ``emb_dim``).
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim)
        self.gelu = GELU()
        self.fc2 = nn.Linear(4 * cfg.emb_dim, cfg.emb_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C)`` -> ``(B, T, 4C)`` -> ``(B, T, C)``."""
        return self.fc2(self.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """Um bloco do GPT (cap. 4): duas subcamadas, cada uma com *pre-LN* e conexão residual.

    ::

        x = x + dropout(atenção(norm1(x)))
        x = x + dropout(feed_forward(norm2(x)))

    A conexão residual (He et al., 2016) soma a entrada de volta à saída, dando ao
    gradiente um caminho direto até as primeiras camadas.

    Args:
        cfg: a configuração do modelo.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.norm1 = LayerNorm(cfg.emb_dim)
        self.att = MultiHeadAttention(
            d_in=cfg.emb_dim,
            d_out=cfg.emb_dim,
            context_length=cfg.context_length,
            dropout=cfg.drop_rate,
            num_heads=cfg.n_heads,
            qkv_bias=cfg.qkv_bias,
        )
        self.norm2 = LayerNorm(cfg.emb_dim)
        self.ff = FeedForward(cfg)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """``(B, T, C)`` -> ``(B, T, C)``. Com ``kv_cache``, ``x`` traz só os tokens novos."""
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache=kv_cache))
        x = x + self.drop_shortcut(self.ff(self.norm2(x)))
        return x


# ----------------------------------------------------------------------------- o modelo
class GPTModel(CausalLM):
    """O GPT completo (cap. 4): IDs de tokens ``(B, T)`` -> *logits* ``(B, T, V)``.

    *Embedding* de token + *embedding* posicional (aprendido), *dropout*, ``n_layers``
    blocos Transformer, normalização final e a cabeça de saída linear (sem viés). Com
    ``cfg.tie_weights`` a cabeça usa os mesmos pesos do *embedding* de tokens.

    Pesos iniciais como no GPT-2: normal com desvio 0,02; vieses zerados; as projeções
    que desembocam na conexão residual (``att.out_proj`` e ``ff.fc2``) com desvio
    ``0,02 / sqrt(2 * n_layers)``, para que a soma dos ramos não cresça com a profundidade.

    Args:
        cfg: a configuração (veja ``GPTConfig`` e ``GPTConfig.preset``).

    Raises:
        TypeError: se ``cfg`` não for um ``GPTConfig``.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"GPTModel espera um GPTConfig; recebi {type(cfg).__name__}.")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = LayerNorm(cfg.emb_dim)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        self.reset_parameters()
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight  # o mesmo Parameter: (V, C)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Re)inicializa os pesos como o GPT-2 (veja o docstring da classe)."""
        std = 0.02
        residual_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                is_residual = name.endswith("att.out_proj") or name.endswith("ff.fc2")
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ a interface CausalLM
    @property
    def blocks(self) -> nn.ModuleList:
        """Os blocos Transformer (guardados como ``trf_blocks``, o nome dos pesos do cap. 4)."""
        return self.trf_blocks

    def embed(self, idx: Tensor, start: int) -> Tensor:
        """*Embedding* de token + *embedding* posicional (aprendido) das posições ``[start, start + T)``."""
        positions = torch.arange(start, start + idx.shape[1], device=idx.device)  # (T,)
        x = self.tok_emb(idx) + self.pos_emb(positions)  # (B, T, C) + (T, C) -> (B, T, C)
        return self.drop_emb(x)

    # hidden_states, forward, check_input e new_kv_caches vêm de CausalLM (companion.lm).


# ----------------------------------------------------------------------------- contabilidade
def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Número de parâmetros de um módulo, contando uma vez os pesos compartilhados.

    Args:
        model: qualquer ``nn.Module`` (pode estar no *device* ``meta``).
        trainable_only: conta só os que têm ``requires_grad``.

    Returns:
        O total de números ajustáveis.
    """
    # model.parameters() já devolve cada Parameter uma única vez, mesmo se amarrado.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_breakdown(cfg: GPTConfig) -> dict[str, int]:
    """Parâmetros de um ``GPTModel`` calculados pela configuração, sem criar o modelo.

    Args:
        cfg: a configuração.

    Returns:
        Dicionário com as partes (``embedding de tokens``, ``embedding posicional``,
        ``atenção``, ``feed-forward``, ``normalizações``, ``cabeça de saída``) e
        ``total``. Com ``tie_weights`` a cabeça conta 0 (reaproveita o *embedding*).
    """
    C, V = cfg.emb_dim, cfg.vocab_size
    qkv = 3 * (C * C + (C if cfg.qkv_bias else 0))
    attention = cfg.n_layers * (qkv + C * C + C)  # + out_proj com viés
    feed_forward = cfg.n_layers * ((C * 4 * C + 4 * C) + (4 * C * C + C))
    norms = (2 * cfg.n_layers + 1) * 2 * C  # weight e bias de cada LayerNorm
    parts = {
        "embedding de tokens": V * C,
        "embedding posicional": cfg.context_length * C,
        "atenção": attention,
        "feed-forward": feed_forward,
        "normalizações": norms,
        "cabeça de saída": 0 if cfg.tie_weights else C * V,
    }
    parts["total"] = sum(parts.values())
    return parts


def memory_bytes(n_params: int, dtype: torch.dtype = torch.float32, training: bool = False) -> int:
    """Bytes para guardar ``n_params`` parâmetros (e, no treino, o que o AdamW precisa).

    No treino com AdamW cada parâmetro tem também um gradiente e dois momentos, todos do
    mesmo tipo: quatro cópias. As ativações não entram na conta (dependem do lote).

    Args:
        n_params: número de parâmetros (``count_parameters`` ou ``parameter_breakdown``).
        dtype: tipo dos números (``torch.float32`` = 4 bytes, ``torch.bfloat16`` = 2...).
        training: soma gradientes e os dois momentos do AdamW.

    Returns:
        Número de bytes.

    Raises:
        ValueError: ``n_params`` negativo ou não inteiro.
        TypeError: ``dtype`` que não é ``torch.dtype``.
    """
    check_int("n_params", n_params, 0)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype deve ser um torch.dtype (ex.: torch.float32); recebi {dtype!r}.")
    copies = 4 if training else 1
    return n_params * dtype.itemsize * copies

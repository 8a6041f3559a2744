"""Atenção: da média ponderada sem pesos à atenção causal multi-cabeça rápida (cap. 3).

O capítulo 3 constrói a atenção em passos pequenos, e cada passo é uma peça de verdade
deste arquivo, guardada ao lado da versão final:

1. ``simplified_attention`` — autoatenção sem pesos treináveis: pontuações por produto
   escalar, *softmax* e média ponderada dos próprios *embeddings*;
2. ``SelfAttentionV1`` — consultas, chaves e valores com matrizes ``nn.Parameter``;
3. ``SelfAttentionV2`` — as mesmas contas com ``nn.Linear``;
4. ``CausalAttention`` — máscara causal (um *buffer* registrado) e *dropout* nos pesos;
5. ``MultiHeadAttentionWrapper`` — várias cabeças causais empilhadas;
6. ``MultiHeadAttention`` — uma projeção só, dividida em cabeças, com projeção de saída,
   um caminho rápido (``torch.nn.functional.scaled_dot_product_attention``), um caminho
   legível (as contas escritas à mão) e suporte a ``KVCache`` para a geração (cap. 4).

Convenção de formatos: ``B`` = tamanho do lote, ``T`` = número de tokens, ``H`` = número
de cabeças, ``D`` = dimensão de cada cabeça (``head_dim``).

Convenção da máscara: em todo este arquivo, ``mask[i, j] == True`` quer dizer "a posição
``i`` NÃO pode olhar para a posição ``j``" (``j`` está no futuro de ``i``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion._checks import check_int, check_probability

__all__ = [
    "KVCache",
    "MultiHeadAttention",
    "causal_mask",
    "simplified_attention",
    "SelfAttentionV1",
    "SelfAttentionV2",
    "CausalAttention",
    "MultiHeadAttentionWrapper",
]


# ----------------------------------------------------------------------------- validação
def _check_input(x: object, d_in: int, who: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{who} espera um tensor; recebi {type(x).__name__}.")
    if x.dim() != 3 or x.shape[-1] != d_in:
        raise ValueError(
            f"{who} espera um tensor (lote, tokens, {d_in}); recebi o formato {tuple(x.shape)}."
        )


def causal_mask(context_length: int, device: torch.device | str | None = None) -> Tensor:
    """Máscara causal booleana: ``True`` acima da diagonal (o futuro, que fica escondido).

    Args:
        context_length: número máximo de tokens.
        device: onde criar a máscara.

    Returns:
        Tensor ``bool`` de formato ``(context_length, context_length)`` com
        ``mask[i, j] = j > i``.

    Raises:
        ValueError: se ``context_length`` não for um inteiro >= 1.
    """
    check_int("context_length", context_length, 1)
    ones = torch.ones(context_length, context_length, dtype=torch.bool, device=device)
    return torch.triu(ones, diagonal=1)


# ----------------------------------------------------------------------------- passos de ensino
def simplified_attention(x: Tensor) -> tuple[Tensor, Tensor]:
    """Autoatenção sem pesos treináveis: o primeiro passo do cap. 3.

    Cada token compara o seu vetor com o de todos os outros (produto escalar), transforma
    as pontuações em pesos com *softmax* e devolve a média ponderada dos vetores.

    Args:
        x: vetores dos tokens, ``(T, d)`` ou ``(B, T, d)``.

    Returns:
        ``(context, weights)``: vetores de contexto com o formato de ``x`` e pesos de
        atenção ``(T, T)`` (ou ``(B, T, T)``), cada linha somando 1.

    Raises:
        TypeError / ValueError: se ``x`` não for um tensor de ponto flutuante com 2 ou 3 eixos.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"simplified_attention espera um tensor; recebi {type(x).__name__}.")
    if x.dim() not in (2, 3) or not x.is_floating_point():
        raise ValueError(
            "simplified_attention espera um tensor de ponto flutuante (tokens, d) ou "
            f"(lote, tokens, d); recebi formato {tuple(x.shape)} e tipo {x.dtype}."
        )
    scores = x @ x.transpose(-2, -1)  # (..., T, d) @ (..., d, T) -> (..., T, T)
    weights = torch.softmax(scores, dim=-1)  # (..., T, T)
    return weights @ x, weights  # (..., T, d), (..., T, T)


class SelfAttentionV1(nn.Module):
    """Autoatenção com pesos treináveis guardados em ``nn.Parameter`` (cap. 3).

    ``W_query``, ``W_key`` e ``W_value`` são matrizes ``(d_in, d_out)``: ``q = x @ W_query``.
    Sem máscara: todo token olha para todos (inclusive os do futuro).

    Args:
        d_in: dimensão dos vetores de entrada.
        d_out: dimensão das consultas, chaves e valores.

    Raises:
        ValueError: se algum tamanho não for um inteiro >= 1.
    """

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        check_int("d_in", d_in, 1)
        check_int("d_out", d_out, 1)
        self.d_in, self.d_out = d_in, d_out
        # Inicialização uniforme em ±1/sqrt(d_in), a mesma escala que nn.Linear usa.
        bound = 1.0 / math.sqrt(d_in)
        self.W_query = nn.Parameter(torch.empty(d_in, d_out).uniform_(-bound, bound))
        self.W_key = nn.Parameter(torch.empty(d_in, d_out).uniform_(-bound, bound))
        self.W_value = nn.Parameter(torch.empty(d_in, d_out).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(T, d_in)`` ou ``(B, T, d_in)`` -> vetores de contexto ``(..., T, d_out)``."""
        queries = x @ self.W_query  # (..., T, d_out)
        keys = x @ self.W_key  # (..., T, d_out)
        values = x @ self.W_value  # (..., T, d_out)
        scores = queries @ keys.transpose(-2, -1)  # (..., T, T)
        weights = torch.softmax(scores / math.sqrt(self.d_out), dim=-1)  # (..., T, T)
        return weights @ values  # (..., T, d_out)


class SelfAttentionV2(nn.Module):
    """A mesma autoatenção de ``SelfAttentionV1``, agora com ``nn.Linear`` (cap. 3).

    ``nn.Linear`` guarda o peso transposto (``(d_out, d_in)``) e faz ``x @ weight.T``;
    com ``weight = W.T`` as duas versões dão o mesmo resultado.

    Args:
        d_in: dimensão dos vetores de entrada.
        d_out: dimensão das consultas, chaves e valores.
        qkv_bias: se as três projeções têm viés.

    Raises:
        ValueError: se algum tamanho não for um inteiro >= 1.
    """

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False) -> None:
        super().__init__()
        check_int("d_in", d_in, 1)
        check_int("d_out", d_out, 1)
        self.d_in, self.d_out = d_in, d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(T, d_in)`` ou ``(B, T, d_in)`` -> vetores de contexto ``(..., T, d_out)``."""
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)  # (..., T, d_out)
        scores = queries @ keys.transpose(-2, -1)  # (..., T, T)
        weights = torch.softmax(scores / math.sqrt(self.d_out), dim=-1)  # (..., T, T)
        return weights @ values  # (..., T, d_out)


class CausalAttention(nn.Module):
    """Autoatenção causal de uma cabeça, com *dropout* nos pesos (cap. 3).

    A máscara causal é um *buffer* registrado: acompanha o módulo em ``.to(device)``,
    mas não é um parâmetro treinável nem vai para o ``state_dict``.

    Args:
        d_in: dimensão dos vetores de entrada.
        d_out: dimensão das consultas, chaves e valores.
        context_length: número máximo de tokens.
        dropout: probabilidade de *dropout* nos pesos de atenção (só no treinamento).
        qkv_bias: se as três projeções têm viés.

    Raises:
        ValueError: tamanhos não positivos ou ``dropout`` fora de [0, 1).
    """

    mask: Tensor

    def __init__(
        self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False
    ) -> None:
        super().__init__()
        for name, value in (("d_in", d_in), ("d_out", d_out), ("context_length", context_length)):
            check_int(name, value, 1)
        check_probability("dropout", dropout)
        self.d_in, self.d_out, self.context_length = d_in, d_out, context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(B, T, d_in)`` -> vetores de contexto ``(B, T, d_out)``.

        Raises:
            TypeError / ValueError: entrada com formato errado ou maior que ``context_length``.
        """
        _check_input(x, self.d_in, "CausalAttention")
        T = x.shape[1]
        if T > self.context_length:
            raise ValueError(f"recebi {T} tokens, mas context_length={self.context_length}.")
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)  # (B, T, d_out)
        scores = queries @ keys.transpose(1, 2)  # (B, T, d_out) @ (B, d_out, T) -> (B, T, T)
        scores = scores.masked_fill(self.mask[:T, :T], float("-inf"))
        weights = torch.softmax(scores / math.sqrt(self.d_out), dim=-1)  # (B, T, T)
        weights = self.dropout(weights)
        return weights @ values  # (B, T, d_out)


class MultiHeadAttentionWrapper(nn.Module):
    """Várias cabeças ``CausalAttention`` lado a lado, saídas concatenadas (cap. 3).

    A versão "ingênua" da atenção multi-cabeça: cada cabeça tem as suas próprias três
    projeções de ``d_in`` para ``d_out // num_heads`` e roda uma depois da outra.
    ``MultiHeadAttention`` faz a mesma conta com uma projeção só (e mais rápido).

    Args:
        d_in: dimensão dos vetores de entrada.
        d_out: dimensão da saída (a soma das dimensões das cabeças).
        context_length: número máximo de tokens.
        dropout: probabilidade de *dropout* nos pesos de atenção.
        num_heads: número de cabeças; precisa dividir ``d_out``.
        qkv_bias: se as projeções têm viés.

    Raises:
        ValueError: tamanhos não positivos, ``dropout`` fora de [0, 1) ou ``d_out`` não
            divisível por ``num_heads``.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        check_int("num_heads", num_heads, 1)
        check_int("d_out", d_out, 1)
        if d_out % num_heads != 0:
            raise ValueError(
                f"d_out ({d_out}) deve ser divisível por num_heads ({num_heads}): cada cabeça "
                "recebe d_out // num_heads dimensões."
            )
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.heads = nn.ModuleList(
            CausalAttention(d_in, self.head_dim, context_length, dropout, qkv_bias)
            for _ in range(num_heads)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(B, T, d_in)`` -> ``(B, T, d_out)``: as cabeças concatenadas no último eixo."""
        return torch.cat([head(x) for head in self.heads], dim=-1)  # H x (B, T, D) -> (B, T, H*D)


# ----------------------------------------------------------------------------- KV cache
class KVCache:
    """Cache K/V pré-alocado de UMA camada: (batch, num_heads, max_len, head_dim).

    Na geração (cap. 4), cada novo token precisa das chaves e dos valores de todos os
    tokens anteriores. Em vez de recalculá-los a cada passo, guardamos as chaves e os
    valores já calculados. Os dois tensores são alocados uma única vez, com espaço para
    ``max_len`` posições; ``update`` copia os novos pedaços para o lugar certo e devolve
    *visões* (sem cópia) de tudo o que já foi guardado.

    Args:
        batch_size: tamanho do lote ``B``.
        num_heads: número de cabeças ``H``.
        max_len: número máximo de posições guardadas.
        head_dim: dimensão de cada cabeça ``D``.
        dtype: tipo dos tensores guardados.
        device: onde alocar os tensores.

    Attributes:
        keys, values: os tensores pré-alocados, formato ``(B, H, max_len, D)``.
        length: quantas posições já estão guardadas.

    Raises:
        ValueError: se algum tamanho não for um inteiro >= 1.
    """

    def __init__(
        self,
        batch_size: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        for name, value in (
            ("batch_size", batch_size),
            ("num_heads", num_heads),
            ("max_len", max_len),
            ("head_dim", head_dim),
        ):
            check_int(name, value, 1)
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype deve ser um torch.dtype (ex.: torch.float32); recebi {dtype!r}.")
        self.batch_size = batch_size
        self.num_heads = num_heads
        self.max_len = max_len
        self.head_dim = head_dim
        shape = (batch_size, num_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # (B, H, max_len, D)
        self.values = torch.zeros(shape, dtype=dtype, device=device)  # (B, H, max_len, D)
        self.length = 0

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Grava ``k``, ``v`` nas posições ``[length, length + T_new)`` e devolve tudo o que está guardado.

        Args:
            k, v: chaves e valores novos, formato ``(B, H, T_new, D)``.

        Returns:
            ``(keys, values)``: visões de formato ``(B, H, length + T_new, D)`` (o novo
            ``length``) dos tensores pré-alocados — nenhuma memória nova é alocada.

        Raises:
            ValueError: se os formatos não baterem com o cache ou se as novas posições
                não couberem em ``max_len``.
        """
        expected = (self.batch_size, self.num_heads, self.head_dim)
        if k.dim() != 4 or (k.shape[0], k.shape[1], k.shape[3]) != expected or v.shape != k.shape:
            raise ValueError(
                "KVCache.update espera k e v de formato (batch, num_heads, T_new, head_dim) = "
                f"({self.batch_size}, {self.num_heads}, T_new, {self.head_dim}); "
                f"recebi k {tuple(k.shape)} e v {tuple(v.shape)}."
            )
        start = self.length
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"o KVCache estourou: já guarda {start} posições e recebeu mais {k.shape[2]}, "
                f"mas cabem no máximo max_len={self.max_len}. Crie o cache com um max_len maior "
                "ou chame reset()."
            )
        self.keys[:, :, start:end].copy_(k)
        self.values[:, :, start:end].copy_(v)
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]  # (B, H, end, D) cada

    def reset(self) -> None:
        """Esquece tudo o que foi guardado (não apaga a memória: ela será sobrescrita)."""
        self.length = 0

    def __repr__(self) -> str:
        return (
            f"KVCache(batch_size={self.batch_size}, num_heads={self.num_heads}, "
            f"max_len={self.max_len}, head_dim={self.head_dim}, length={self.length}, "
            f"dtype={self.keys.dtype})"
        )


# ----------------------------------------------------------------------------- a versão final
class MultiHeadAttention(nn.Module):
    """Atenção causal multi-cabeça: a peça que o GPT usa (cap. 3; usada pelo modelo do cap. 4).

    Uma única projeção ``d_in -> d_out`` para consultas, outra para chaves e outra para
    valores; cada uma é dividida em ``num_heads`` cabeças de ``head_dim = d_out // num_heads``
    dimensões. Cada cabeça faz atenção causal escalada por ``sqrt(head_dim)``; as saídas
    das cabeças são concatenadas e passam por ``out_proj``.

    Dois caminhos dão o mesmo resultado (no modo ``eval``):

    - ``use_sdpa=True`` (rápido): ``torch.nn.functional.scaled_dot_product_attention``;
    - ``use_sdpa=False`` (legível): pontuações explícitas, ``masked_fill`` com ``-inf``,
      *softmax*, *dropout* e multiplicação pelos valores — as contas do capítulo.

    Args:
        d_in: dimensão dos vetores de entrada.
        d_out: dimensão da saída (soma das dimensões das cabeças).
        context_length: número máximo de posições (tamanho da máscara causal).
        dropout: probabilidade de *dropout* nos pesos de atenção (só no treinamento).
        num_heads: número de cabeças; precisa dividir ``d_out``.
        qkv_bias: se as projeções de consulta, chave e valor têm viés.
        use_sdpa: usa o caminho rápido (``True``) ou o legível (``False``).

    Raises:
        ValueError: tamanhos não positivos, ``dropout`` fora de [0, 1) ou ``d_out`` não
            divisível por ``num_heads``.
    """

    mask: Tensor

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool = False,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("d_in", d_in),
            ("d_out", d_out),
            ("context_length", context_length),
            ("num_heads", num_heads),
        ):
            check_int(name, value, 1)
        check_probability("dropout", dropout)
        if d_out % num_heads != 0:
            raise ValueError(
                f"d_out ({d_out}) deve ser divisível por num_heads ({num_heads}): cada cabeça "
                "recebe d_out // num_heads dimensões."
            )
        self.d_in = d_in
        self.d_out = d_out
        self.context_length = context_length
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.dropout_p = float(dropout)
        self.use_sdpa = bool(use_sdpa)

        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # Calculada uma vez; não vai para o state_dict (é derivada de context_length).
        self.register_buffer("mask", causal_mask(context_length), persistent=False)

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Consultas, chaves e valores já divididos em cabeças: ``(B, H, T, D)`` cada."""
        B, T, _ = x.shape
        shape = (B, T, self.num_heads, self.head_dim)
        q = self.W_query(x).view(shape).transpose(1, 2)  # (B, T, d_out) -> (B, H, T, D)
        k = self.W_key(x).view(shape).transpose(1, 2)  # (B, H, T, D)
        v = self.W_value(x).view(shape).transpose(1, 2)  # (B, H, T, D)
        return q, k, v

    def _check_forward(self, x: Tensor, kv_cache: KVCache | None) -> int:
        """Valida a entrada e devolve a posição do primeiro token novo."""
        _check_input(x, self.d_in, "MultiHeadAttention")
        start = 0 if kv_cache is None else kv_cache.length
        if start + x.shape[1] > self.context_length:
            raise ValueError(
                f"a sequência chegaria à posição {start + x.shape[1]}, mas context_length="
                f"{self.context_length}; use no máximo {self.context_length} tokens."
            )
        return start

    def forward(self, x: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """Aplica a atenção causal multi-cabeça.

        Args:
            x: entrada ``(B, T, d_in)``. Com ``kv_cache``, só os tokens NOVOS, que ocupam
                as posições ``[kv_cache.length, kv_cache.length + T)`` e olham (causalmente)
                para tudo o que está no cache e para si mesmos.
            kv_cache: cache desta camada (cap. 4) ou ``None``.

        Returns:
            Tensor ``(B, T, d_out)``.

        Raises:
            TypeError / ValueError: entrada com formato errado, sequência maior que
                ``context_length`` ou cache estourado/incompatível.
        """
        start = self._check_forward(x, kv_cache)
        B, T, _ = x.shape
        q, k, v = self._project(x)  # (B, H, T, D) cada
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, H, start + T, D) cada
        end = start + T

        if self.use_sdpa:
            p = self.dropout_p if self.training else 0.0
            if start == 0:
                # Sem passado: a máscara causal quadrada de sempre, feita dentro do kernel.
                context = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            elif T == 1:
                # Um token novo pode olhar para tudo o que já existe: nenhuma máscara.
                context = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            else:
                # Pedaço novo depois de um passado: linhas [start, end) da máscara.
                # (Para o SDPA, True = "pode olhar", o contrário da nossa convenção.)
                allowed = ~self.mask[start:end, :end]  # (T, end)
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        else:
            weights = self._weights(q, k, start, end)  # (B, H, T, end)
            weights = self.dropout(weights)
            context = weights @ v  # (B, H, T, end) @ (B, H, end, D) -> (B, H, T, D)

        context = context.transpose(1, 2).reshape(B, T, self.d_out)  # (B, H, T, D) -> (B, T, d_out)
        return self.out_proj(context)

    def _weights(self, q: Tensor, k: Tensor, start: int, end: int) -> Tensor:
        """Pesos de atenção do caminho legível: ``(B, H, T, end)``, sem *dropout*."""
        scores = q @ k.transpose(-2, -1)  # (B, H, T, D) @ (B, H, D, end) -> (B, H, T, end)
        scores = scores / math.sqrt(self.head_dim)
        scores = scores.masked_fill(self.mask[start:end, :end], float("-inf"))
        return torch.softmax(scores, dim=-1)

    @torch.no_grad()
    def attention_weights(self, x: Tensor) -> Tensor:
        """Os pesos de atenção de cada cabeça, para desenhar (mapas de calor, cap. 3).

        Args:
            x: entrada ``(B, T, d_in)``.

        Returns:
            Tensor ``(B, H, T, T)``: linha ``i`` = como o token ``i`` distribui a sua
            atenção entre os tokens ``0..i`` (soma 1; o futuro recebe 0). Sem *dropout*.
        """
        self._check_forward(x, None)
        q, k, _ = self._project(x)  # (B, H, T, D) cada
        return self._weights(q, k, 0, x.shape[1])

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, "
            f"context_length={self.context_length}, use_sdpa={self.use_sdpa}"
        )

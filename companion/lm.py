"""A interface comum dos modelos de linguagem causais do curso: GPT, Llama e Gemma 3.

Os três modelos são a mesma máquina — *embedding* de tokens, uma pilha de blocos com
atenção causal, normalização final e uma cabeça que devolve *logits* —; mudam as peças
de dentro. Por isso todos herdam de ``CausalLM``, que escreve uma vez só o que é igual:

- ``check_input``: os IDs de entrada conferidos, com erros claros em português;
- ``new_kv_caches``: um ``KVCache`` (cap. 3) por bloco, com as cabeças de chave/valor do modelo;
- ``hidden_states`` e ``forward``: o caminho IDs -> vetores finais -> *logits*, com ou sem cache;
- ``output_weight`` e ``logits``: a cabeça de saída (amarrada ao *embedding* ou não), para
  quem calcula a perda sem montar todos os *logits* (``companion.loss``).

Cada modelo diz só o que é dele: ``embed`` (tokens -> vetores, com ou sem posição
absoluta), ``block_inputs`` (o que cada bloco recebe além de ``x``: nada no GPT, os
ângulos da RoPE no Llama...) e os atributos ``tok_emb``, ``blocks``, ``final_norm`` e
``out_head`` (``None`` quando amarrada); o formato do cache vem de ``cfg`` (``n_kv_heads``
ou ``n_heads``, e ``head_dim``). Um único ``companion.generation.generate``
serve então para todos.

Convenção de formatos: ``B`` = lote, ``T`` = tokens, ``C`` = largura, ``V`` = vocabulário.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion._checks import check_int
from companion.attention import KVCache

__all__ = ["PresetsMixin", "CausalLM"]


class PresetsMixin:
    """``Config.preset(nome, **trocas)`` para as configurações (dataclasses) dos modelos."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Any:
        """Uma configuração pronta, com trocas opcionais.

        Args:
            name: nome do *preset* (veja ``PRESETS`` da configuração).
            **overrides: campos a trocar, por exemplo ``vocab_size=5000``.

        Returns:
            Uma configuração nova (validada).

        Raises:
            ValueError: nome desconhecido (a mensagem lista os válidos) ou campo inválido.
        """
        if name not in cls.PRESETS:
            raise ValueError(f"preset desconhecido: {name!r}. Os válidos são: {', '.join(cls.PRESETS)}.")
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(
                f"{cls.__name__}.preset: campo(s) desconhecido(s) {unknown}; os campos são {sorted(fields)}."
            )
        return cls(**{**cls.PRESETS[name], **overrides})


def _exporting() -> bool:
    """Dentro de ``torch.compile``/``torch.export``/``jit.trace``, conferências que leem valores ficam de fora."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


class CausalLM(nn.Module):
    """Um modelo de linguagem causal: IDs ``(B, T)`` -> *logits* ``(B, T, V)``.

    Subclasses definem ``cfg`` (com ``vocab_size``, ``context_length``, ``n_layers``),
    ``tok_emb``, ``blocks``, ``final_norm``, ``out_head`` (ou ``None``, cabeça amarrada),
    ``kv_heads``/``head_dim`` (formato do cache), ``embed`` e ``block_inputs``.
    """

    cfg: Any

    # ------------------------------------------------------------------ o que cada modelo define
    @property
    def kv_heads(self) -> int:
        """Cabeças de chave/valor de cada bloco (o tamanho do cache): ``cfg.n_kv_heads``, ou ``cfg.n_heads``."""
        return getattr(self.cfg, "n_kv_heads", self.cfg.n_heads)

    @property
    def head_dim(self) -> int:
        """Dimensão de cada cabeça de atenção (``cfg.head_dim``)."""
        return self.cfg.head_dim

    def embed(self, idx: Tensor, start: int) -> Tensor:
        """IDs ``(B, T)`` nas posições ``[start, start + T)`` -> vetores ``(B, T, C)``."""
        raise NotImplementedError

    def block_inputs(self, start: int, T: int, x: Tensor) -> tuple[Any, ...]:
        """O que cada bloco recebe além de ``x`` (e do cache), para as posições ``[start, start + T)``."""
        return ()

    # ------------------------------------------------------------------ o que é igual em todos
    @property
    def output_weight(self) -> Tensor:
        """A matriz da cabeça de saída ``(V, C)``: a do *embedding* quando amarrada."""
        head = getattr(self, "out_head", None)
        return self.tok_emb.weight if head is None else head.weight

    def logits(self, hidden: Tensor) -> Tensor:
        """Vetores finais ``(..., C)`` -> *logits* ``(..., V)``."""
        head = getattr(self, "out_head", None)
        return F.linear(hidden, self.tok_emb.weight) if head is None else head(hidden)

    def check_input(self, idx: object, start: int = 0, check_length: bool = True) -> None:
        """Confere os IDs antes de qualquer conta, com erros claros em português.

        Args:
            idx: o que se pretende passar a ``forward``.
            start: posição do primeiro token (``> 0`` quando há tokens num KV cache).
            check_length: confere ``start + T <= context_length`` (``generate`` desliga,
                porque corta *prompts* longos).

        Raises:
            TypeError: não é tensor, ou não é de inteiros.
            ValueError: não é 2-D, está vazio, ultrapassa ``context_length`` ou tem IDs
                fora de ``[0, vocab_size)``.
        """
        name = type(self).__name__
        if not isinstance(idx, Tensor):
            raise TypeError(f"{name} espera um tensor de IDs de tokens (torch.long); recebi {type(idx).__name__}.")
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise TypeError(f"os IDs de tokens devem ser inteiros (torch.long); recebi dtype {idx.dtype}.")
        if idx.dim() != 2:
            raise ValueError(
                f"{name} espera IDs no formato (lote, tokens), um tensor 2-D; recebi o formato "
                f"{tuple(idx.shape)}. Para uma única frase use idx.unsqueeze(0)."
            )
        B, T = idx.shape
        if B == 0 or T == 0:
            raise ValueError(f"a entrada está vazia (formato {tuple(idx.shape)}); mande ao menos um token.")
        ctx = self.cfg.context_length
        if check_length and start + T > ctx:
            where = f"{T} tokens" if start == 0 else f"{T} tokens novos depois de {start} no cache"
            raise ValueError(
                f"a sequência tem {where}, mas o modelo aceita no máximo context_length={ctx}; "
                f"corte a entrada (por exemplo idx[:, -{ctx}:])."
            )
        if _exporting():
            return  # ler o menor e o maior ID pararia a exportação (e o compilador)
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= self.cfg.vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"ID de token fora do vocabulário: {bad}; os IDs permitidos vão de 0 a "
                f"{self.cfg.vocab_size - 1} (vocab_size={self.cfg.vocab_size})."
            )

    def new_kv_caches(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """Um ``KVCache`` vazio por bloco, no ``dtype``/``device`` do modelo.

        Args:
            batch_size: tamanho do lote da geração.
            max_len: posições reservadas (padrão: ``context_length``; reserve só o que vai usar).

        Returns:
            Lista com ``n_layers`` caches ``(B, kv_heads, max_len, head_dim)``.

        Raises:
            ValueError: ``max_len`` fora de ``[1, context_length]`` (ou tamanho inválido).
        """
        ctx = self.cfg.context_length
        max_len = ctx if max_len is None else max_len
        check_int("max_len", max_len, 1, ctx)
        weight = self.tok_emb.weight
        return [
            KVCache(batch_size, self.kv_heads, max_len, self.head_dim, dtype=weight.dtype, device=weight.device)
            for _ in range(self.cfg.n_layers)
        ]

    def hidden_states(
        self,
        idx: Tensor,
        kv_caches: list[KVCache] | None = None,
        *,
        last_only: bool = False,
        check: bool = True,
    ) -> Tensor:
        """Tudo menos a cabeça de saída: os vetores finais ``(B, T, C)``, já normalizados.

        Args:
            idx, kv_caches, last_only: como em ``forward``.
            check: confere a entrada (``generate`` desliga depois de conferir o *prompt*:
                os tokens que ele mesmo escolhe são válidos por construção).

        Returns:
            ``(B, T, C)`` — ou ``(B, 1, C)`` com ``last_only=True``.
        """
        start = 0
        if kv_caches is not None:
            if len(kv_caches) != self.cfg.n_layers:
                raise ValueError(
                    f"kv_caches deve ter um cache por bloco ({self.cfg.n_layers}); recebi {len(kv_caches)}."
                )
            start = kv_caches[0].length
        if check:
            self.check_input(idx, start)
        T = idx.shape[1]
        x = self.embed(idx, start)  # (B, T, C)
        extra = self.block_inputs(start, T, x)
        for i, block in enumerate(self.blocks):
            x = block(x, *extra, kv_cache=None if kv_caches is None else kv_caches[i])  # (B, T, C)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        return self.final_norm(x)

    def forward(
        self,
        idx: Tensor,
        kv_caches: list[KVCache] | None = None,
        *,
        last_only: bool = False,
        check: bool = True,
    ) -> Tensor:
        """Calcula os *logits* do próximo token para cada posição.

        Args:
            idx: IDs ``(B, T)`` inteiros em ``[0, vocab_size)``. Com ``kv_caches``, só os
                tokens NOVOS, que ocupam as posições ``[length, length + T)`` dos caches.
            kv_caches: um ``KVCache`` por bloco (de ``new_kv_caches``) ou ``None``. São
                atualizados no lugar.
            last_only: calcula os *logits* só da última posição (a geração só precisa
                dela; poupa a maior conta do modelo, ``C x V`` por posição).
            check: veja ``hidden_states``.

        Returns:
            *Logits* ``(B, T, V)`` — ou ``(B, 1, V)`` com ``last_only=True``.

        Raises:
            TypeError / ValueError: entrada inválida (veja ``check_input``) ou número de
                caches diferente de ``n_layers``.
        """
        return self.logits(self.hidden_states(idx, kv_caches, last_only=last_only, check=check))

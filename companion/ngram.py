"""Modelos de linguagem de contagem (n-gramas) — construídos no cap. 1.

Antes de qualquer rede neural, o capítulo 1 mostra que um modelo de linguagem é
só uma máquina de responder "qual é a próxima palavra?". O jeito mais simples de
respondê-la é contar: quantas vezes, no corpus, a palavra ``w`` veio logo depois
do contexto ``h``? Dividindo pelo total de vezes que ``h`` apareceu, temos uma
probabilidade:

    P(w | h) = (contagem(h, w) + k) / (contagem(h) + k * V)

onde ``V`` é o tamanho do vocabulário e ``k >= 0`` é a suavização *add-k*
(``k = 0``: contagem pura; ``k = 1``: suavização de Laplace). Com ``n = 2`` o
contexto é uma palavra (bigramas); com ``n = 3``, duas (trigramas).

Os modelos trabalham com palavras, não com os tokens de subpalavra do GPT (esses
chegam no cap. 2): ``split_words`` separa palavras e sinais de pontuação.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch

# Uma palavra (letras, dígitos ou "_", com hífens internos, como "guarda-chuva")
# ou um único sinal de pontuação.
_WORD_RE = re.compile(r"\w+(?:-\w+)*|[^\w\s]")

# Sinais que se colam à palavra anterior quando juntamos as palavras de volta.
_NO_SPACE_BEFORE = set(".,;:!?)]}…%")
_NO_SPACE_AFTER = set("([{")


def split_words(text: str, lowercase: bool = True) -> list[str]:
    """Separa um texto em palavras e sinais de pontuação (a "tokenização" do cap. 1).

    Args:
        text: o texto a separar.
        lowercase: se ``True``, passa tudo para minúsculas ("O" e "o" viram a mesma palavra).

    Returns:
        A lista de palavras e sinais, na ordem do texto. Exemplo:
        ``split_words("O céu está azul.") == ["o", "céu", "está", "azul", "."]``.

    Raises:
        TypeError: se ``text`` não for uma ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"split_words espera um texto (str); recebi {type(text).__name__}.")
    if lowercase:
        text = text.lower()
    return _WORD_RE.findall(text)


def join_words(words: Sequence[str]) -> str:
    """Junta palavras num texto legível: espaço entre palavras, pontuação colada.

    Args:
        words: palavras e sinais de pontuação, como os de ``split_words``.

    Returns:
        O texto, por exemplo ``join_words(["o", "céu", "está", "azul", "."]) == "o céu está azul."``.
    """
    text = ""
    for word in words:
        if text and word not in _NO_SPACE_BEFORE and text[-1] not in _NO_SPACE_AFTER:
            text += " "
        text += word
    return text


class NGramModel:
    """Modelo de linguagem de n-gramas por contagem, com suavização *add-k* opcional.

    Construído no cap. 1. O modelo guarda, para cada contexto de ``n - 1`` palavras,
    um ``Counter`` com as palavras que vieram logo depois dele no texto de treino.

    Args:
        n: ordem do modelo (2 = bigramas, 3 = trigramas...). O contexto tem ``n - 1`` palavras.
        k: suavização *add-k* usada por padrão (``0`` = contagem pura). Cada palavra do
            vocabulário ganha ``k`` ocorrências "imaginárias" depois de cada contexto.
        lowercase: passa o texto para minúsculas antes de contar.

    Atributos (depois de ``fit``):
        counts: ``dict`` contexto (tupla de ``n - 1`` palavras) -> ``Counter`` de próximas palavras.
        vocab: lista ordenada de todas as palavras vistas no treino.
        word_to_id: posição de cada palavra em ``vocab``.

    Raises:
        TypeError / ValueError: se ``n`` não for um inteiro >= 2 ou ``k`` não for um número >= 0.
    """

    def __init__(self, n: int = 2, k: float = 0.0, lowercase: bool = True) -> None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n deve ser um inteiro >= 2; recebi {n!r}.")
        if n < 2:
            raise ValueError(f"n deve ser >= 2 (2 = bigramas, 3 = trigramas...); recebi n={n}.")
        self.n = n
        self.k = self._check_k(k)
        self.lowercase = bool(lowercase)
        self.counts: dict[tuple[str, ...], Counter[str]] = {}
        self.vocab: list[str] = []
        self.word_to_id: dict[str, int] = {}
        self._totals: dict[tuple[str, ...], int] = {}

    # ------------------------------------------------------------------ treino
    def fit(self, text: str) -> NGramModel:
        """Conta os n-gramas de ``text`` (apaga contagens anteriores).

        Args:
            text: texto de treino; é separado com ``split_words``.

        Returns:
            O próprio modelo, para encadear: ``BigramModel().fit(texto)``.

        Raises:
            TypeError: se ``text`` não for ``str``.
            ValueError: se o texto tiver menos de ``n`` palavras.
        """
        if not isinstance(text, str):
            raise TypeError(f"fit espera o texto de treino (str); recebi {type(text).__name__}.")
        words = split_words(text, lowercase=self.lowercase)
        if len(words) < self.n:
            raise ValueError(
                f"O texto de treino tem {len(words)} palavra(s); um modelo com n={self.n} "
                f"precisa de pelo menos {self.n} para formar um n-grama."
            )
        counts: dict[tuple[str, ...], Counter[str]] = {}
        size = self.n - 1
        for i in range(size, len(words)):
            context = tuple(words[i - size : i])
            counts.setdefault(context, Counter())[words[i]] += 1
        self.counts = counts
        self._totals = {context: sum(c.values()) for context, c in counts.items()}
        self.vocab = sorted(set(words))
        self.word_to_id = {word: i for i, word in enumerate(self.vocab)}
        return self

    # --------------------------------------------------------------- consultas
    def next_word_probs(
        self, context: str | Sequence[str], top: int | None = None, k: float | None = None
    ) -> dict[str, float]:
        """Probabilidades da próxima palavra dado o contexto.

        Args:
            context: texto (``"o céu está"``) ou lista de palavras; só as últimas
                ``n - 1`` palavras contam.
            top: se dado, devolve só as ``top`` palavras mais prováveis.
            k: suavização *add-k* desta consulta (padrão: o ``k`` do modelo).

        Returns:
            ``dict`` palavra -> probabilidade, da mais para a menos provável (empates em
            ordem alfabética). Com ``k = 0`` só aparecem palavras vistas depois do contexto;
            com ``k > 0``, o vocabulário inteiro. Sem ``top``, os valores somam 1.

        Raises:
            ValueError: contexto vazio, curto demais, com palavra fora do vocabulário, que
                nunca foi seguido de outra palavra (com ``k = 0``), ou ``top`` < 1.
        """
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            raise ValueError(f"top deve ser um inteiro >= 1 (ou None para todas); recebi {top!r}.")
        probs = self.probs_tensor(context, k=k).tolist()  # V números, na ordem de vocab
        order = sorted((i for i, p in enumerate(probs) if p > 0), key=lambda i: (-probs[i], self.vocab[i]))
        if top is not None:
            order = order[:top]
        return {self.vocab[i]: probs[i] for i in order}

    def probs_tensor(self, context: str | Sequence[str], k: float | None = None) -> torch.Tensor:
        """Distribuição da próxima palavra como tensor, na ordem de ``vocab``.

        Args:
            context: como em ``next_word_probs``.
            k: suavização *add-k* (padrão: o ``k`` do modelo).

        Returns:
            Tensor ``float64`` de forma ``(V,)`` que soma 1.

        Raises:
            ValueError: como em ``next_word_probs``.
        """
        k = self.k if k is None else self._check_k(k)
        ctx = self._context_tuple(context)
        vocab_size = len(self.vocab)
        counts = torch.zeros(vocab_size, dtype=torch.float64)  # (V,)
        for word, count in self.counts.get(ctx, Counter()).items():
            counts[self.word_to_id[word]] = count
        total = self._totals.get(ctx, 0) + k * vocab_size
        if total == 0:
            raise ValueError(
                f"O contexto {' '.join(ctx)!r} nunca aparece no texto de treino seguido de outra "
                "palavra, então as contagens não dizem nada sobre ele. Use suavização (k > 0) "
                "ou outro contexto."
            )
        return (counts + k) / total

    def sample(
        self,
        context: str | Sequence[str],
        num_words: int = 10,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        k: float | None = None,
    ) -> str:
        """Gera texto sorteando uma palavra de cada vez (amostragem).

        A cada passo, o modelo olha as últimas ``n - 1`` palavras, calcula
        ``next_word_probs`` e sorteia a próxima com ``torch.multinomial``. Se o
        contexto nunca foi seguido de nada (só possível com ``k = 0``), para antes.

        Args:
            context: o começo do texto (string ou lista de palavras).
            num_words: quantas palavras gerar (>= 0).
            seed: semente para um sorteio reprodutível (cria um ``torch.Generator``).
            generator: alternativamente, um ``torch.Generator`` seu. Sem nenhum dos dois,
                usa o gerador global do PyTorch (fixado por ``companion.setup``).
            k: suavização *add-k* (padrão: o ``k`` do modelo).

        Returns:
            O contexto seguido das palavras geradas, juntos com ``join_words``.

        Raises:
            ValueError: contexto inválido (veja ``next_word_probs``), ``num_words`` < 0,
                ou ``seed`` e ``generator`` dados ao mesmo tempo.
        """
        if isinstance(num_words, bool) or not isinstance(num_words, int) or num_words < 0:
            raise ValueError(f"num_words deve ser um inteiro >= 0; recebi {num_words!r}.")
        if seed is not None and generator is not None:
            raise ValueError("Passe seed ou generator, não os dois.")
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        k = self.k if k is None else self._check_k(k)
        words = list(self._context_words(context))
        self._context_tuple(words)  # valida o contexto inicial (vazio, curto, desconhecido)
        for _ in range(num_words):
            ctx = tuple(words[-(self.n - 1) :])
            if k == 0 and self._totals.get(ctx, 0) == 0:
                break  # beco sem saída: este contexto nunca foi seguido de nada
            probs = self.probs_tensor(ctx, k=k)  # (V,)
            next_id = int(torch.multinomial(probs, num_samples=1, generator=generator))
            words.append(self.vocab[next_id])
        return join_words(words)

    def perplexity(self, text: str, k: float | None = None) -> float:
        """Perplexidade do modelo num texto: ``exp(média de -log P(palavra | contexto))``.

        Cada palavra a partir da ``n``-ésima é prevista a partir das ``n - 1`` anteriores.
        Quanto menor, melhor; um modelo que sempre acerta com certeza tem perplexidade 1.

        Args:
            text: o texto a avaliar (todas as palavras devem estar no vocabulário).
            k: suavização *add-k* (padrão: o ``k`` do modelo).

        Returns:
            A perplexidade. É ``math.inf`` se alguma palavra tiver probabilidade zero — o
            que acontece sem suavização (``k = 0``) diante de um n-grama nunca visto.

        Raises:
            TypeError: se ``text`` não for ``str``.
            ValueError: se o texto tiver menos de ``n`` palavras ou palavras fora do vocabulário.
        """
        k = self.k if k is None else self._check_k(k)
        self._check_fitted()
        if not isinstance(text, str):
            raise TypeError(f"perplexity espera um texto (str); recebi {type(text).__name__}.")
        words = split_words(text, lowercase=self.lowercase)
        if len(words) < self.n:
            raise ValueError(
                f"O texto tem {len(words)} palavra(s); para medir a perplexidade de um modelo com "
                f"n={self.n} são precisas pelo menos {self.n}."
            )
        self._check_known(words)
        vocab_size = len(self.vocab)
        size = self.n - 1
        neg_log_likelihood = 0.0
        for i in range(size, len(words)):
            ctx = tuple(words[i - size : i])
            count = self.counts.get(ctx, Counter())[words[i]]
            total = self._totals.get(ctx, 0) + k * vocab_size
            if count + k == 0:
                return math.inf
            neg_log_likelihood -= math.log((count + k) / total)
        return math.exp(neg_log_likelihood / (len(words) - size))

    # ---------------------------------------------------------------- internos
    @staticmethod
    def _check_k(k: float) -> float:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
            raise ValueError(f"k (suavização add-k) deve ser um número finito >= 0; recebi {k!r}.")
        return float(k)

    def _check_fitted(self) -> None:
        if not self.vocab:
            raise RuntimeError("O modelo ainda não foi treinado: chame fit(texto) primeiro.")

    def _check_known(self, words: Sequence[str]) -> None:
        unknown = sorted({w for w in words if w not in self.word_to_id})
        if unknown:
            shown = ", ".join(repr(w) for w in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise ValueError(
                f"Palavra(s) fora do vocabulário do modelo: {shown}. Um modelo de contagem só "
                "conhece as palavras que viu no texto de treino."
            )

    def _context_words(self, context: str | Sequence[str]) -> list[str]:
        if isinstance(context, str):
            return split_words(context, lowercase=self.lowercase)
        if isinstance(context, Sequence) and all(isinstance(w, str) for w in context):
            return [w.lower() if self.lowercase else w for w in context]
        raise TypeError(
            f"O contexto deve ser um texto (str) ou uma lista de palavras (str); recebi {context!r}."
        )

    def _context_tuple(self, context: str | Sequence[str]) -> tuple[str, ...]:
        self._check_fitted()
        words = self._context_words(context)
        size = self.n - 1
        if not words:
            raise ValueError(f"O contexto está vazio; dê pelo menos {size} palavra(s).")
        if len(words) < size:
            raise ValueError(
                f"O contexto {' '.join(words)!r} tem {len(words)} palavra(s), mas um modelo com "
                f"n={self.n} olha as últimas {size}."
            )
        ctx = tuple(words[-size:])
        self._check_known(ctx)
        return ctx

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, k={self.k}, vocabulário={len(self.vocab)} palavras)"


class BigramModel(NGramModel):
    """Modelo de bigramas: prevê a próxima palavra olhando só a anterior (cap. 1).

    É um ``NGramModel`` com ``n = 2``, mais ``count_matrix`` para desenhar a tabela
    de contagens (linha = palavra atual, coluna = próxima palavra).

    Args:
        k: suavização *add-k* padrão (``0`` = contagem pura).
        lowercase: passa o texto para minúsculas antes de contar.
    """

    def __init__(self, k: float = 0.0, lowercase: bool = True) -> None:
        super().__init__(n=2, k=k, lowercase=lowercase)

    def count_matrix(self, words: Sequence[str] | None = None) -> torch.Tensor:
        """Tabela de contagens de bigramas.

        Args:
            words: as palavras das linhas e colunas, nesta ordem (padrão: todo o ``vocab``).

        Returns:
            Tensor ``int64`` de forma ``(len(words), len(words))``; o elemento ``[i, j]`` conta
            quantas vezes ``words[j]`` veio logo depois de ``words[i]``.

        Raises:
            ValueError: se alguma palavra não estiver no vocabulário.
        """
        self._check_fitted()
        words = list(self.vocab if words is None else words)
        self._check_known(words)
        column = {word: j for j, word in enumerate(words)}
        matrix = torch.zeros(len(words), len(words), dtype=torch.int64)  # (L, L)
        for i, first in enumerate(words):
            for second, count in self.counts.get((first,), Counter()).items():
                j = column.get(second)
                if j is not None:
                    matrix[i, j] = count
        return matrix

"""Geração de texto: decodificação gulosa, com temperatura, top-k e top-p, e KV cache (cap. 4).

O capítulo 4 gera texto com um modelo ainda não treinado (sai lixo, e é isso que motiva
o treinamento) e mede o ganho do KV cache; o capítulo 5 volta aqui para a amostragem.

Um passo de geração é sempre o mesmo: *logits* da última posição -> (temperatura,
top-k, top-p) -> escolhe o próximo token -> acrescenta à sequência. Sem cache, cada passo
passa a sequência INTEIRA pelo modelo de novo. Com cache (``use_cache=True``), o
primeiro passo processa o *prompt* e guarda as chaves e os valores de cada bloco; os
passos seguintes passam só o token novo. As contas são as mesmas: o cache nunca muda
um token escolhido (os testes conferem).

O modelo precisa seguir a interface do ``GPTModel``: ``cfg.context_length``,
``cfg.vocab_size``, ``check_input``, ``new_kv_caches`` e
``forward(idx, kv_caches=None, *, last_only=False)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["generate", "sample_next_token", "check_decoding_args"]

# Abaixo disto, rearrumar os pesos custa mais do que economiza (veja _DecodeLayout).
_MIN_TOKENS_FOR_LAYOUT = 16


class _DecodeLayout:
    """Guarda, durante a geração na CPU, cada peso de ``nn.Linear`` transposto na memória.

    Gerar UM token é uma multiplicação vetor x matriz por camada: a conta é pequena e o
    tempo vai quase todo em ler os pesos da memória (no ``curso-medio``, ~120 MB por
    token, 77 MB só na cabeça de saída). O ``nn.Linear`` guarda ``W`` como ``(saída,
    entrada)`` e calcula ``x @ W.T``; na CPU, o *kernel* de vetor x matriz lê bem mais
    depressa a matriz quando ``W.T`` é contígua (medido no cap. 4: ~1,5-2x na cabeça).

    Então, enquanto a geração dura, trocamos os dados de cada peso por uma cópia com os
    MESMOS valores e o MESMO formato, só com a ordem na memória transposta
    (``W.t().contiguous().t()``), e devolvemos os tensores originais no fim — o modelo
    sai exatamente como entrou (inclusive para o otimizador e o ``state_dict``). Os
    resultados podem mudar só na última casa do ``float32`` (a ordem das somas muda).
    """

    def __init__(self, model: nn.Module, enabled: bool) -> None:
        self.saved: list[tuple[nn.Parameter, Tensor]] = []
        self.model = model
        self.enabled = enabled

    def __enter__(self) -> _DecodeLayout:
        if not self.enabled:
            return self
        seen: set[int] = set()
        for module in self.model.modules():
            weight = getattr(module, "weight", None)
            if not isinstance(module, nn.Linear) or id(weight) in seen or weight.dim() != 2:
                continue
            seen.add(id(weight))  # pesos amarrados (cabeça = embedding) uma vez só
            self.saved.append((weight, weight.data))
            weight.data = weight.data.t().contiguous().t()  # mesmo formato (out, in); W.T contígua
        return self

    def __exit__(self, *exc: object) -> None:
        for weight, data in self.saved:
            weight.data = data
        self.saved.clear()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_decoding_args(
    max_new_tokens: object,
    temperature: object,
    top_k: object,
    top_p: object,
    eos_id: object = None,
    vocab_size: int | None = None,
    repetition_penalty: object = 1.0,
) -> None:
    """Confere os parâmetros de decodificação, com erros claros em português.

    Args:
        max_new_tokens: inteiro >= 0.
        temperature: número >= 0 (0 = decodificação gulosa).
        top_k: ``None`` ou inteiro >= 1.
        top_p: ``None`` ou número em ``(0, 1]``.
        eos_id: ``None`` ou inteiro em ``[0, vocab_size)``.
        vocab_size: tamanho do vocabulário, para conferir ``eos_id``.
        repetition_penalty: número finito > 0 (1 = sem penalidade).

    Raises:
        ValueError: algum valor fora do permitido (a mensagem diz qual e o que vale).
    """
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens deve ser um inteiro >= 0; recebi {max_new_tokens!r}.")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise ValueError(
            f"temperature deve ser um número finito >= 0 (0 = escolha gulosa); recebi {temperature!r}."
        )
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k deve ser None ou um inteiro >= 1; recebi {top_k!r}.")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0
    ):
        raise ValueError(f"top_p deve ser None ou um número em (0, 1]; recebi {top_p!r}.")
    if (
        isinstance(repetition_penalty, bool)
        or not isinstance(repetition_penalty, (int, float))
        or not math.isfinite(repetition_penalty)
        or repetition_penalty <= 0
    ):
        raise ValueError(
            "repetition_penalty deve ser um número finito > 0 (1 = sem penalidade; "
            f"> 1 desestimula repetir tokens); recebi {repetition_penalty!r}."
        )
    if eos_id is not None:
        limit = "" if vocab_size is None else f" e < vocab_size={vocab_size}"
        if not _is_int(eos_id) or eos_id < 0 or (vocab_size is not None and eos_id >= vocab_size):
            raise ValueError(f"eos_id deve ser None ou um ID de token >= 0{limit}; recebi {eos_id!r}.")


def apply_repetition_penalty(logits: Tensor, previous: Tensor, penalty: float) -> Tensor:
    """Desestimula tokens que já apareceram (penalidade de repetição do CTRL, Keskar et al., 2019).

    Para cada token presente em ``previous``, o *logit* positivo é dividido por
    ``penalty`` e o negativo, multiplicado — nos dois casos o token fica menos provável
    quando ``penalty > 1``. Um token repetido várias vezes é penalizado uma vez só.

    Args:
        logits: ``(B, V)``.
        previous: IDs já vistos ``(B, T)`` (*prompt* + gerados).
        penalty: fator > 0; 1 não muda nada.

    Returns:
        Novos *logits* ``(B, V)`` (o tensor de entrada não é alterado).
    """
    if penalty == 1.0 or previous.numel() == 0:
        return logits
    seen = logits.gather(-1, previous)  # (B, T): o logit de cada token já visto
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, previous, seen)  # repetidos recebem o mesmo valor


def sample_next_token(
    logits: Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    previous: Tensor | None = None,
    repetition_penalty: float = 1.0,
) -> Tensor:
    """Escolhe o próximo token a partir dos *logits* da última posição.

    - ``temperature == 0``: o mais provável (gulosa; ``top_k``/``top_p`` não importam);
    - senão: divide os *logits* pela temperatura, mantém só os ``top_k`` maiores e/ou o
      menor conjunto cujas probabilidades somam ao menos ``top_p`` (amostragem de núcleo,
      Holtzman et al., 2020) e sorteia com ``torch.multinomial``.

    Args:
        logits: ``(B, V)``.
        temperature, top_k, top_p: como em ``generate`` (não são conferidos aqui).
        generator: gerador do PyTorch para sorteios reprodutíveis.
        previous: IDs já vistos ``(B, T)``, para a penalidade de repetição.
        repetition_penalty: ver ``apply_repetition_penalty`` (aplicada antes de tudo).

    Returns:
        IDs ``(B, 1)`` (``torch.long``).
    """
    if previous is not None:
        logits = apply_repetition_penalty(logits, previous, repetition_penalty)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1): o k-ésimo maior
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V) cada
        probs = torch.softmax(sorted_logits, dim=-1)
        # Remove um token quando os que vêm ANTES dele já somam top_p (o 1.º nunca sai).
        before = probs.cumsum(dim=-1) - probs
        sorted_logits = sorted_logits.masked_fill(before >= top_p, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)  # volta à ordem original
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


@torch.inference_mode()
def generate(
    model: nn.Module,
    idx: Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    repetition_penalty: float = 1.0,
) -> Tensor:
    """Gera ``max_new_tokens`` tokens depois de ``idx`` (cap. 4; amostragem no cap. 5).

    O modelo é posto em modo ``eval`` durante a geração (sem *dropout*) e volta ao
    modo em que estava no fim.

    **Janela de contexto.** O modelo só enxerga ``context_length`` tokens. Sem cache,
    cada passo usa os últimos ``context_length`` tokens da sequência (um *prompt* mais
    longo também é cortado assim). Com cache, a escolha do curso é **nunca mudar o
    resultado**: enquanto a sequência cabe na janela, cada passo passa só o token novo;
    quando a janela enche, como os *embeddings* posicionais são absolutos (cada token
    mudaria de posição), o cache é refeito a cada passo a partir dos últimos
    ``context_length`` tokens — o mesmo custo e os mesmos tokens da geração sem cache.

    **Fim de texto.** Com ``eos_id``, uma sequência que gera esse token para: as
    posições seguintes dela são preenchidas com ``eos_id``; quando todas as sequências
    do lote param, a geração termina antes (a saída pode ser mais curta).

    Args:
        model: um ``GPTModel`` (ou algo com a mesma interface).
        idx: *prompt* ``(B, T)`` de IDs inteiros, ``T >= 1``.
        max_new_tokens: quantos tokens gerar (>= 0).
        temperature: 0 = gulosa (sempre o mais provável); > 0 = amostragem.
        top_k: mantém só os ``k`` tokens mais prováveis (``None`` = todos).
        top_p: mantém o menor conjunto com probabilidade total >= ``top_p`` (``None`` = todos).
        eos_id: ID do token de fim de texto, ou ``None``.
        use_cache: usa o KV cache (mais rápido; mesmos tokens).
        generator: ``torch.Generator`` para sorteios reprodutíveis.
        repetition_penalty: > 1 desestimula tokens que já estão na sequência
            (*prompt* incluído); 1 = sem penalidade.

    Returns:
        IDs ``(B, T + n)`` (``torch.long``), com ``n = max_new_tokens`` — ou menos, se
        todas as sequências chegarem a ``eos_id``.

    Raises:
        TypeError / ValueError: entrada ou parâmetros inválidos (mensagens em português).
    """
    cfg = getattr(model, "cfg", None)
    if not isinstance(model, nn.Module) or cfg is None or not hasattr(model, "new_kv_caches"):
        raise TypeError(f"generate espera um GPTModel; recebi {type(model).__name__}.")
    check_decoding_args(max_new_tokens, temperature, top_k, top_p, eos_id, cfg.vocab_size, repetition_penalty)
    if not isinstance(use_cache, bool):
        raise ValueError(f"use_cache deve ser True ou False; recebi {use_cache!r}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator deve ser um torch.Generator ou None; recebi {type(generator).__name__}.")
    ctx = cfg.context_length
    model.check_input(idx, check_length=False)  # prompts longos são cortados abaixo

    B, T = idx.shape
    out = torch.empty(B, T + max_new_tokens, dtype=torch.long, device=idx.device)
    out[:, :T] = idx
    if max_new_tokens == 0:
        return out
    finished = torch.zeros(B, 1, dtype=torch.bool, device=idx.device)

    was_training = model.training
    model.eval()
    rearrange = idx.device.type == "cpu" and B * max_new_tokens >= _MIN_TOKENS_FOR_LAYOUT
    try:
        with _DecodeLayout(model, enabled=rearrange):
            caches = model.new_kv_caches(B) if use_cache else None

            def next_logits(length: int) -> Tensor:
                """*Logits* ``(B, V)`` do próximo token, dada a sequência ``out[:, :length]``."""
                if caches is None or caches[0].length == 0:
                    # sem cache, ou primeiro passo com cache: a janela (cortada) inteira
                    window = out[:, max(0, length - ctx) : length]
                elif caches[0].length < ctx:  # cabe: só o token novo
                    window = out[:, length - 1 : length]
                else:  # janela cheia: refaz o cache com a janela deslocada
                    for cache in caches:
                        cache.reset()
                    window = out[:, length - ctx : length]
                return model(window, caches, last_only=True)[:, -1]  # (B, V)

            length = T
            logits = next_logits(length)  # (B, V)
            for step in range(max_new_tokens):
                previous = out[:, :length] if repetition_penalty != 1.0 else None
                token = sample_next_token(
                    logits, temperature, top_k, top_p, generator, previous, repetition_penalty
                )  # (B, 1)
                if eos_id is not None:
                    token = token.masked_fill(finished, eos_id)
                    finished |= token == eos_id
                out[:, length : length + 1] = token
                length += 1
                if eos_id is not None and bool(finished.all()):
                    break
                if step + 1 < max_new_tokens:  # o último token não precisa de mais uma passada
                    logits = next_logits(length)
    finally:
        model.train(was_training)
    return out[:, :length]

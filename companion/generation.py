"""Geração de texto: decodificação gulosa, com temperatura, top-k e top-p, e KV cache (cap. 4).

O capítulo 4 gera texto com um modelo ainda não treinado (sai lixo, e é isso que motiva
o treinamento) e mede o ganho do KV cache; o capítulo 5 volta aqui para a amostragem.

Um passo de geração é sempre o mesmo: *logits* da última posição -> (temperatura,
top-k, top-p) -> escolhe o próximo token -> acrescenta à sequência. Sem cache, cada passo
passa a sequência INTEIRA pelo modelo de novo. Com cache (``use_cache=True``), o
primeiro passo processa o *prompt* e guarda as chaves e os valores de cada bloco; os
passos seguintes passam só o token novo. As contas são as mesmas: o cache nunca muda
um token escolhido (os testes conferem).

Um só ``generate`` serve a todos os modelos do curso (GPT, Llama, Gemma 3): basta seguir a
interface ``companion.lm.CausalLM`` — ``cfg.context_length``, ``cfg.vocab_size``,
``check_input``, ``new_kv_caches`` e ``forward(idx, kv_caches=None, *, last_only=False)``.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor, nn

from companion._checks import check_int, check_number, is_int

__all__ = ["generate", "sample_next_token", "check_decoding_args"]

# Abaixo disto, rearrumar os pesos custa mais do que economiza (veja _DecodeLayout).
_MIN_TOKENS_FOR_LAYOUT = 16


class _DecodeLayout:
    """Guarda, durante a geração na CPU, cada peso de ``nn.Linear`` transposto na memória.

    Gerar UM token é uma multiplicação vetor x matriz por camada: a conta é pequena e o
    tempo vai quase todo em ler os pesos da memória (no ``curso-medio``, ~120 MB por
    token, 77 MB só na cabeça de saída). O ``nn.Linear`` guarda ``W`` como ``(saída,
    entrada)`` e calcula ``x @ W.T``; na CPU, o *kernel* de vetor x matriz lê bem mais
    depressa a matriz quando ``W.T`` é contígua (o cap. 4 mede a diferença).

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


def check_decoding_args(
    max_new_tokens: object,
    temperature: object,
    top_k: object,
    top_p: object,
    eos_id: object = None,
    vocab_size: int | None = None,
    repetition_penalty: object = 1.0,
) -> tuple[int, ...]:
    """Confere os parâmetros de decodificação, com erros claros em português.

    Args:
        max_new_tokens: inteiro >= 0.
        temperature: número >= 0 (0 = decodificação gulosa).
        top_k: ``None`` ou inteiro >= 1.
        top_p: ``None`` ou número em ``(0, 1]``.
        eos_id: ``None``, um ID ou uma coleção de IDs em ``[0, vocab_size)`` (modelos de
            conversa têm mais de um token de fim).
        vocab_size: tamanho do vocabulário, para conferir ``eos_id``.
        repetition_penalty: número finito > 0 (1 = sem penalidade).

    Returns:
        Os IDs de fim, em ordem (vazio se ``eos_id`` é ``None``).

    Raises:
        ValueError: algum valor fora do permitido (a mensagem diz qual e o que vale).
    """
    check_int("max_new_tokens", max_new_tokens, 0)
    check_number("temperature", temperature, 0.0)
    check_int("top_k", top_k, 1, allow_none=True)
    check_number("top_p", top_p, 0.0, 1.0, min_open=True, allow_none=True)
    check_number("repetition_penalty", repetition_penalty, 0.0, min_open=True)
    if eos_id is None:
        return ()
    ids = (eos_id,) if is_int(eos_id) else tuple(eos_id) if isinstance(eos_id, Collection) and not isinstance(eos_id, str) else None
    high = "" if vocab_size is None else f" e < vocab_size={vocab_size}"
    if not ids or not all(is_int(e) and e >= 0 and (vocab_size is None or e < vocab_size) for e in ids):
        raise ValueError(f"eos_id deve ser None, um ID de token >= 0{high} ou uma coleção deles; recebi {eos_id!r}.")
    return tuple(sorted(set(ids)))


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
        # stable=True: empates na ordem dos IDs (sem isso, a ordem dos empatados muda com o
        # algoritmo de ordenação — e o sampler do site, em JavaScript, não poderia segui-la).
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)  # (B, V) cada
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
    eos_id: int | Collection[int] | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    repetition_penalty: float = 1.0,
) -> Tensor:
    """Gera ``max_new_tokens`` tokens depois de ``idx`` com qualquer modelo do curso (cap. 4; amostragem no cap. 5).

    O modelo é posto em modo ``eval`` durante a geração (sem *dropout*) e volta ao
    modo em que estava no fim.

    **Janela de contexto.** O modelo só enxerga ``context_length`` tokens. Sem cache,
    cada passo usa os últimos ``context_length`` tokens da sequência (um *prompt* mais
    longo também é cortado assim). Com cache, a escolha do curso é **nunca mudar o
    resultado**: enquanto a sequência cabe na janela, cada passo passa só o token novo;
    quando a janela enche, o cache é refeito a cada passo a partir dos últimos
    ``context_length`` tokens (cada token muda de posição na janela) — o mesmo custo e
    os mesmos tokens da geração sem cache.

    **Fim de texto.** Com ``eos_id`` (um ID ou vários: modelos de conversa têm mais de
    um), uma sequência que gera um deles para: as posições seguintes dela repetem esse
    token; quando todas as sequências do lote param, a geração termina antes (a saída
    pode ser mais curta).

    Args:
        model: um ``companion.lm.CausalLM`` (``GPTModel``, ``LlamaModel``, ``Gemma3Model``).
        idx: *prompt* ``(B, T)`` de IDs inteiros, ``T >= 1``.
        max_new_tokens: quantos tokens gerar (>= 0).
        temperature: 0 = gulosa (sempre o mais provável); > 0 = amostragem.
        top_k: mantém só os ``k`` tokens mais prováveis (``None`` = todos).
        top_p: mantém o menor conjunto com probabilidade total >= ``top_p`` (``None`` = todos).
        eos_id: ID (ou coleção de IDs) de fim de texto, ou ``None``.
        use_cache: usa o KV cache (mais rápido; mesmos tokens).
        generator: ``torch.Generator`` para sorteios reprodutíveis.
        repetition_penalty: > 1 desestimula tokens que já estão na sequência
            (*prompt* incluído); 1 = sem penalidade.

    Returns:
        IDs ``(B, T + n)`` (``torch.long``), com ``n = max_new_tokens`` — ou menos, se
        todas as sequências chegarem ao fim de texto.

    Raises:
        TypeError / ValueError: entrada ou parâmetros inválidos (mensagens em português).
    """
    cfg = getattr(model, "cfg", None)
    if not isinstance(model, nn.Module) or cfg is None or not hasattr(model, "new_kv_caches"):
        raise TypeError(
            f"generate espera um modelo do curso (GPTModel, LlamaModel, Gemma3Model...); recebi {type(model).__name__}."
        )
    eos_ids = check_decoding_args(
        max_new_tokens, temperature, top_k, top_p, eos_id, cfg.vocab_size, repetition_penalty
    )
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
    eos_tensor = torch.tensor(eos_ids, dtype=torch.long, device=idx.device) if eos_ids else None

    was_training = model.training
    model.eval()
    rearrange = idx.device.type == "cpu" and B * max_new_tokens >= _MIN_TOKENS_FOR_LAYOUT
    try:
        with _DecodeLayout(model, enabled=rearrange):
            # Só as posições que a geração vai usar (um cache de context_length inteiro
            # custaria ~1 GB num modelo de contexto 32k).
            caches = model.new_kv_caches(B, min(ctx, T + max_new_tokens)) if use_cache else None

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
                # o prompt já foi conferido; os tokens escolhidos aqui são válidos por construção
                return model(window, caches, last_only=True, check=False)[:, -1]  # (B, V)

            length = T
            logits = next_logits(length)  # (B, V)
            for step in range(max_new_tokens):
                previous = out[:, :length] if repetition_penalty != 1.0 else None
                token = sample_next_token(
                    logits, temperature, top_k, top_p, generator, previous, repetition_penalty
                )  # (B, 1)
                if eos_tensor is not None:
                    # quem já terminou repete o próprio token de fim
                    token = torch.where(finished, out[:, length - 1 : length], token)
                    finished |= torch.isin(token, eos_tensor)
                out[:, length : length + 1] = token
                length += 1
                if eos_tensor is not None and bool(finished.all()):
                    break
                if step + 1 < max_new_tokens:  # o último token não precisa de mais uma passada
                    logits = next_logits(length)
    finally:
        model.train(was_training)
    return out[:, :length]

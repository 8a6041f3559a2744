"""Controles interativos (ipywidgets) dos capítulos.

Cada widget tem uma saída estática que já faz sentido sozinha: o site do livro não
tem um *kernel* Python por trás, então o que aparece lá é o estado inicial guardado
no notebook. Cada capítulo acrescenta aqui os seus controles.

* cap. 2 — ``tokenizer_explorer``: digite uma frase e veja os tokens coloridos, com
  os IDs, de cada tokenizador.
* cap. 3 — ``attention_explorer``: escolha uma cabeça e um token e veja para onde ele olha.
* cap. 5 — ``decoding_explorer``: temperatura, top-k e top-p sobre o modelo treinado.
* cap. 6 — ``classifier_explorer``: digite uma mensagem e veja se o classificador de
  golpes (o ``SpamClassifier`` ou a sonda sobre o Gemma 3 congelado) a marca como spam.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

# --------------------------------------------------------------------------- cap. 2: tokenizadores
EXAMPLE_SENTENCE = "O beija-flor pousou na jabuticabeira às 6h30; paguei R$ 12,50 no Pix. 🙂"

# Fundos claros que se alternam entre tokens vizinhos (o texto continua legível em preto).
TOKEN_COLORS = ["#CFE8FC", "#FDE2B8", "#C9F0DF", "#F9D0C4", "#EED5E6", "#FFF6B3"]


def _visible(piece: str) -> str:
    """Deixa visíveis espaços e quebras de linha dentro de um token."""
    return piece.replace(" ", "·").replace("\n", "↵").replace("\t", "→")


def tokens_html(tokenizers: Mapping[str, Any], text: str) -> str:
    """HTML com os tokens de ``text`` para cada tokenizador: um bloco colorido por token, ID embaixo.

    Args:
        tokenizers: nome -> tokenizador (``SimpleTokenizer``, ``BPETokenizer`` ou ``tiktoken.Encoding``).
        text: o texto a tokenizar.

    Returns:
        Um trecho de HTML (``str``). Espaços aparecem como ``·``; bytes soltos de um
        caractere dividido, como ``<C3>``; palavras desconhecidas, com o ID de ``<|unk|>``.
    """
    from companion.tokenizers import token_pieces

    if not isinstance(text, str):
        raise TypeError(f"text deve ser um texto (str); recebi {type(text).__name__}.")
    if not tokenizers:
        raise ValueError("tokenizers está vazio: passe ao menos um tokenizador, como {'GPT-2': gpt2_tokenizer()}.")
    rows = []
    for name, tokenizer in tokenizers.items():
        pieces = token_pieces(tokenizer, text)
        chips = []
        for i, (token_id, piece) in enumerate(pieces):
            color = TOKEN_COLORS[i % len(TOKEN_COLORS)]
            chips.append(
                f'<span style="display:inline-block;margin:2px 1px;padding:1px 3px;border-radius:4px;'
                f'background:{color};text-align:center;font-family:monospace;line-height:1.25">'
                f'<span style="white-space:pre">{html.escape(_visible(piece))}</span><br>'
                f'<span style="font-size:0.72em;color:#555">{token_id}</span></span>'
            )
        n_words = len(text.split())
        ratio = f" · {len(pieces) / n_words:.2f} tokens por palavra" if n_words else ""
        rows.append(
            f'<div style="margin:6px 0"><b>{html.escape(str(name))}</b> '
            f'<span style="color:#555">({len(pieces)} tokens{ratio})</span><br>{"".join(chips)}</div>'
        )
    return "".join(rows)


def tokenizer_explorer(tokenizers: Mapping[str, Any] | None = None, text: str = EXAMPLE_SENTENCE):
    """Explorador de tokenizadores: uma caixa de texto e, embaixo, os tokens de cada um (cap. 2).

    Args:
        tokenizers: nome -> tokenizador. Padrão: o simples e o BPE (1.000 tokens) treinados
            no corpus do curso e o do GPT-2.
        text: a frase inicial — é ela que aparece no site, que não executa código.

    Returns:
        Um ``ipywidgets.VBox`` com a caixa de texto e o HTML dos tokens, que se atualiza
        a cada tecla.
    """
    import ipywidgets as widgets

    if tokenizers is None:
        from companion.data import load_corpus
        from companion.tokenizers import BPETokenizer, SimpleTokenizer, gpt2_tokenizer

        corpus = load_corpus()
        tokenizers = {
            "Simples (palavras do corpus)": SimpleTokenizer.from_text(corpus),
            "BPE do curso (1.000 tokens)": BPETokenizer().train(corpus, 1000),
            "GPT-2 (50.257 tokens)": gpt2_tokenizer(),
        }
    tokenizers = dict(tokenizers)
    box = widgets.Text(
        value=text,
        description="Frase:",
        continuous_update=True,
        layout=widgets.Layout(width="100%"),
    )
    output = widgets.HTML(value=tokens_html(tokenizers, text))

    def update(change: dict) -> None:
        output.value = tokens_html(tokenizers, change["new"])

    box.observe(update, names="value")
    return widgets.VBox([box, output])


# --------------------------------------------------------------------------- cap. 3 — atenção
def _attention_matrices(weights, tokens):
    """Normaliza os pesos para um array ``(H, T, T)`` e confere os rótulos."""
    import numpy as np

    if hasattr(weights, "detach"):
        weights = weights.detach().cpu().float().numpy()
    w = np.asarray(weights, dtype=float)
    if w.ndim == 2:
        w = w[None]  # (T, T) -> (1, T, T)
    tokens = [str(t) for t in tokens]
    if w.ndim != 3 or w.shape[1] != w.shape[2] or w.shape[2] != len(tokens):
        raise ValueError(
            "weights deve ter formato (T, T) ou (cabeças, T, T), com T = len(tokens) = "
            f"{len(tokens)}; recebi {tuple(w.shape)}."
        )
    if len(tokens) == 0:
        raise ValueError("tokens está vazio: não há o que mostrar.")
    return w, tokens


def attention_html(weights, tokens, selected: int) -> str:
    """HTML de uma cabeça: a frase colorida pela atenção de um token e a matriz inteira (cap. 3).

    Funciona sem *kernel* (é só HTML): passar o mouse numa palavra ou numa célula mostra o
    peso exato. ``attention_explorer`` usa esta função a cada escolha.

    Args:
        weights: matriz ``(T, T)`` de pesos de atenção (linhas somam 1).
        tokens: os ``T`` rótulos.
        selected: índice do token (a consulta) cuja atenção colorimos.

    Returns:
        Uma ``str`` com o HTML.

    Raises:
        ValueError: formatos incompatíveis ou ``selected`` fora de ``[0, T)``.
    """
    from html import escape

    w, tokens = _attention_matrices(weights, tokens)
    if w.shape[0] != 1:
        raise ValueError(f"attention_html desenha uma cabeça só: weights deve ser (T, T); recebi {w.shape}.")
    w = w[0]
    T = len(tokens)
    if not isinstance(selected, int) or not 0 <= selected < T:
        raise ValueError(f"selected deve ser um índice inteiro em [0, {T}); recebi {selected!r}.")

    def cell_style(value: float, scale: float) -> str:
        alpha = 0.0 if scale <= 0 else min(1.0, value / scale)
        color = "white" if alpha > 0.6 else "#222"
        return f"background: rgba(0, 114, 178, {alpha:.2f}); color: {color};"

    row = w[selected]
    row_max = float(row.max())
    words = []
    for j, tok in enumerate(tokens):
        border = "2px solid #D55E00" if j == selected else "1px solid #ccc"
        words.append(
            f'<span title="{escape(tokens[selected])} → {escape(tok)}: {row[j]:.2f}" '
            f'style="{cell_style(row[j], row_max)} border: {border}; border-radius: 4px; '
            f'padding: 2px 5px; margin: 2px; display: inline-block;">{escape(tok)}'
            f'<br><small>{row[j]:.2f}</small></span>'
        )
    text_view = (
        f"<p style='margin: 4px 0'>Para onde <b>{escape(tokens[selected])}</b> (posição {selected}) olha:</p>"
        f"<div style='line-height: 2.2em'>{''.join(words)}</div>"
    )

    header = "".join(f"<th style='padding: 2px 4px; font-weight: normal'>{escape(t)}</th>" for t in tokens)
    body = []
    for i, tok in enumerate(tokens):
        outline = "outline: 2px solid #D55E00;" if i == selected else ""
        cells = "".join(
            f"<td title='{escape(tok)} → {escape(tokens[j])}: {w[i, j]:.2f}' "
            f"style='{cell_style(w[i, j], 1.0)} text-align: center; padding: 2px 4px; min-width: 2.6em'>"
            f"{w[i, j]:.2f}</td>"
            for j in range(T)
        )
        label = f"<th style='text-align: right; padding: 2px 4px'>{escape(tok)}</th>"
        body.append(f"<tr style='{outline}'>{label}{cells}</tr>")
    table = (
        "<table style='border-collapse: collapse; font-size: 0.85em; margin-top: 8px'>"
        f"<tr><th></th>{header}</tr>{''.join(body)}</table>"
        "<p style='font-size: 0.8em; color: #555'>Linhas: o token que consulta; colunas: para quem ele olha. "
        "Cada linha soma 1.</p>"
    )
    return f"<div>{text_view}{table}</div>"


def attention_setup(weights, tokens, head_labels=None, head: int = 0, token: int | None = None):
    """Confere e completa as entradas de um explorador de atenção (o de ipywidgets e o do site).

    Returns:
        ``(pesos (H, T, T), rótulos dos tokens, nomes das cabeças, head, token)``, com os nomes
        padrão (``"cabeça 0"``...) e o token padrão (o último) preenchidos.

    Raises:
        ValueError: formatos incompatíveis ou índices fora do intervalo.
    """
    w, tokens = _attention_matrices(weights, tokens)
    H, T = w.shape[0], len(tokens)
    labels = [str(label) for label in head_labels] if head_labels is not None else [f"cabeça {h}" for h in range(H)]
    if len(labels) != H:
        raise ValueError(f"head_labels deve ter {H} nomes (um por cabeça); recebi {len(labels)}.")
    token = T - 1 if token is None else token
    if not isinstance(head, int) or not 0 <= head < H:
        raise ValueError(f"head deve ser um índice em [0, {H}); recebi {head!r}.")
    if not isinstance(token, int) or not 0 <= token < T:
        raise ValueError(f"token deve ser um índice em [0, {T}); recebi {token!r}.")
    return w, tokens, labels, head, token


def attention_explorer(weights, tokens, head_labels=None, head: int = 0, token: int | None = None):
    """Explorador de atenção: escolha uma cabeça e um token e veja para onde ele olha (cap. 3).

    Os controles redesenham um painel HTML (``attention_html``). Como o painel é HTML puro,
    o estado inicial (``head``, ``token``) aparece também no site estático, sem *kernel*, e
    passar o mouse sobre as palavras mostra os pesos.

    Args:
        weights: pesos de atenção ``(H, T, T)`` (ou ``(T, T)`` para uma cabeça), por exemplo
            ``MultiHeadAttention.attention_weights(x)[0]``.
        tokens: os ``T`` rótulos.
        head_labels: um nome por cabeça (padrão: ``"cabeça 0"``...).
        head: cabeça mostrada de início.
        token: token mostrado de início (padrão: o último, que enxerga a frase toda).

    Returns:
        Um ``ipywidgets.VBox`` com os controles e o painel.

    Raises:
        ValueError: formatos incompatíveis ou índices iniciais fora do intervalo.
    """
    import ipywidgets as widgets

    w, tokens, labels, head, token = attention_setup(weights, tokens, head_labels, head, token)

    head_picker = widgets.Dropdown(
        options=[(str(label), h) for h, label in enumerate(labels)], value=head, description="Cabeça:"
    )
    token_picker = widgets.ToggleButtons(
        options=[(tok, i) for i, tok in enumerate(tokens)], value=token, description="Token:",
        style={"button_width": "auto"},
    )
    panel = widgets.HTML(value=attention_html(w[head], tokens, token))

    def redraw(_change=None) -> None:
        panel.value = attention_html(w[head_picker.value], tokens, token_picker.value)

    head_picker.observe(redraw, names="value")
    token_picker.observe(redraw, names="value")
    return widgets.VBox([head_picker, token_picker, panel])


# --------------------------------------------------------------------------- cap. 5 — decodificação
def decoding_html(
    model,
    tokenizer,
    prompt: str,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    max_new_tokens: int = 30,
    n_samples: int = 3,
    seed: int = 0,
) -> str:
    """HTML com ``n_samples`` continuações de ``prompt`` sob os mesmos parâmetros de decodificação (cap. 5).

    Cada amostra usa um ``torch.Generator`` com semente ``seed + i``: o resultado é sempre
    o mesmo para os mesmos controles, e as amostras mostram quanto a escolha varia (com
    temperatura 0, as três são iguais). Embaixo, quantos tokens diferentes apareceram.

    Args:
        model: um ``GPTModel`` treinado.
        tokenizer: com ``encode``/``decode`` (um ``tiktoken.Encoding``, por exemplo).
        prompt: o começo do texto (não vazio).
        temperature, top_k, top_p: como em ``companion.generation.generate``.
        max_new_tokens: tokens gerados por amostra.
        n_samples: quantas continuações mostrar (>= 1).
        seed: semente da primeira amostra.

    Returns:
        Um trecho de HTML (``str``).

    Raises:
        ValueError: ``prompt`` vazio, ``n_samples`` < 1 ou parâmetros de decodificação inválidos.
    """
    import torch

    from companion.generation import generate

    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt deve ser um texto não vazio: o modelo precisa de um começo para continuar.")
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 1:
        raise ValueError(f"n_samples deve ser um inteiro >= 1; recebi {n_samples!r}.")
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)  # (1, T)
    rows, distinct = [], set()
    for i in range(n_samples):
        generator = torch.Generator().manual_seed(seed + i)
        out = generate(model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                       generator=generator)
        new_ids = out[0, idx.shape[1]:].tolist()
        distinct.update(new_ids)
        continuation = html.escape(tokenizer.decode(new_ids)).replace("\n", "↵ ")
        rows.append(
            f'<div style="margin:4px 0;font-family:monospace;white-space:pre-wrap">'
            f'<span style="color:#777">{i + 1}.</span> <span style="color:#555">{html.escape(prompt)}</span>'
            f'<span style="background:#CFE8FC">{continuation}</span></div>'
        )
    settings = (
        f"temperatura {temperature:g} · top-k {'desligado' if top_k is None else top_k} · "
        f"top-p {'desligado' if top_p is None else f'{top_p:g}'}"
    )
    return (
        f'<div><p style="margin:2px 0"><b>{settings}</b></p>{"".join(rows)}'
        f'<p style="font-size:0.85em;color:#555">{len(distinct)} tokens diferentes em {n_samples} amostras de '
        f"{max_new_tokens} tokens (em azul, o texto gerado).</p></div>"
    )


def decoding_explorer(
    model,
    tokenizer,
    prompt: str,
    temperature: float = 0.8,
    top_k: int | None = 40,
    top_p: float | None = 0.9,
    max_new_tokens: int = 30,
    n_samples: int = 3,
):
    """Controles de decodificação: temperatura, top-k e top-p sobre um modelo treinado (cap. 5).

    Mexer num controle gera de novo as ``n_samples`` continuações (``decoding_html``). No
    site, sem *kernel*, aparece o estado inicial, que já compara três amostras.
    ``top_k = 0`` e ``top_p = 1`` desligam o respectivo filtro.

    Args:
        model: um ``GPTModel`` treinado.
        tokenizer: o tokenizador do treino.
        prompt: o começo do texto.
        temperature, top_k, top_p: valores iniciais dos controles.
        max_new_tokens: tokens por amostra.
        n_samples: quantas amostras.

    Returns:
        Um ``ipywidgets.VBox`` com os três controles e o painel.
    """
    import ipywidgets as widgets

    temperature_slider = widgets.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.1, description="temperatura")
    top_k_slider = widgets.IntSlider(value=top_k or 0, min=0, max=200, step=1, description="top-k (0 = não)")
    top_p_slider = widgets.FloatSlider(value=1.0 if top_p is None else top_p, min=0.05, max=1.0, step=0.05,
                                       description="top-p")
    style = {"description_width": "110px"}
    for slider in (temperature_slider, top_k_slider, top_p_slider):
        slider.style = style
        slider.continuous_update = False

    def render() -> str:
        return decoding_html(
            model, tokenizer, prompt, temperature=temperature_slider.value,
            top_k=top_k_slider.value or None,
            top_p=None if top_p_slider.value >= 1.0 else top_p_slider.value,
            max_new_tokens=max_new_tokens, n_samples=n_samples,
        )

    panel = widgets.HTML(value=render())

    def redraw(_change=None) -> None:
        panel.value = render()

    for slider in (temperature_slider, top_k_slider, top_p_slider):
        slider.observe(redraw, names="value")
    return widgets.VBox([temperature_slider, top_k_slider, top_p_slider, panel])


# --------------------------------------------------------------------------- cap. 6 — classificador de golpes
EXAMPLE_MESSAGE = "Seu CPF foi sorteado! Para liberar o prêmio de R$ 5.000, pague a taxa de R$ 49,90 no Pix: premio-cpf.online"


def _classifier_probs(model, tokenizer, text: str, max_length: int, probe, cfg):
    """Probabilidades ``(K,)`` de cada classe para um texto: pelo ``SpamClassifier`` ou pela sonda."""
    if probe is None:
        from companion.classifier import classify_texts

        _, probs = classify_texts(model, tokenizer, [text], max_length=max_length)
        return probs[0]
    import torch

    from companion.probe import ProbeConfig, message_features

    with torch.no_grad():
        features = message_features(model, tokenizer, [text], cfg or ProbeConfig())  # (1, F)
        return probe(features).softmax(dim=-1)[0]  # (K,)


def classifier_html(model, tokenizer, text: str, max_length: int = 128, *, probe=None, cfg=None) -> str:
    """HTML com a decisão do classificador para uma mensagem: o rótulo e a probabilidade de cada classe (cap. 6).

    Serve aos dois classificadores do curso: o ``SpamClassifier`` (SmolLM2 com blocos e
    cabeça ajustados) e a sonda sobre um modelo congelado (``companion.probe``).

    Args:
        model: um ``companion.classifier.SpamClassifier`` treinado — ou, com ``probe``, o
            modelo congelado de onde saem os vetores (o Gemma 3 de ``load_gemma3``).
        tokenizer: o tokenizador do modelo base.
        text: a mensagem.
        max_length: tokens lidos da mensagem (só no ``SpamClassifier``; a sonda usa ``cfg.max_length``).
        probe: uma ``companion.probe.LinearProbe`` treinada (``load_probe``), ou ``None``.
        cfg: a ``ProbeConfig`` da sonda (os blocos lidos); ``None`` = ``ProbeConfig()``.

    Returns:
        Um trecho de HTML (``str``); para um texto vazio, um aviso em vez da decisão.
    """
    from companion.classifier import LABELS

    if not isinstance(text, str):
        raise TypeError(f"text deve ser um texto (str); recebi {type(text).__name__}.")
    if not text.strip():
        return '<p style="color:#777">Digite uma mensagem para classificar.</p>'
    probs = _classifier_probs(model, tokenizer, text, max_length, probe, cfg)
    colors = {"spam": "#D55E00", "normal": "#009E73"}
    bars = []
    for k, name in enumerate(LABELS):
        p = float(probs[k])
        bars.append(
            f'<div style="margin:2px 0"><span style="display:inline-block;width:4.5em">{name}</span>'
            f'<span style="display:inline-block;width:{p * 240:.0f}px;height:0.9em;background:{colors.get(name, "#0072B2")};'
            f'vertical-align:middle"></span> {p:.1%}</div>'
        )
    label = LABELS[int(probs.argmax())]
    verdict = "parece golpe/spam" if label == "spam" else "parece uma mensagem normal"
    return (
        f'<div><p style="margin:4px 0">«{html.escape(text)}»</p>'
        f'<p style="margin:4px 0"><b style="color:{colors.get(label, "#222")}">{label}</b> — {verdict}</p>'
        f'{"".join(bars)}</div>'
    )


def classifier_explorer(model, tokenizer, text: str = EXAMPLE_MESSAGE, max_length: int = 128, *, probe=None, cfg=None):
    """Classificador interativo: digite uma mensagem e veja se o modelo a acha golpe (cap. 6).

    A decisão é recalculada quando você termina de digitar (Enter ou clique fora da caixa).
    No site, sem *kernel*, aparece a decisão para a mensagem inicial.

    Args:
        model: um ``SpamClassifier`` treinado (``companion.classifier.load_classifier``) —
            ou, com ``probe``, o modelo congelado (``companion.pretrained.load_gemma3``).
        tokenizer: o tokenizador do modelo base.
        text: a mensagem inicial.
        max_length: tokens lidos da mensagem (só no ``SpamClassifier``).
        probe, cfg: a sonda e a sua configuração (``companion.probe.load_probe``), ou ``None``.

    Returns:
        Um ``ipywidgets.VBox`` com a caixa de texto e o painel.
    """
    import ipywidgets as widgets

    box = widgets.Textarea(
        value=text, description="Mensagem:", continuous_update=False,
        layout=widgets.Layout(width="100%", height="4.5em"),
    )
    panel = widgets.HTML(value=classifier_html(model, tokenizer, text, max_length, probe=probe, cfg=cfg))

    def update(change: dict) -> None:
        panel.value = classifier_html(model, tokenizer, change["new"], max_length, probe=probe, cfg=cfg)

    box.observe(update, names="value")
    return widgets.VBox([box, panel])

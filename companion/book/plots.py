"""Figuras do livro: os gráficos que mais de um capítulo usa (o estilo está em ``companion.book.style``)."""

from __future__ import annotations

from companion.book.style import PALETTE

__all__ = [
    "PALETTE",
    "plot_next_word_probs",
    "plot_course_map",
    "plot_llm_lifecycle",
    "plot_transformer_overview",
    "plot_attention_heatmap",
    "plot_attention_heads",
    "plot_losses",
    "plot_lr_schedule",
]


# --------------------------------------------------------------------------- cap. 1
def _ch1_box(ax, x: float, y: float, w: float, h: float, text: str, color: str, fontsize: float = 9.5) -> None:
    """Desenha uma caixa de cantos arredondados com texto centralizado (figuras-diagrama do cap. 1)."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=color, edgecolor="#333333", linewidth=1.0, alpha=0.9,
        )
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, wrap=True)


def _ch1_arrow(ax, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Seta simples entre dois pontos (figuras-diagrama do cap. 1)."""
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.3})


def _ch1_blank_axes(ax, width: float, height: float):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(width, height))
    ax.set_axis_off()
    return ax


def plot_next_word_probs(probs: dict[str, float], context: str, ax=None, color: str | None = None):
    """Barras horizontais com as probabilidades da próxima palavra (cap. 1).

    Args:
        probs: ``dict`` palavra -> probabilidade, como o de ``NGramModel.next_word_probs``
            (já na ordem desejada, da mais para a menos provável).
        context: o contexto, mostrado no título como ``"<contexto> ___"``.
        ax: eixos do matplotlib onde desenhar (padrão: uma figura nova).
        color: cor das barras (padrão: a primeira da paleta do livro).

    Returns:
        Os eixos desenhados.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    from companion.numbers import num

    if not probs:
        raise ValueError("probs está vazio: não há nenhuma palavra para desenhar.")
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 0.35 * len(probs) + 1.2))
    words = list(probs)[::-1]  # a mais provável fica em cima
    values = [probs[w] for w in words]
    bars = ax.barh(words, values, color=color or PALETTE[0])
    for bar, value in zip(bars, values):
        ax.text(bar.get_width() + 0.005, bar.get_y() + bar.get_height() / 2, num(value, 2), va="center", fontsize=9)
    ax.set_xlim(0, min(1.0, max(values) * 1.2 + 0.05))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: num(x, 2)))  # vírgula decimal também no eixo
    ax.set_xlabel("probabilidade da próxima palavra")
    ax.set_title(f"“{context} ___”")
    ax.grid(axis="y", visible=False)
    return ax


def plot_course_map(highlight: int | None = 1, ax=None):
    """O mapa do curso: os seis capítulos como um *pipeline*, do texto ao modelo ajustado (cap. 1).

    Args:
        highlight: número do capítulo a destacar (``None`` para nenhum).
        ax: eixos do matplotlib (padrão: uma figura nova).

    Returns:
        Os eixos desenhados.
    """
    chapters = [
        ("1. Fundamentos", "prever a próxima\npalavra contando"),
        ("2. Dados", "tokens, janelas\ne embeddings"),
        ("3. Atenção", "autoatenção causal\nmulti-cabeça"),
        ("4. Arquitetura", "o GPT completo\ne a geração"),
        ("5. Pré-\ntreinamento", "laço de treino,\nperda e pesos"),
        ("6. Ajuste fino", "classificar, seguir\ninstruções, alinhar"),
    ]
    ax = _ch1_blank_axes(ax, 10.5, 2.6)
    width, gap = 1.65, 0.25
    for i, (title, subtitle) in enumerate(chapters):
        x = i * (width + gap)
        current = highlight == i + 1
        _ch1_box(ax, x, 0.55, width, 0.75, title, PALETTE[1] if current else "#DDEEF8", fontsize=9)
        ax.text(x + width / 2, 0.32, subtitle, ha="center", va="top", fontsize=8, color="#333333")
        if i < len(chapters) - 1:
            _ch1_arrow(ax, (x + width + 0.02, 0.925), (x + width + gap - 0.02, 0.925))
    ax.text(-0.05, 1.55, "texto em português", ha="left", fontsize=8.5, style="italic")
    ax.text(len(chapters) * (width + gap) - gap + 0.05, 1.55, "um LLM que conversa", ha="right", fontsize=8.5,
            style="italic")
    ax.set_xlim(-0.1, len(chapters) * (width + gap) - gap + 0.1)
    ax.set_ylim(-0.35, 1.75)
    return ax


def plot_llm_lifecycle(ax=None):
    """O ciclo de vida de um LLM: pré-treinamento → ajuste fino → alinhamento (cap. 1).

    Args:
        ax: eixos do matplotlib (padrão: uma figura nova).

    Returns:
        Os eixos desenhados.
    """
    stages = [
        ("Pré-treinamento", "prever o próximo token\nem trilhões de tokens\nda web, livros, código", PALETTE[5]),
        ("Ajuste fino", "exemplos de uma tarefa\nou pares instrução → resposta\n(milhares a milhões)", PALETTE[2]),
        ("Alinhamento", "preferências humanas:\nqual resposta é melhor?\n(RLHF, DPO)", PALETTE[4]),
    ]
    ax = _ch1_blank_axes(ax, 9.5, 3.0)
    width, gap = 2.5, 0.7
    for i, (title, detail, color) in enumerate(stages):
        x = i * (width + gap)
        _ch1_box(ax, x, 1.0, width, 0.7, title, color, fontsize=10.5)
        ax.text(x + width / 2, 0.85, detail, ha="center", va="top", fontsize=8.5)
        if i < len(stages) - 1:
            _ch1_arrow(ax, (x + width + 0.05, 1.35), (x + width + gap - 0.05, 1.35))
    outputs = ["modelo base\n(completa textos)", "modelo especializado\n(segue instruções)", "assistente\n(útil e mais seguro)"]
    for i, text in enumerate(outputs):
        ax.text(i * (width + gap) + width / 2, 1.85, text, ha="center", va="bottom", fontsize=8.5, style="italic")
    ax.set_xlim(-0.1, 3 * width + 2 * gap + 0.1)
    ax.set_ylim(-0.1, 2.45)
    return ax


def plot_transformer_overview(ax=None):
    """O Transformer de um GPT numa figura: do texto às probabilidades do próximo token (cap. 1).

    Args:
        ax: eixos do matplotlib (padrão: uma figura nova).

    Returns:
        Os eixos desenhados.
    """
    ax = _ch1_blank_axes(ax, 6.2, 6.4)
    x, w, h = 0.9, 3.4, 0.5
    layers = [
        (0.0, "“O céu está”  →  tokens  →  IDs", "#EEEEEE", "cap. 2"),
        (0.85, "embeddings de token + de posição", PALETTE[5], "cap. 2"),
        (2.15, "atenção causal multi-cabeça", PALETTE[1], "cap. 3"),
        (2.8, "rede feed-forward (MLP)", PALETTE[2], "cap. 4"),
        (4.05, "camada de saída → logits", PALETTE[4], "cap. 4"),
        (4.9, "softmax → P(próximo token)", "#EEEEEE", "cap. 4–5"),
    ]
    for y, text, color, chapter in layers:
        _ch1_box(ax, x, y, w, h, text, color)
        ax.text(x + w + 0.45, y + h / 2, chapter, va="center", fontsize=8.5, color="#555555")
    for (y0, *_), (y1, *_) in zip(layers, layers[1:]):
        _ch1_arrow(ax, (x + w / 2, y0 + h + 0.02), (x + w / 2, y1 - 0.02))
    # O bloco que se repete N vezes.
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((x - 0.25, 1.8), w + 0.5, 1.65, fill=False, linestyle="--", edgecolor="#555555"))
    ax.text(x - 0.35, 2.85, "× N blocos", ha="right", va="center", fontsize=9.5)
    ax.text(x - 0.35, 2.1, "com normalização\nde camada e\nconexões residuais", ha="right", va="center", fontsize=7.5,
            color="#555555")
    ax.text(x + w / 2, 5.65, "azul?   cinza?   nublado?   ...", ha="center", fontsize=9, style="italic")
    ax.set_xlim(-1.0, 5.4)
    ax.set_ylim(-0.2, 6.0)
    return ax


# --------------------------------------------------------------------------- cap. 3
def _as_numpy_2d_or_3d(weights, ndims: tuple[int, ...], name: str):
    import numpy as np

    if hasattr(weights, "detach"):
        weights = weights.detach().cpu().float().numpy()
    array = np.asarray(weights, dtype=float)
    if array.ndim not in ndims:
        raise ValueError(f"{name} deve ter {' ou '.join(map(str, ndims))} eixos; recebi o formato {array.shape}.")
    return array


def plot_attention_heatmap(weights, tokens, ax=None, title: str | None = None, annotate: bool = True,
                           cmap: str = "Blues", vmax: float | None = 1.0):
    """Mapa de calor dos pesos de atenção de uma cabeça (cap. 3).

    A linha ``i`` mostra como o token ``i`` (a consulta) distribui a sua atenção entre os
    tokens das colunas (as chaves); cada linha soma 1.

    Args:
        weights: matriz ``(T, T)`` (tensor ou array).
        tokens: os ``T`` rótulos, na ordem da sequência.
        ax: eixos do matplotlib (padrão: uma figura nova).
        title: título do gráfico.
        annotate: escreve o valor (2 casas) em cada célula.
        cmap: mapa de cores.
        vmax: valor da cor mais escura (``None``: o maior peso).

    Returns:
        Os eixos desenhados.

    Raises:
        ValueError: se ``weights`` não for quadrada ou não tiver um rótulo por token.
    """
    import matplotlib.pyplot as plt

    w = _as_numpy_2d_or_3d(weights, (2,), "weights")
    tokens = [str(t) for t in tokens]
    if w.shape[0] != w.shape[1] or w.shape[0] != len(tokens):
        raise ValueError(
            f"weights deve ser (T, T) com T = len(tokens) = {len(tokens)}; recebi o formato {w.shape}."
        )
    if ax is None:
        side = 1.6 + 0.55 * len(tokens)
        _, ax = plt.subplots(figsize=(side + 0.8, side))
    image = ax.imshow(w, cmap=cmap, vmin=0.0, vmax=vmax)
    ax.set_xticks(range(len(tokens)), tokens, rotation=45, ha="right")
    ax.set_yticks(range(len(tokens)), tokens)
    ax.set_xlabel("olha para (chaves)")
    ax.set_ylabel("token (consulta)")
    ax.grid(False)
    if annotate:
        top = vmax if vmax is not None else max(float(w.max()), 1e-12)
        for i in range(w.shape[0]):
            for j in range(w.shape[1]):
                color = "white" if w[i, j] > 0.6 * top else "#222222"
                ax.text(j, i, f"{w[i, j]:.2f}", ha="center", va="center", fontsize=7.5, color=color)
    if title:
        ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_attention_heads(weights, tokens, titles=None, ncols: int = 4, annotate: bool = False):
    """Os mapas de calor de várias cabeças lado a lado (cap. 3).

    Args:
        weights: tensor ou array ``(H, T, T)``: os pesos de cada cabeça.
        tokens: os ``T`` rótulos.
        titles: um título por cabeça (padrão: ``"cabeça 0"``, ``"cabeça 1"``...).
        ncols: cabeças por linha da figura.
        annotate: escreve o valor em cada célula.

    Returns:
        A figura do matplotlib.

    Raises:
        ValueError: se ``weights`` não tiver 3 eixos ou ``ncols`` < 1.
    """
    import matplotlib.pyplot as plt

    w = _as_numpy_2d_or_3d(weights, (3,), "weights")
    if ncols < 1:
        raise ValueError(f"ncols deve ser >= 1; recebi {ncols}.")
    H = w.shape[0]
    titles = list(titles) if titles is not None else [f"cabeça {h}" for h in range(H)]
    if len(titles) != H:
        raise ValueError(f"titles deve ter {H} itens (um por cabeça); recebi {len(titles)}.")
    ncols = min(ncols, H)
    nrows = -(-H // ncols)
    side = 1.0 + 0.3 * w.shape[-1]
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols, side * nrows), squeeze=False)
    for h, ax in enumerate(axes.flat):
        if h >= H:
            ax.set_axis_off()
            continue
        ax.imshow(w[h], cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_title(titles[h])
        ax.set_xticks(range(len(tokens)), [str(t) for t in tokens], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(tokens)), [str(t) for t in tokens], fontsize=8)
        ax.grid(False)
        if annotate:
            for i in range(w.shape[1]):
                for j in range(w.shape[2]):
                    ax.text(j, i, f"{w[h, i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if w[h, i, j] > 0.6 else "#222222")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- cap. 5 — pré-treinamento
def plot_losses(history, ax=None, title: str | None = "Perda durante o treino", show_steps: bool = True):
    """Curvas de perda de treino e de validação de um histórico de ``companion.train.train`` (cap. 5).

    Os pontos são as avaliações (janelas fixas de treino e de validação, com o modelo em
    modo ``eval``); a linha fina e clara, a perda de cada passo (ruidosa, porque cada
    lote é diferente). O eixo de cima mostra quantos tokens o modelo já tinha visto.

    Args:
        history: o dicionário devolvido por ``train`` (``step``, ``train_loss``, ``val_loss``,
            ``tokens_seen`` e, opcionalmente, ``step_loss``).
        ax: eixos do matplotlib (padrão: uma figura nova).
        title: título do gráfico.
        show_steps: desenha também a perda de cada passo.

    Returns:
        Os eixos desenhados.

    Raises:
        ValueError: se faltar alguma chave ou o histórico estiver vazio.
    """
    import matplotlib.pyplot as plt

    for key in ("step", "train_loss", "val_loss"):
        if key not in history:
            raise ValueError(f"history não tem a chave {key!r}: passe o dicionário devolvido por train().")
    if not history["step"]:
        raise ValueError("history está vazio: treine ao menos uma avaliação antes de desenhar.")
    if ax is None:
        _, ax = plt.subplots()
    steps = history["step"]
    if show_steps and history.get("step_loss"):
        ax.plot(range(1, len(history["step_loss"]) + 1), history["step_loss"], color=PALETTE[5], alpha=0.35,
                linewidth=0.8, label="perda de cada passo (treino)")
    ax.plot(steps, history["train_loss"], "o-", color=PALETTE[0], markersize=3.5, label="treino")
    ax.plot(steps, history["val_loss"], "s-", color=PALETTE[3], markersize=3.5, label="validação")
    ax.set_xlabel("passo")
    ax.set_ylabel("perda (entropia cruzada)")
    if title:
        ax.set_title(title)
    tokens = history.get("tokens_seen")
    if tokens and steps[-1] > 0 and tokens[-1] > 0:
        per_step = tokens[-1] / steps[-1]
        top = ax.secondary_xaxis("top", functions=(lambda s: s * per_step / 1000, lambda t: t * 1000 / per_step))
        top.set_xlabel("mil tokens vistos")
    ax.legend()
    return ax


def plot_lr_schedule(cfg, ax=None, title: str | None = "Taxa de aprendizado: aquecimento + cosseno"):
    """A taxa de aprendizado de cada passo de um ``TrainConfig`` (cap. 5).

    Args:
        cfg: um ``companion.train.TrainConfig``.
        ax: eixos do matplotlib (padrão: uma figura nova).
        title: título do gráfico.

    Returns:
        Os eixos desenhados.
    """
    import matplotlib.pyplot as plt

    from companion.train import lr_at

    if ax is None:
        _, ax = plt.subplots()
    steps = list(range(max(cfg.steps, cfg.decay_steps)))
    ax.plot(steps, [lr_at(s, cfg) for s in steps], color=PALETTE[0])
    ax.axvspan(0, cfg.warmup_steps, color=PALETTE[1], alpha=0.15, label="aquecimento")
    ax.axhline(cfg.min_lr, color=PALETTE[7], linewidth=0.8, linestyle=":", label="min_lr")
    ax.set_xlabel("passo")
    ax.set_ylabel("taxa de aprendizado")
    if title:
        ax.set_title(title)
    ax.legend()
    return ax

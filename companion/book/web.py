"""Os exploradores do livro para o site estático: HTML + JavaScript, sem *kernel* (caps. 2, 3 e 5).

``companion.book.widgets`` tem as versões em ipywidgets, que precisam de Python rodando
(Jupyter, Colab). No site não há Python: as funções daqui devolvem um bloco HTML com os
dados já calculados (os pesos de atenção, os *logits* do próximo token, as junções do BPE)
e carregam o JavaScript do site (``book/_site_static/web/``), que faz o resto no navegador:

* ``tokenizer_explorer_html`` — digite e veja os tokens do BPE do curso e do GPT-2 (cap. 2);
* ``attention_explorer_html`` — escolha cabeça e token e veja para onde ele olha (cap. 3);
* ``decoding_explorer_html`` — temperatura, top-k e top-p sobre os *logits* do modelo (cap. 5).

Numa célula de notebook, o bloco mostra no Jupyter a versão estática (feita em Python, a
mesma dos widgets); no site, o JavaScript a substitui pela versão que responde. Os dados
para a página "O modelo no seu navegador" saem das mesmas funções (``*_config``), por
``companion.book.site_assets``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "STATIC_URL",
    "GPT2_VOCAB_SRC",
    "tokenizer_spec",
    "tokenizer_config",
    "attention_config",
    "decoding_config",
    "explorer_html",
    "tokenizer_explorer_html",
    "attention_explorer_html",
    "decoding_explorer_html",
]

# Onde fica a pasta _static do site, vista de uma página de capítulo (book/<pasta>/<página>.html).
STATIC_URL = "../../_static"
# O vocab.bpe do GPT-2 que o build do site copia para _static (companion.book.site_assets).
GPT2_VOCAB_SRC = "generated/gpt2/vocab.bpe"
# Os scripts de cada explorador, na ordem em que precisam ser carregados.
_SCRIPTS = {
    "tokenizer": ("web/bpe.js", "web/explorers.js"),
    "attention": ("web/explorers.js",),
    "decoding": ("web/sampler.js", "web/explorers.js"),
}
# Casas decimais dos números exportados (pesos e logits): o bastante para as contas do
# navegador e pouco para o tamanho da página.
_DECIMALS = 4


def _rounded(values: Any) -> Any:
    """Lista (aninhada) de floats arredondados, a partir de um tensor, array ou lista."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().tolist()
    elif hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        return [_rounded(v) for v in values]
    return round(float(values), _DECIMALS)


# --------------------------------------------------------------------------- configurações (dados)
def tokenizer_spec(name: str, tokenizer: Any) -> dict[str, Any]:
    """Um tokenizador descrito para o JavaScript.

    Args:
        name: o rótulo mostrado.
        tokenizer: um ``BPETokenizer`` (as junções vão junto com a página) ou o ``tiktoken``
            do GPT-2 (``gpt2_tokenizer()``; o navegador baixa o ``vocab.bpe`` do site).

    Raises:
        TypeError: outro tipo de tokenizador (o ``SimpleTokenizer`` não tem versão em JavaScript).
    """
    from companion.tokenizers import BPETokenizer

    if isinstance(tokenizer, BPETokenizer):
        data = {
            "format": "companion-bpe",
            "version": 1,
            "pattern": tokenizer.pattern,
            "special_tokens": list(tokenizer.special_tokens),
            "merges": [list(pair) for pair in tokenizer.merges],
        }
        return {"name": name, "kind": "course", "data": data}
    if getattr(tokenizer, "name", None) == "gpt2" and hasattr(tokenizer, "decode_single_token_bytes"):
        return {"name": name, "kind": "gpt2", "src": GPT2_VOCAB_SRC}
    raise TypeError(
        "o explorador do site roda o BPETokenizer do curso e o tokenizador do GPT-2; "
        f"recebi {type(tokenizer).__name__}."
    )


def tokenizer_config(tokenizers: Mapping[str, Any], text: str) -> dict[str, Any]:
    """A configuração do explorador de tokenizadores: a frase inicial e os tokenizadores."""
    if not isinstance(text, str):
        raise TypeError(f"text deve ser um texto (str); recebi {type(text).__name__}.")
    if not tokenizers:
        raise ValueError("tokenizers está vazio: passe ao menos um tokenizador.")
    return {"text": text, "tokenizers": [tokenizer_spec(name, tok) for name, tok in tokenizers.items()]}


def attention_config(
    weights: Any, tokens: Sequence[str], head_labels: Sequence[str] | None = None, head: int = 0, token: int | None = None
) -> dict[str, Any]:
    """A configuração do explorador de atenção: os pesos ``(H, T, T)`` arredondados e os rótulos.

    Args:
        weights: ``(H, T, T)`` ou ``(T, T)`` (tensor ou array); linhas somam 1.
        tokens: os ``T`` rótulos.
        head_labels: um nome por cabeça (padrão ``"cabeça 0"``...).
        head, token: o que aparece de início (``token`` padrão: o último).

    Raises:
        ValueError: formatos incompatíveis ou índices fora do intervalo.
    """
    from companion.book.widgets import attention_setup

    w, tokens, labels, head, token = attention_setup(weights, tokens, head_labels, head, token)
    return {"tokens": tokens, "heads": labels, "weights": _rounded(w), "head": head, "token": token}


def _piece(tokenizer: Any, token_id: int) -> str:
    from companion.tokenizers import _bytes_to_piece

    return _bytes_to_piece(tokenizer.decode_single_token_bytes(token_id))


def decoding_config(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = 0.9,
) -> dict[str, Any]:
    """A configuração do explorador de decodificação: os *logits* do próximo token de cada começo.

    Args:
        model: um ``GPTModel`` treinado.
        tokenizer: o seu ``tiktoken.Encoding`` (``load_trained`` devolve um).
        prompts: os começos oferecidos (não vazios).
        temperature, top_k, top_p: a posição inicial dos controles.

    Returns:
        ``{"prompts": [{"prompt", "logits", "pieces"}], "temperature", "topK", "topP"}``; ``pieces``
        tem o texto de cada token (todos, em vocabulários de até 4.096; senão os 200 mais prováveis).

    Raises:
        ValueError: nenhum começo, ou um começo vazio.
    """
    import torch

    from companion.generation import check_decoding_args

    check_decoding_args(1, temperature, top_k, top_p)
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("prompts deve ter ao menos um começo, e nenhum vazio.")
    ctx = model.cfg.context_length
    entries = []
    model.eval()
    for prompt in prompts:
        ids = torch.tensor([tokenizer.encode(prompt)[-ctx:]], dtype=torch.long)  # (1, T)
        with torch.no_grad():
            logits = model(ids)[0, -1].float()  # (V,)
        V = logits.shape[0]
        shown = range(V) if V <= 4096 else torch.topk(logits, 200).indices.tolist()
        entries.append({
            "prompt": prompt,
            "logits": _rounded(logits),
            "pieces": {str(i): _piece(tokenizer, i) for i in shown},
        })
    return {"prompts": entries, "temperature": temperature, "topK": top_k, "topP": top_p}


# --------------------------------------------------------------------------- blocos HTML
def explorer_html(
    kind: str, config: Mapping[str, Any], fallback: str = "", static_url: str = STATIC_URL, notebook: bool = True
) -> str:
    """O bloco HTML de um explorador: o ``<div>``, a configuração e os ``<script>`` do site.

    Args:
        kind: ``"tokenizer"``, ``"attention"`` ou ``"decoding"``.
        config: a configuração (``tokenizer_config``...).
        fallback: o HTML mostrado enquanto (ou onde) o JavaScript não roda.
        static_url: o endereço da pasta ``_static`` do site, visto da página.
        notebook: acrescenta ao ``fallback`` uma nota para quem lê no Jupyter (use o widget).

    Raises:
        ValueError: tipo desconhecido.
    """
    if kind not in _SCRIPTS:
        raise ValueError(f"kind deve ser um de {sorted(_SCRIPTS)}; recebi {kind!r}.")
    data = json.dumps(config, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    base = static_url.rstrip("/")
    scripts = "".join(f'<script src="{html.escape(base)}/{src}"></script>' for src in _SCRIPTS[kind])
    note = (
        '<p class="llmz-note" style="font-size:0.85em;color:#555">No site do livro este quadro responde '
        "sem Python; aqui, use o controle interativo da célula acima.</p>"
    ) if notebook else ""
    return (
        f'<div class="llmz-explorer" data-explorer="{kind}">'
        f'<script type="application/json">{data}</script>{fallback}{note}</div>{scripts}'
    )


def _display(markup: str):
    from IPython.display import HTML

    return HTML(markup)


def tokenizer_explorer_html(tokenizers: Mapping[str, Any], text: str | None = None, static_url: str = STATIC_URL):
    """Explorador de tokenizadores que responde no site estático (cap. 2).

    Args:
        tokenizers: nome -> ``BPETokenizer`` ou o tokenizador do GPT-2.
        text: a frase inicial (padrão: a de ``widgets.tokenizer_explorer``).
        static_url: a pasta ``_static`` vista da página.

    Returns:
        Um ``IPython.display.HTML``: no Jupyter, os tokens da frase inicial (o HTML de
        ``widgets.tokens_html``); no site, uma caixa de texto que retokeniza a cada tecla.
    """
    from companion.book.widgets import EXAMPLE_SENTENCE, tokens_html

    text = EXAMPLE_SENTENCE if text is None else text
    config = tokenizer_config(tokenizers, text)
    return _display(explorer_html("tokenizer", config, tokens_html(tokenizers, text), static_url))


def attention_explorer_html(
    weights: Any,
    tokens: Sequence[str],
    head_labels: Sequence[str] | None = None,
    head: int = 0,
    token: int | None = None,
    static_url: str = STATIC_URL,
):
    """Explorador de atenção que responde no site estático (cap. 3): os pesos vão junto com a página.

    Args:
        weights, tokens, head_labels, head, token: como em ``widgets.attention_explorer``.
        static_url: a pasta ``_static`` vista da página.

    Returns:
        Um ``IPython.display.HTML`` (no Jupyter, o painel de ``widgets.attention_html``).
    """
    from companion.book.widgets import attention_html

    config = attention_config(weights, tokens, head_labels, head, token)
    fallback = attention_html(config["weights"][config["head"]], config["tokens"], config["token"])
    return _display(explorer_html("attention", config, fallback, static_url))


def decoding_explorer_html(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = 0.9,
    static_url: str = STATIC_URL,
):
    """Explorador de decodificação que responde no site estático (cap. 5).

    Os *logits* do próximo token de cada começo são calculados aqui (em Python) e vão junto
    com a página; o navegador aplica temperatura, top-k e top-p a cada movimento dos
    controles, com as regras de ``companion.generation.sample_next_token``.

    Args:
        model, tokenizer: o modelo treinado e o seu tokenizador.
        prompts: os começos oferecidos.
        temperature, top_k, top_p: a posição inicial dos controles.
        static_url: a pasta ``_static`` vista da página.

    Returns:
        Um ``IPython.display.HTML`` (no Jupyter, a lista dos candidatos mais prováveis do 1.º começo).
    """
    config = decoding_config(model, tokenizer, prompts, temperature, top_k, top_p)
    first = config["prompts"][0]
    top = sorted(range(len(first["logits"])), key=lambda i: -first["logits"][i])[:5]
    items = "".join(f"<code>{html.escape(first['pieces'].get(str(i), f'#{i}'))}</code> " for i in top)
    fallback = f"<p>Os 5 candidatos mais prováveis depois de «{html.escape(first['prompt'])}»: {items}</p>"
    return _display(explorer_html("decoding", config, fallback, static_url))

"""A página "O modelo no seu navegador" (cap. 5) num Chromium de verdade, sem internet.

O site é servido de _build/html numa porta local; toda requisição para fora da máquina é
bloqueada e anotada (e nenhuma pode acontecer). Na página:

- a gulosa de 30 tokens é exatamente a de ``companion.generate(..., temperature=0)`` — também
  com um começo que enche a janela de contexto (o cache é refeito, como no Python);
- com sorteio, a mesma semente dá os mesmos tokens que uma execução de referência do mesmo
  ``sampler.js`` no Node.js, alimentada com os logits do PyTorch;
- mexer nos controles muda o texto (e top-k = 1 volta à gulosa);
- os três exploradores respondem (tokens contados como no Python, cabeça e token da
  atenção, candidatos que sobrevivem aos filtros);
- o tempo até o primeiro token e os tokens por segundo são impressos.

Precisa do site construído (``bash .ci/setup``), do Chromium e do Node.js.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

# As mesmas peças do teste do site: o servidor local, o Chromium e a página com a rede cortada.
from test_site import SITE, _missing, _open, browser, site_url  # noqa: F401  (fixtures do pytest)

from companion.assets import artifact_path, asset_path
from companion.generation import generate, sample_next_token
from companion.runs import load_trained
from companion.tokenizers import BPETokenizer, gpt2_tokenizer

ROOT = Path(__file__).resolve().parent.parent
PAGE = "book/05-pretreinamento/no-navegador.html"
N_NEW = 30


@pytest.fixture(scope="module")
def trained():
    model, tokenizer = load_trained(artifact_path("cap5-treino"))
    return model.eval(), tokenizer


@pytest.fixture
def page(site_url, browser):
    if not (SITE / PAGE).is_file() or not (SITE / "_static" / "generated" / "cap5-treino" / "model.onnx").is_file():
        _missing("a página do navegador não foi construída: rode `bash .ci/setup` antes")
    page, outside = _open(browser, f"{site_url}/{PAGE}")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    page.close()
    assert outside == [], f"requisições para fora da máquina: {outside}"
    assert not [e for e in errors if "THEBE_JS_URL" not in e], errors  # (o do sphinx-thebe é de todas as páginas)


def set_value(page, selector: str, value) -> None:
    """Muda um controle como o leitor mudaria: o valor, depois os eventos input e change."""
    page.eval_on_selector(
        selector,
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true}));"
        " el.dispatchEvent(new Event('change', {bubbles: true})); }",
        str(value),
    )


GEN = ".llmz-generator"


def run_generator(page, prompt: str | None = None, **controls) -> dict:
    """Preenche o gerador, clica em Gerar e devolve o que ele anotou (ids, tempos)."""
    page.uncheck(f'{GEN} input[name="slow"]')
    if prompt is not None:
        page.fill(f'{GEN} input[name="prompt"]', prompt)
    for name, value in controls.items():
        set_value(page, f'{GEN} [name="{name}"]', value)
    runs = int(page.get_attribute(GEN, "data-runs") or 0)
    page.click(f'{GEN} button[name="go"]')
    return wait_for_run(page, runs + 1)


def wait_for_run(page, runs: int) -> dict:
    page.wait_for_function(
        f"Number(document.querySelector('{GEN}').dataset.runs || 0) >= {runs}"
        f" && document.querySelector('{GEN}').dataset.state === 'done'",
        timeout=120_000,
    )
    data = page.evaluate(f"Object.assign({{}}, document.querySelector('{GEN}').dataset)")
    assert "error" not in data, data["error"]
    data["ids"] = json.loads(data["ids"])
    return data


def greedy_in_python(trained, prompt: str) -> list[int]:
    model, tokenizer = trained
    idx = torch.tensor([tokenizer.encode(prompt, allowed_special="all")])
    return generate(model, idx, N_NEW, temperature=0.0)[0, idx.shape[1]:].tolist()


# --------------------------------------------------------------------------- o gerador
def test_greedy_in_the_browser_is_companion_generate(page, trained, capsys):
    prompt = "Era uma vez"
    data = run_generator(page, prompt, temperature=0)
    assert data["ids"] == greedy_in_python(trained, prompt)
    shown = page.inner_text(f"{GEN} .llmz-output")
    assert shown == prompt + trained[1].decode(data["ids"])
    assert page.locator(f"{GEN} .llmz-candidates .llmz-bar").count() == 6
    with capsys.disabled():
        print(f"\n[navegador] carregar onnxruntime-web + modelo: {float(data['loadMs']):.0f} ms; "
              f"primeiro token: {float(data['firstTokenMs']):.0f} ms; "
              f"{float(data['tokensPerSecond']):.0f} tokens/s ({N_NEW} tokens, gulosa)")


def test_greedy_with_a_prompt_that_fills_the_window(page, trained):
    corpus = asset_path("corpus_ptbr.txt").read_text(encoding="utf-8")
    prompt = " ".join(corpus.split()[200:245])  # ~60 tokens: com 30 novos, passa do contexto de 64
    assert len(trained[1].encode(prompt)) + N_NEW > trained[0].cfg.context_length
    data = run_generator(page, prompt, temperature=0)
    assert data["ids"] == greedy_in_python(trained, prompt)


JS_REFERENCE = r"""
// A execução de referência: o mesmo sampler.js, fora do navegador, com os logits do PyTorch.
const S = require("./book/_site_static/web/sampler.js");
const readline = require("readline");
let options = null, random = null;
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const message = JSON.parse(line);
  if (message.options) { options = message.options; random = S.mulberry32(message.options.seed); return; }
  console.log(JSON.stringify(S.sampleNextToken(message.logits, options, random).id));
});
"""


def js_reference_run(trained, prompt: str, options: dict) -> list[int]:
    node = shutil.which("node")
    if node is None:
        _missing("Node.js não encontrado (a execução de referência do sampler roda nele)")
    model, tokenizer = trained
    ids = tokenizer.encode(prompt)
    ctx = model.cfg.context_length
    with subprocess.Popen([node, "-e", JS_REFERENCE], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as process:
        process.stdin.write(json.dumps({"options": options}) + "\n")
        for _ in range(N_NEW):
            with torch.no_grad():
                logits = model(torch.tensor([ids[-ctx:]]))[0, -1]
            process.stdin.write(json.dumps({"logits": logits.tolist()}) + "\n")
            process.stdin.flush()
            ids.append(json.loads(process.stdout.readline()))
        process.stdin.close()
    return ids[-N_NEW:]


def test_sampling_with_a_seed_matches_the_js_reference(page, trained):
    prompt = "A onça"
    data = run_generator(page, prompt, temperature=0.9, topK=40, topP=0.9, seed=7)
    reference = js_reference_run(trained, prompt, {"temperature": 0.9, "topK": 40, "topP": 0.9, "seed": 7})
    assert data["ids"] == reference
    assert data["ids"] != greedy_in_python(trained, prompt)


def test_controls_change_the_output(page, trained):
    prompt = "O céu está"
    greedy = run_generator(page, prompt, temperature=0)["ids"]
    # Depois da 1.ª geração, mexer num controle gera de novo sozinho.
    set_value(page, f'{GEN} [name="temperature"]', 1.2)
    hot = wait_for_run(page, 2)["ids"]
    assert hot != greedy
    set_value(page, f'{GEN} [name="seed"]', 2)
    other_seed = wait_for_run(page, 3)["ids"]
    assert other_seed != hot
    set_value(page, f'{GEN} [name="seed"]', 123)
    assert wait_for_run(page, 4)["ids"] == hot  # a mesma semente, o mesmo sorteio
    set_value(page, f'{GEN} [name="topK"]', 1)
    assert wait_for_run(page, 5)["ids"] == greedy  # top-k 1: só sobra o mais provável
    assert page.inner_text(f'{GEN} output[data-for="topK"]') == "1"


# --------------------------------------------------------------------------- os exploradores
def test_tokenizer_explorer_counts_tokens_like_python(page):
    box = '.llmz-explorer[data-explorer="tokenizer"]'
    text = "Você já viu um tamanduá-bandeira atravessando a BR-116? 🐜"
    page.fill(f'{box} input[name="text"]', text)
    page.wait_for_function(
        f"document.querySelectorAll('{box} .llmz-row[data-count]').length === 2", timeout=60_000)
    counts = [int(c) for c in page.eval_on_selector_all(f"{box} .llmz-row", "rows => rows.map(r => r.dataset.count)")]
    course = BPETokenizer.load(artifact_path("cap5-treino") / "tokenizer.json")
    assert counts == [len(course.encode(text)), len(gpt2_tokenizer().encode(text))]
    chips = page.eval_on_selector_all(f"{box} .llmz-row:first-child .llmz-id", "ids => ids.map(i => +i.textContent)")
    assert chips == course.encode(text)


def test_attention_explorer_switches_head_and_token(page):
    box = '.llmz-explorer[data-explorer="attention"]'
    first = page.inner_html(f"{box} .llmz-panel")
    page.select_option(f'{box} select[name="head"]', "5")
    assert page.get_attribute(box, "data-head") == "5"
    assert page.inner_html(f"{box} .llmz-panel") != first
    page.click(f'{box} .llmz-att-word[data-token="2"]')
    assert page.get_attribute(box, "data-token") == "2"
    assert "(posição 2)" in page.inner_text(f"{box} .llmz-panel")


def test_decoding_explorer_filters_live(page):
    box = '.llmz-explorer[data-explorer="decoding"]'

    def kept() -> int:
        return int(page.get_attribute(box, "data-kept"))

    set_value(page, f'{box} [name="topP"]', 1)
    set_value(page, f'{box} [name="topK"]', 0)
    set_value(page, f'{box} [name="temperature"]', 1)
    assert kept() == 1024
    set_value(page, f'{box} [name="topK"]', 1)
    assert kept() == 1
    set_value(page, f'{box} [name="topK"]', 0)
    set_value(page, f'{box} [name="topP"]', 0.5)
    expected = _python_kept(torch.tensor(_decoding_logits()), temperature=1.0, top_p=0.5)
    assert kept() == expected and 1 < expected < 1024
    set_value(page, f'{box} [name="temperature"]', 0)
    assert kept() == 1


def _decoding_logits() -> list[float]:
    """Os logits do 1.º começo do explorador, lidos do mesmo arquivo que a página incluiu."""
    snippet = (SITE / "_static" / "generated" / "snippets" / "decoding.html").read_text(encoding="utf-8")
    opening = '<script type="application/json">'
    start = snippet.index(opening) + len(opening)
    config = json.loads(snippet[start:snippet.index("</script>", start)].replace("<\\/", "</"))
    return config["prompts"][0]["logits"]


def _python_kept(logits: torch.Tensor, temperature: float, top_p: float) -> int:
    """Quantos tokens o ``sample_next_token`` deixa sortear (probabilidade > 0)."""
    from unittest import mock

    captured = {}

    def fake_multinomial(probs, num_samples, generator=None):
        captured["probs"] = probs
        return torch.zeros(1, 1, dtype=torch.long)

    with mock.patch("torch.multinomial", fake_multinomial):
        sample_next_token(logits[None], temperature, None, top_p)
    return int((captured["probs"] > 0).sum())


# --------------------------------------------------------------------------- o peso da página
def test_only_this_page_loads_the_model_runtime():
    if not (SITE / PAGE).is_file():
        _missing("o site não foi construído: rode `bash .ci/setup` antes")
    pages = [p for p in SITE.rglob("*.html") if "web/generator.js" in p.read_text(encoding="utf-8")]
    assert [p.relative_to(SITE).as_posix() for p in pages] == [PAGE]
    assert "ort.wasm.min.js" not in (SITE / PAGE).read_text(encoding="utf-8")  # só quando o leitor clica em Gerar


# --------------------------------------------------------------------------- as células dos capítulos
def test_notebook_blocks_respond_on_a_chapter_page(site_url, browser, trained):
    """Os blocos de ``companion.book.web`` que as células dos caps. 2, 3 e 5 mostram, numa página de capítulo."""
    from urllib.parse import urlparse

    from companion.book import web
    from companion.data import load_corpus

    if not (SITE / "_static" / "web" / "explorers.js").is_file():
        _missing("o site não foi construído: rode `bash .ci/setup` antes")
    model, tokenizer = trained
    bpe = BPETokenizer().train(load_corpus(), 1000)
    weights = torch.softmax(torch.randn(2, 4, 4).masked_fill(torch.ones(4, 4).triu(1).bool(), float("-inf")), -1)
    blocks = [
        web.tokenizer_explorer_html({"BPE do curso (1.000 tokens)": bpe, "GPT-2 (50.257 tokens)": gpt2_tokenizer()}),
        web.attention_explorer_html(weights, ["A", "maçã", "estava", "azeda"], head_labels=["um", "outro"]),
        web.decoding_explorer_html(model, tokenizer, ["A onça"], temperature=0.8, top_k=40, top_p=0.9),
    ]
    body = "".join(f"<div class='output'>{block.data}</div>" for block in blocks)
    page = browser.new_page()
    outside: list[str] = []

    def guard(route) -> None:
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.route("**/book/teste/celulas.html", lambda route: route.fulfill(
        body=f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}</body></html>",
        content_type="text/html; charset=utf-8"))
    try:
        page.goto(f"{site_url}/book/teste/celulas.html", wait_until="networkidle")
        assert page.locator(".llmz-explorer[data-mounted]").count() == 3
        assert "use o controle interativo" not in page.inner_text("body")  # o JavaScript trocou o conteúdo
        text = "Paguei R$ 12,50 no Pix"
        page.fill('.llmz-explorer[data-explorer="tokenizer"] input[name="text"]', text)
        page.wait_for_function("document.querySelectorAll('.llmz-row[data-count]').length === 2", timeout=60_000)
        counts = page.eval_on_selector_all(".llmz-row", "rows => rows.map(r => +r.dataset.count)")
        assert counts == [len(bpe.encode(text)), len(gpt2_tokenizer().encode(text))]
        page.select_option('.llmz-explorer[data-explorer="attention"] select', "1")
        assert page.get_attribute('.llmz-explorer[data-explorer="attention"]', "data-head") == "1"
        assert page.get_attribute('.llmz-explorer[data-explorer="decoding"]', "data-kept") not in (None, "1024")
        set_value(page, '.llmz-explorer[data-explorer="decoding"] [name="topK"]', 1)
        assert page.get_attribute('.llmz-explorer[data-explorer="decoding"]', "data-kept") == "1"
    finally:
        page.close()
    assert outside == []

"""Testes de companion/book/web.py e companion/book/site_assets.py: os exploradores do site estático.

Aqui, o que o Python produz (os blocos HTML e os arquivos gerados para o site); o comportamento
no navegador está em ``tests/test_web_page.py``.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from companion.assets import artifact_path
from companion.book import web
from companion.book.widgets import EXAMPLE_SENTENCE, tokens_html
from companion.runs import load_trained
from companion.tokenizers import BPETokenizer, SimpleTokenizer, gpt2_tokenizer


def config_of(markup: str) -> dict:
    """A configuração JSON de um bloco de ``explorer_html``."""
    match = re.search(r'<script type="application/json">(.*?)</script>', markup, re.DOTALL)
    assert match, markup[:200]
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def course_bpe() -> BPETokenizer:
    return BPETokenizer.load(artifact_path("cap5-treino") / "tokenizer.json")


def test_tokenizer_block_embeds_the_merges_and_points_to_gpt2(course_bpe):
    block = web.tokenizer_explorer_html({"BPE": course_bpe, "GPT-2": gpt2_tokenizer()}).data
    config = config_of(block)
    assert config["text"] == EXAMPLE_SENTENCE
    bpe, gpt2 = config["tokenizers"]
    assert bpe["kind"] == "course" and bpe["data"]["merges"] == [list(m) for m in course_bpe.merges]
    assert BPETokenizer(bpe["data"]["merges"], bpe["data"]["special_tokens"], bpe["data"]["pattern"]).encode(
        EXAMPLE_SENTENCE) == course_bpe.encode(EXAMPLE_SENTENCE)
    assert gpt2 == {"name": "GPT-2", "kind": "gpt2", "src": web.GPT2_VOCAB_SRC}
    # sem JavaScript, os tokens da frase inicial (o HTML dos widgets) e a nota para o Jupyter
    assert tokens_html({"BPE": course_bpe, "GPT-2": gpt2_tokenizer()}, EXAMPLE_SENTENCE) in block
    assert "use o controle interativo" in block
    assert block.endswith('<script src="../../_static/web/explorers.js"></script>')
    assert '<script src="../../_static/web/bpe.js"></script>' in block


def test_tokenizer_block_refuses_what_has_no_js_version():
    with pytest.raises(TypeError, match="BPETokenizer"):
        web.tokenizer_config({"simples": SimpleTokenizer(["a", "b"])}, "a b")
    with pytest.raises(ValueError, match="vazio"):
        web.tokenizer_config({}, "a")
    with pytest.raises(TypeError, match="texto"):
        web.tokenizer_config({"x": gpt2_tokenizer()}, 3)


def test_attention_block_rounds_weights_and_checks_shapes():
    weights = torch.softmax(torch.randn(2, 3, 3), dim=-1)
    block = web.attention_explorer_html(weights, ["a", "</script>", "c"], head_labels=["x", "y"], head=1, token=0).data
    config = config_of(block)
    assert config["heads"] == ["x", "y"] and config["head"] == 1 and config["token"] == 0
    assert config["tokens"][1] == "</script>"  # escapado no HTML, intacto no JSON
    assert block.count("</script>") == block.count("<script")
    torch.testing.assert_close(torch.tensor(config["weights"], dtype=torch.float64), weights.double(), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="head_labels"):
        web.attention_config(weights, ["a", "b", "c"], head_labels=["só uma"])
    with pytest.raises(ValueError, match="token"):
        web.attention_config(weights, ["a", "b", "c"], token=3)
    with pytest.raises(ValueError, match="formato"):
        web.attention_config(weights, ["a", "b"])


def test_decoding_block_carries_the_model_logits():
    model, tokenizer = load_trained(artifact_path("cap5-treino"))
    block = web.decoding_explorer_html(model, tokenizer, ["A onça", "Era uma vez"], top_k=40).data
    config = config_of(block)
    assert [p["prompt"] for p in config["prompts"]] == ["A onça", "Era uma vez"]
    assert (config["temperature"], config["topK"], config["topP"]) == (0.8, 40, 0.9)
    with torch.no_grad():
        expected = model(torch.tensor([tokenizer.encode("A onça")]))[0, -1]
    torch.testing.assert_close(torch.tensor(config["prompts"][0]["logits"]), expected, atol=1e-4, rtol=0)  # 4 casas
    assert len(config["prompts"][0]["pieces"]) == 1024
    top = int(expected.argmax())
    assert f"<code>{config['prompts'][0]['pieces'][str(top)]}</code>" in block  # o mais provável, sem JavaScript
    with pytest.raises(ValueError, match="prompts"):
        web.decoding_config(model, tokenizer, [""])
    with pytest.raises(ValueError, match="temperature"):
        web.decoding_config(model, tokenizer, ["A"], temperature=-1)


def test_explorer_html_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        web.explorer_html("grafico", {})


def test_site_assets_are_generated_once(tmp_path):
    pytest.importorskip("onnxruntime")
    from companion.book.site_assets import RUN, write_site_assets

    assert write_site_assets(tmp_path) is True
    info = json.loads((tmp_path / RUN / "model.json").read_text(encoding="utf-8"))
    assert info["kv_cache"] is True and info["context_length"] == 64 and info["vocab_size"] == 1024
    assert info["max_abs_diff_vs_pytorch"] < 1e-4
    assert (tmp_path / RUN / "model.onnx").stat().st_size == info["size_bytes"]
    assert (tmp_path / RUN / "tokenizer.json").read_bytes() == (artifact_path(RUN) / "tokenizer.json").read_bytes()
    assert (tmp_path / "gpt2" / "vocab.bpe").stat().st_size > 400_000
    for name in ("tokenizer", "attention", "decoding"):
        block = (tmp_path / "snippets" / f"{name}.html").read_text(encoding="utf-8")
        assert f'data-explorer="{name}"' in block and "use o controle interativo" not in block
    assert write_site_assets(tmp_path) is False  # o carimbo está em dia: nada a refazer

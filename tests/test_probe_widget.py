"""O widget do cap. 6 com a sonda: ``classifier_html``/``classifier_explorer`` sobre um Gemma 3 congelado."""

from __future__ import annotations

import pytest
import torch

from companion.book.widgets import classifier_explorer, classifier_html
from companion.gemma3 import Gemma3Config, Gemma3Model
from companion.probe import ProbeConfig, message_features, train_probe


class ByteTokenizer:
    """Um tokenizador de brinquedo com a cara do SentencePiece do Gemma: bytes + 4 especiais."""

    bos_id, eos_id, unk_id, pad_id, add_bos = 2, 1, 3, 0, True

    def encode(self, text: str, *, bos: bool = False, special: bool = True) -> list[int]:
        return ([self.bos_id] if bos else []) + [4 + b for b in text.encode("utf-8")]

    def decode(self, ids, *, skip_special: bool = False) -> str:
        return bytes(i - 4 for i in ids if i >= 4).decode("utf-8", errors="replace")

    def piece_to_id(self, piece: str) -> int:
        raise ValueError(piece)


@pytest.fixture(scope="module")
def tiny_probe():
    torch.manual_seed(0)
    model = Gemma3Model(Gemma3Config.preset("gemma3-mini", context_length=512)).eval()
    cfg = ProbeConfig(layers=(1, 2), hidden=8, steps=20, seed=1)
    texts = ["pix urgente agora", "almoço domingo?", "ganhou prêmio, pague a taxa", "chego às 7"]
    probe, _ = train_probe(message_features(model, ByteTokenizer(), texts, cfg), torch.tensor([1, 0, 1, 0]), cfg)
    return model, probe, cfg


def test_probe_widget_shows_the_probe_probabilities(tiny_probe):
    model, probe, cfg = tiny_probe
    text = "Pix <urgente> & grátis"
    page = classifier_html(model, ByteTokenizer(), text, probe=probe, cfg=cfg)
    with torch.no_grad():
        probs = probe(message_features(model, ByteTokenizer(), [text], cfg)).softmax(-1)[0]
    label = ("normal", "spam")[int(probs.argmax())]
    assert "&lt;urgente&gt;" in page
    assert f"{float(probs[1]):.1%}" in page and f"{float(probs[0]):.1%}" in page
    assert f">{label}</b>" in page
    assert "Digite uma mensagem" in classifier_html(model, ByteTokenizer(), "  ", probe=probe, cfg=cfg)
    with pytest.raises(TypeError, match="text"):
        classifier_html(model, ByteTokenizer(), None, probe=probe, cfg=cfg)


def test_probe_widget_updates_when_the_text_changes(tiny_probe):
    model, probe, cfg = tiny_probe
    box = classifier_explorer(model, ByteTokenizer(), text="oi", probe=probe, cfg=cfg)
    textarea, panel = box.children
    assert "«oi»" in panel.value
    textarea.value = "outra mensagem"
    assert "outra mensagem" in panel.value and "%" in panel.value


def test_probe_widget_rejects_a_config_that_does_not_match_the_probe(tiny_probe):
    model, probe, _ = tiny_probe
    with pytest.raises(ValueError, match="a sonda espera vetores"):
        classifier_html(model, ByteTokenizer(), "oi", probe=probe, cfg=ProbeConfig(layers=(1,)))

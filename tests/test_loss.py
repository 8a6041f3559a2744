"""Testes do caminho sem *logits* inteiros de companion/loss.py (apêndice de escala).

``chunked_cross_entropy`` e ``lm_loss`` têm de dar o mesmo valor e o mesmo gradiente que
``F.cross_entropy(model(x), y)`` (e que ``cross_entropy_by_hand``, do cap. 5). As perdas
básicas do cap. 5 (``cross_entropy_by_hand``, ``calc_loss_batch``...) são testadas em
``tests/test_train.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.dpo import sequence_logprobs
from companion.llama import LlamaConfig, LlamaModel
from companion.lora import apply_lora
from companion.loss import (
    IGNORE_INDEX,
    calc_loss_batch,
    chunked_cross_entropy,
    cross_entropy_by_hand,
    lm_loss,
    supports_chunked_loss,
)
from companion.model import GPTConfig, GPTModel

V = 37


def reference(hidden, weight, targets, reduction="mean"):
    """O caminho comum: todos os logits, depois F.cross_entropy em float32."""
    logits = F.linear(hidden, weight)  # (..., V)
    out = F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), reduction=reduction)
    return out.view(targets.shape) if reduction == "none" else out


def make_inputs(B=3, T=5, C=8, seed=0, ignored=()):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, C, generator=g).requires_grad_()
    weight = torch.randn(V, C, generator=g).requires_grad_()
    targets = torch.randint(0, V, (B, T), generator=g)
    for b, t in ignored:
        targets[b, t] = IGNORE_INDEX
    return hidden, weight, targets


def grads(loss, tensors, seed=1):
    """Gradientes de ``loss`` (escalar ou não: com pesos aleatórios, como na DPO)."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(loss.shape, generator=g) if loss.dim() else None
    return torch.autograd.grad(loss, tensors, weights)


def gpt(tie: bool) -> GPTModel:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=V, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0, tie_weights=tie)
    return GPTModel(cfg)


# ----------------------------------------------------------------------------- chunked_cross_entropy
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [1, 4, 7, 1000])  # 4 e 7 não dividem as 15 posições (ou as 12 válidas)
@pytest.mark.parametrize("ignored", [(), ((0, 0), (1, 3), (2, 4))])
@pytest.mark.parametrize("weight_trains", [True, False])
def test_chunked_equals_full_logits(reduction, chunk_size, ignored, weight_trains):
    hidden, weight, targets = make_inputs(ignored=ignored)
    weight.requires_grad_(weight_trains)
    wanted = [hidden, weight] if weight_trains else [hidden]
    expected = reference(hidden, weight, targets, reduction)
    got = chunked_cross_entropy(hidden, weight, targets, reduction=reduction, chunk_size=chunk_size)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    got_grads = grads(got, wanted)
    for a, b in zip(got_grads, grads(expected, wanted)):
        torch.testing.assert_close(a, b)
    # as posições ignoradas não recebem gradiente nenhum
    assert all(got_grads[0][b, t].abs().max() == 0 for b, t in ignored)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 12), C=st.integers(1, 6), vocab=st.integers(2, 20), chunk_size=st.integers(1, 13),
    seed=st.integers(0, 1000),
)
def test_chunked_equals_full_logits_any_shape(n, C, vocab, chunk_size, seed):
    g = torch.Generator().manual_seed(seed)
    hidden = (3 * torch.randn(n, C, generator=g)).requires_grad_()
    weight = torch.randn(vocab, C, generator=g).requires_grad_()
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[torch.rand(n, generator=g) < 0.3] = IGNORE_INDEX
    if (targets == IGNORE_INDEX).all():
        targets[0] = 0
    got = chunked_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)
    expected = reference(hidden, weight, targets)
    torch.testing.assert_close(got, expected)
    for a, b in zip(grads(got, [hidden, weight]), grads(expected, [hidden, weight])):
        torch.testing.assert_close(a, b)


def test_chunked_scales_incoming_gradient_and_supports_a_second_backward():
    hidden, weight, targets = make_inputs(ignored=((0, 1),))
    loss = chunked_cross_entropy(hidden, weight, targets, chunk_size=4)
    (3.5 * loss).backward(retain_graph=True)  # a volta recebe 3,5, não 1
    first = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    loss.backward()  # a segunda volta refaz as contas (a primeira já usou o que a ida guardou)
    expected = grads(reference(hidden, weight, targets), [hidden, weight])
    torch.testing.assert_close(first[0], 3.5 * expected[0])
    torch.testing.assert_close(first[1], 3.5 * expected[1])
    torch.testing.assert_close(hidden.grad, expected[0])
    torch.testing.assert_close(weight.grad, expected[1])


def test_chunked_without_gradient_builds_no_graph():
    hidden, weight, targets = make_inputs()
    with torch.no_grad():
        loss = chunked_cross_entropy(hidden, weight, targets)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, reference(hidden, weight, targets).detach())


def test_chunked_under_bf16_autocast_matches_full_logits_under_autocast():
    hidden, weight, targets = make_inputs(B=2, T=6, C=16, ignored=((1, 2),))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = chunked_cross_entropy(hidden, weight, targets, chunk_size=5)
        expected = reference(hidden, weight, targets)  # os logits saem em bf16; a perda, em float32
    assert got.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)
    for a, b in zip(grads(got, [hidden, weight]), grads(expected, [hidden, weight])):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
    # e o bf16 muda mesmo a conta: sem autocast o valor é outro (o teste acima não é trivial)
    assert not torch.equal(got, chunked_cross_entropy(hidden, weight, targets, chunk_size=5))


def test_chunked_with_bf16_tensors():
    hidden, weight, targets = make_inputs()
    h16, w16 = hidden.detach().bfloat16().requires_grad_(), weight.detach().bfloat16().requires_grad_()
    got = chunked_cross_entropy(h16, w16, targets, chunk_size=4)
    expected = reference(h16, w16, targets)
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)
    for a, b in zip(grads(got, [h16, w16]), grads(expected, [h16, w16])):
        assert a.dtype == b.dtype == torch.bfloat16
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_every_target_ignored():
    hidden, weight, targets = make_inputs()
    targets.fill_(IGNORE_INDEX)
    with pytest.raises(ValueError, match="todos os alvos do lote são ignore_index"):
        chunked_cross_entropy(hidden, weight, targets)
    total = chunked_cross_entropy(hidden, weight, targets, reduction="sum")
    assert total.item() == 0.0
    grad_hidden, grad_weight = grads(total, [hidden, weight])
    assert grad_hidden.abs().max() == 0 and grad_weight.abs().max() == 0
    per_token = chunked_cross_entropy(hidden, weight, targets, reduction="none")
    assert per_token.shape == targets.shape and per_token.abs().max() == 0


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda h, w, t: (h, w, t[:, :3]), ValueError, "targets deve ter o formato"),
        (lambda h, w, t: (h, w[:, :5], t), ValueError, "mesmo C"),
        (lambda h, w, t: (h, w, t.float()), TypeError, "IDs inteiros"),
        (lambda h, w, t: (h.long(), w, t), TypeError, "ponto flutuante"),
        (lambda h, w, t: (h, w.tolist(), t), TypeError, "weight deve ser um tensor"),
        (lambda h, w, t: (h, w, t.clamp(max=V - 1).index_fill(1, torch.tensor([2]), V)), ValueError, "fora do vocab"),
        (lambda h, w, t: (h, w, t.index_fill(1, torch.tensor([0]), -7)), ValueError, "fora do vocab"),
    ],
)
def test_chunked_input_errors(change, error, match):
    hidden, weight, targets = make_inputs()
    with pytest.raises(error, match=match):
        chunked_cross_entropy(*change(hidden, weight, targets))


@pytest.mark.parametrize(("kwargs", "match"), [({"reduction": "avg"}, "reduction"), ({"chunk_size": 0}, "chunk_size")])
def test_chunked_option_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        chunked_cross_entropy(*make_inputs(), **kwargs)


# ----------------------------------------------------------------------------- lm_loss, com modelos
@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_lm_loss_equals_full_logits_on_gpt(tie, reduction):
    model = gpt(tie)
    x = torch.randint(0, V, (4, 8))
    y = torch.randint(0, V, (4, 8))
    y[0, :3] = IGNORE_INDEX
    assert supports_chunked_loss(model)
    got = lm_loss(model, x, y, reduction=reduction, chunk_size=5)
    got_grads = grads(got, list(model.parameters()))
    expected = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction=reduction)
    torch.testing.assert_close(got, expected)
    for a, b in zip(got_grads, grads(expected, list(model.parameters()))):  # com tie: embedding + cabeça somados
        torch.testing.assert_close(a, b)


def test_calc_loss_batch_equals_the_chapter_5_loss_by_hand():
    """O caminho em pedaços (o que calc_loss_batch usa num GPTModel) == a perda legível do cap. 5."""
    model = gpt(tie=True)
    x, y = torch.randint(0, V, (3, 8)), torch.randint(0, V, (3, 8))
    torch.testing.assert_close(calc_loss_batch(x, y, model, "cpu"), cross_entropy_by_hand(model(x), y))
    total = calc_loss_batch(x, y, model, "cpu", reduction="sum")
    torch.testing.assert_close(total, 24 * cross_entropy_by_hand(model(x), y))
    per_token = calc_loss_batch(x, y, model, "cpu", reduction="none")
    assert per_token.shape == (24,)


def test_lm_loss_on_llama_with_frozen_tied_head_and_lora():
    """Como no cap. 6: Llama com cabeça amarrada, tudo congelado menos a LoRA das projeções q e v."""
    torch.manual_seed(3)
    model = LlamaModel(LlamaConfig.preset("llama-mini", vocab_size=64))
    apply_lora(model, ("q_proj", "v_proj"), r=4, alpha=8)
    assert not model.output_weight.requires_grad and supports_chunked_loss(model)
    x, y = torch.randint(0, 64, (2, 10)), torch.randint(0, 64, (2, 10))
    y[:, :4] = IGNORE_INDEX
    trainable = [p for p in model.parameters() if p.requires_grad]
    got = lm_loss(model, x, y, chunk_size=3)
    expected = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
    torch.testing.assert_close(got, expected)
    for a, b in zip(grads(got, trainable), grads(expected, trainable)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("weight_trains", [True, False])
def test_per_token_logprobs_equal_dpo_sequence_logprobs(weight_trains):
    """O que a DPO soma: -lm_loss(reduction="none") por linha == sequence_logprobs dos logits inteiros."""
    model = gpt(tie=True)
    model.tok_emb.weight.requires_grad_(weight_trains)
    x, y = torch.randint(0, V, (4, 8)), torch.randint(0, V, (4, 8))
    y[:, :2] = IGNORE_INDEX
    y[3, 5:] = IGNORE_INDEX
    got = -lm_loss(model, x, y, reduction="none", chunk_size=3).sum(dim=-1)  # (B,)
    expected = sequence_logprobs(model(x), y)
    torch.testing.assert_close(got, expected)
    params = [p for p in model.parameters() if p.requires_grad]
    for a, b in zip(grads(got, params), grads(expected, params)):  # pesos diferentes por linha, como na DPO
        torch.testing.assert_close(a, b)


class _Confident(torch.nn.Module):
    """Um módulo qualquer (não CausalLM): aposta tudo no próprio token de entrada."""

    def forward(self, idx):
        return 40.0 * F.one_hot(idx, 3).float()


def test_lm_loss_keeps_the_full_logits_path_for_other_modules():
    model = _Confident()
    assert not supports_chunked_loss(model)
    x = torch.tensor([[0, 1, 2], [2, 1, 0]])
    y = torch.tensor([[0, 2, 2], [IGNORE_INDEX, 1, 0]])
    torch.testing.assert_close(lm_loss(model, x, y), F.cross_entropy(model(x).flatten(0, 1), y.flatten()))
    assert lm_loss(model, x, y, reduction="none").shape == (2, 3)
    with pytest.raises(ValueError, match="todos os alvos"):
        lm_loss(model, x, torch.full_like(y, IGNORE_INDEX))
    with pytest.raises(ValueError, match="reduction"):
        lm_loss(model, x, y, reduction="avg")


def test_models_whose_head_is_not_a_plain_matrix_use_the_full_logits():
    model = gpt(tie=False)
    apply_lora(model, ("out_head",), r=2, alpha=4)  # a correção da LoRA não está em out_head.weight
    assert not supports_chunked_loss(model)
    x, y = torch.randint(0, V, (2, 8)), torch.randint(0, V, (2, 8))
    torch.testing.assert_close(lm_loss(model, x, y), F.cross_entropy(model(x).flatten(0, 1), y.flatten()))

    class Scaled(GPTModel):
        def logits(self, hidden):
            return 2.0 * super().logits(hidden)

    class Capped(GPTModel):  # mexe nos logits dentro do forward, não em logits()
        def forward(self, idx, *args, **kwargs):
            return 3.0 * torch.tanh(super().forward(idx, *args, **kwargs) / 3.0)

    for cls in (Scaled, Capped):
        torch.manual_seed(0)
        other = cls(gpt(tie=True).cfg)
        assert not supports_chunked_loss(other)
        torch.testing.assert_close(lm_loss(other, x, y), F.cross_entropy(other(x).flatten(0, 1), y.flatten()))

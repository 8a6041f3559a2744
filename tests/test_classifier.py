"""Testes de companion/classifier.py (cap. 6): o classificador de golpes sobre o SmolLM2.

Os testes rápidos usam um ``LlamaModel`` minúsculo e um tokenizador de bytes; os marcados
``slow`` carregam o SmolLM2 de verdade (o comando de ponta a ponta e o artefato do livro).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.book.messages import MESSAGE_BATCHES
from companion.classifier import (
    CLASSIFY_QUESTION,
    INFO_FILE,
    LABELS,
    SPLITS,
    WEIGHTS_FILE,
    ClassifierConfig,
    SpamClassifier,
    accuracy,
    classifier_lr_factor,
    classify_texts,
    compute_prefix_features,
    confusion_matrix,
    encode_messages,
    last_token_pool,
    load_classifier,
    load_messages,
    pad_batch,
    pad_features,
    predict_from_features,
    round_trainable_,
    save_classifier,
    train_classifier,
    zero_shot_predict,
)
from companion.cli import main as cli_main
from companion.llama import LlamaConfig, LlamaModel

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 128


class ByteTokenizer:
    """Tokenizador de brinquedo: um ID por byte (módulo ``VOCAB``)."""

    def encode(self, text: str, disallowed_special=()) -> list[int]:
        return [b % VOCAB for b in text.encode("utf-8")]


def tiny_llama(n_layers: int = 3, seed: int = 0) -> LlamaModel:
    torch.manual_seed(seed)
    cfg = LlamaConfig.preset("llama-mini", vocab_size=VOCAB, n_layers=n_layers)
    return LlamaModel(cfg).eval()


def tiny_classifier(trainable_blocks: int = 1, seed: int = 0) -> SpamClassifier:
    llama = tiny_llama(seed=seed)
    torch.manual_seed(seed + 1)
    # ByteTokenizer não tem o molde de conversa: os modelos de brinquedo leem só o texto.
    return SpamClassifier(llama, trainable_blocks=trainable_blocks, prompt_format="texto")


# ----------------------------------------------------------------------------- configuração
@pytest.mark.parametrize(
    "field, value",
    [
        ("trainable_blocks", 0),
        ("max_length", -1),
        ("batch_size", 1.5),
        ("epochs", True),
        ("lr", 0),
        ("head_lr", float("nan")),
        ("weight_decay", -0.1),
        ("seed", -1),
        ("max_steps", 0),
        ("schedule", "linear"),
        ("warmup_fraction", 0.6),
        ("warmup_fraction", -0.1),
        ("keep_best", 1),
        ("prompt_format", "chat"),
    ],
)
def test_config_rejects_invalid_values(field, value):
    with pytest.raises(ValueError, match=field):
        ClassifierConfig(**{field: value})


def test_config_defaults_are_valid():
    cfg = ClassifierConfig()
    assert cfg.trainable_blocks == 1 and cfg.lr == 1e-4 and cfg.max_steps is None


# ----------------------------------------------------------------------------- os dados
def test_shipped_messages_splits_follow_the_batch_fractions_and_are_stratified():
    rows = load_messages()
    assert len(rows) > MESSAGE_BATCHES[-1].start  # o quinto lote existe
    # os lotes cobrem o arquivo inteiro, sem buraco nem sobreposição
    assert [b.start for b in MESSAGE_BATCHES[1:]] == [b.end for b in MESSAGE_BATCHES[:-1]]
    assert MESSAGE_BATCHES[0].start == 0 and MESSAGE_BATCHES[-1].end is None
    for b in MESSAGE_BATCHES:
        batch, f_train, f_val = b.rows(rows), b.train_fraction, b.val_fraction
        counts = Counter((r["divisao"], r["rotulo"]) for r in batch)
        for label in LABELS:
            n = sum(counts[(s, label)] for s in SPLITS)
            assert counts[("treino", label)] == round(f_train * n)
            assert counts[("validacao", label)] == round(f_val * n)
            assert counts[("teste", label)] == n - round(f_train * n) - round(f_val * n)
    # equilibrado no total
    totals = Counter(r["rotulo"] for r in rows)
    assert abs(totals["spam"] - totals["normal"]) <= 0.02 * len(rows)
    # os textos não se repetem entre divisões (nem dentro delas)
    assert len({r["texto"] for r in rows}) == len(rows)


def test_shipped_split_follows_the_documented_rule():
    """Refaz a divisão como o README descreve (por lote e por rótulo, semente fixa) e compara."""
    rows = load_messages()
    for b in MESSAGE_BATCHES:  # as linhas, sementes e frações que o README dos dados documenta
        batch, f_train, f_val = b.rows(rows), b.train_fraction, b.val_fraction
        rng = random.Random(b.seed)
        expected = {}
        for label in ("normal", "spam"):
            idx = [i for i, r in enumerate(batch) if r["rotulo"] == label]
            rng.shuffle(idx)
            n_train, n_val = round(f_train * len(idx)), round(f_val * len(idx))
            for j, i in enumerate(idx):
                expected[i] = "treino" if j < n_train else "validacao" if j < n_train + n_val else "teste"
        assert [r["divisao"] for r in batch] == [expected[i] for i in range(len(batch))]


def test_load_messages_filters_by_split():
    test = load_messages("teste")
    assert {r["divisao"] for r in test} == {"teste"}
    assert len(test) == sum(r["divisao"] == "teste" for r in load_messages()) > 114


def test_load_messages_rejects_unknown_split():
    with pytest.raises(ValueError, match="split deve ser um de"):
        load_messages("test")


@pytest.mark.parametrize(
    "line, message",
    [
        ("{não é json", "não é JSON válido"),
        ('{"texto": "oi", "rotulo": "spam"}', "chaves 'texto', 'rotulo' e 'divisao'"),
        ('{"texto": "oi", "rotulo": "golpe", "divisao": "treino"}', "'rotulo' deve ser um de"),
        ('{"texto": "oi", "rotulo": "spam", "divisao": "dev"}', "'divisao' deve ser um de"),
        ('{"texto": "  ", "rotulo": "spam", "divisao": "treino"}', "'texto' deve ser um texto não vazio"),
    ],
)
def test_load_messages_reports_the_bad_line(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    good = json.dumps({"texto": "tudo bem?", "rotulo": "normal", "divisao": "treino"}, ensure_ascii=False)
    path.write_text(good + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        load_messages(path=path)
    assert "linha 2" in str(info.value)


def test_load_messages_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="não encontrado"):
        load_messages(path=tmp_path / "nada.jsonl")


def test_encode_messages_truncates_and_keeps_the_beginning():
    ids = encode_messages(ByteTokenizer(), ["abcdef", "oi"], max_length=4, prompt_format="texto")
    assert ids == [[97, 98, 99, 100], [111, 105]]


def test_encode_messages_conversation_wraps_the_message_in_the_chat_template():
    from companion.chat import encode_chat
    from companion.pretrained import smollm2_tokenizer

    tok = smollm2_tokenizer()
    message = "Oi mãe, troquei de número <|im_end|>"
    (ids,) = encode_messages(tok, [message])  # "conversa" é o padrão
    question = CLASSIFY_QUESTION.format(texto=message)
    assert ids == encode_chat(tok, [{"role": "user", "content": question}])
    text = tok.decode(ids)
    assert text.endswith("<|im_start|>assistant\n")  # o último token é onde o modelo responderia
    assert text.count("<|im_end|>") == 3  # sistema, usuário e o digitado na mensagem (texto comum)
    assert ids.count(tok.encode_single_token("<|im_end|>")) == 2
    # uma mensagem longa é cortada nela mesma: o molde (e o seu fim) fica inteiro
    long_message = "palavra " * 300
    (cut,) = encode_messages(tok, [long_message], max_length=20)
    assert tok.decode(cut).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert len(cut) - len(ids) == 20 - len(tok.encode(message, disallowed_special=()))


@pytest.mark.parametrize(
    "texts, max_length, error, message",
    [
        ("uma frase só", 8, TypeError, "lista de textos"),
        (["ok", 3], 8, TypeError, r"texts\[1\]"),
        (["ok", "   "], 8, ValueError, r"texts\[1\] está vazia"),
        (["ok"], 0, ValueError, "max_length"),
    ],
)
def test_encode_messages_errors(texts, max_length, error, message):
    with pytest.raises(error, match=message):
        encode_messages(ByteTokenizer(), texts, max_length, prompt_format="texto")
    with pytest.raises(ValueError, match="prompt_format deve ser um de"):
        encode_messages(ByteTokenizer(), ["ok"], 8, prompt_format="chat")


def test_pad_batch_pads_right():
    idx, lengths = pad_batch([[5, 6, 7], [8]], pad_id=0)
    torch.testing.assert_close(idx, torch.tensor([[5, 6, 7], [8, 0, 0]]))
    torch.testing.assert_close(lengths, torch.tensor([3, 1]))


@pytest.mark.parametrize("sequences, message", [([], "lote está vazio"), ([[1], []], "sequência 1")])
def test_pad_batch_errors(sequences, message):
    with pytest.raises(ValueError, match=message):
        pad_batch(sequences)


# ----------------------------------------------------------------------------- o último token
@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=5), st.integers(0, 3))
def test_last_token_pool_matches_a_loop(lengths, extra):
    T = max(lengths) + extra
    hidden = torch.randn(len(lengths), T, 4)
    pooled = last_token_pool(hidden, torch.tensor(lengths))
    expected = torch.stack([hidden[b, n - 1] for b, n in enumerate(lengths)])
    torch.testing.assert_close(pooled, expected)


@pytest.mark.parametrize(
    "hidden_shape, lengths, message",
    [
        ((2, 3), [1, 1], r"\(B, T, C\)"),
        ((2, 3, 4), [1], "um comprimento por sequência"),
        ((2, 3, 4), [0, 2], r"\[1, 3\]"),
        ((2, 3, 4), [1, 4], r"\[1, 3\]"),
    ],
)
def test_last_token_pool_errors(hidden_shape, lengths, message):
    with pytest.raises(ValueError, match=message):
        last_token_pool(torch.zeros(hidden_shape), torch.tensor(lengths))


# ----------------------------------------------------------------------------- o modelo
def test_head_shapes_and_parameter_counts():
    model = tiny_classifier()
    idx, lengths = pad_batch([[1, 2, 3], [4, 5], [6]])
    logits = model(idx, lengths)
    assert logits.shape == (3, len(LABELS))
    cfg = model.cfg
    block = sum(p.numel() for p in model.llama.blocks[0].parameters())
    counts = model.parameter_counts()
    assert counts["treinaveis"] == block + cfg.emb_dim + (cfg.emb_dim * 2 + 2)
    assert counts["congelados"] == cfg.vocab_size * cfg.emb_dim + block * (cfg.n_layers - 1)


def test_classifier_matches_the_base_model_by_hand():
    """Antes do treino, as cópias são iguais aos originais: dá para refazer a conta com o LlamaModel."""
    model = tiny_classifier()
    llama = model.llama
    ids = [3, 9, 27, 81, 5]
    idx = torch.tensor([ids])
    from companion.llama import rope_angles

    cos, sin = rope_angles(llama.cfg.head_dim, torch.arange(len(ids)), llama.cfg.rope_base)
    x = llama.tok_emb(idx)
    for block in llama.blocks:
        x = block(x, cos, sin)
    expected = model.head(llama.final_norm(x[:, -1]))
    torch.testing.assert_close(model(idx), expected)


def test_right_padding_does_not_change_the_logits():
    model = tiny_classifier()
    seqs = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]]
    idx, lengths = pad_batch(seqs, pad_id=42)
    batched = model(idx, lengths)
    alone = torch.cat([model(torch.tensor([s])) for s in seqs])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_prefix_runs_without_grad_and_base_is_frozen():
    model = tiny_classifier()
    idx, _ = pad_batch([[1, 2, 3]])
    assert not model.prefix(idx).requires_grad
    assert all(not p.requires_grad for p in model.llama.parameters())
    assert all(p.requires_grad for p in model.trainable_parameters())
    assert model.n_frozen_blocks == model.cfg.n_layers - 1


def test_one_step_changes_only_the_trainable_parameters():
    model = tiny_classifier()
    before_base = {k: v.clone() for k, v in model.llama.state_dict().items()}
    before_top = {k: v.clone() for k, v in model.trainable_module().state_dict().items()}
    idx, lengths = pad_batch([[1, 2, 3], [4, 5, 6, 7], [8, 9]])
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    loss = F.cross_entropy(model(idx, lengths), torch.tensor([0, 1, 1]))
    loss.backward()
    assert model.llama.tok_emb.weight.grad is None  # o embedding (e a cabeça amarrada) não recebem gradiente
    assert all(p.grad is None for p in model.llama.parameters())
    optimizer.step()
    for name, tensor in model.llama.state_dict().items():
        torch.testing.assert_close(tensor, before_base[name], rtol=0, atol=0)
    changed = [n for n, t in model.trainable_module().state_dict().items() if not torch.equal(t, before_top[n])]
    assert "head.weight" in changed and "blocks.0.attn.q_proj.weight" in changed and "final_norm.weight" in changed


def test_two_trainable_blocks():
    model = tiny_classifier(trainable_blocks=2)
    assert len(model.blocks) == 2 and model.n_frozen_blocks == 1
    assert model(torch.tensor([[1, 2]])).shape == (1, 2)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"trainable_blocks": 0}, ValueError, "trainable_blocks"),
        ({"trainable_blocks": 4}, ValueError, r"trainable_blocks deve ser um inteiro em \[1, 3\]"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"prompt_format": "chat"}, ValueError, "prompt_format"),
    ],
)
def test_classifier_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        SpamClassifier(tiny_llama(), **kwargs)


def test_classifier_rejects_other_models():
    with pytest.raises(TypeError, match="LlamaModel"):
        SpamClassifier(torch.nn.Linear(2, 2))


def test_cached_prefix_gives_the_same_logits():
    model = tiny_classifier()
    seqs = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    features = compute_prefix_features(model, seqs, batch_size=2)
    assert [f.shape[0] for f in features] == [5, 2, 3]
    idx, lengths = pad_batch(seqs)
    torch.testing.assert_close(predict_from_features(model, features), model(idx, lengths), atol=1e-5, rtol=1e-5)
    x, lens = pad_features(features)
    assert x.shape == (3, 5, model.cfg.emb_dim) and lens.tolist() == [5, 2, 3]


# ----------------------------------------------------------------------------- métricas
def test_accuracy_and_confusion_matrix_by_hand():
    preds = [0, 1, 1, 0, 1, 1]
    labels = [0, 1, 0, 1, 1, 1]
    assert accuracy(preds, labels) == pytest.approx(4 / 6)
    # linha = verdade, coluna = previsão: 1 normal certo, 1 normal marcado como spam,
    # 1 spam que passou como normal, 3 spams pegos
    assert confusion_matrix(preds, labels).tolist() == [[1, 1], [1, 3]]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=30))
def test_confusion_matrix_counts_every_pair(pairs):
    preds, labels = zip(*pairs)
    cm = confusion_matrix(list(preds), list(labels), num_classes=3)
    assert int(cm.sum()) == len(pairs)
    for (p, y), n in Counter(pairs).items():
        assert int(cm[y, p]) == n
    assert accuracy(list(preds), list(labels)) == pytest.approx(float(cm.trace()) / len(pairs))


@pytest.mark.parametrize(
    "preds, labels, message",
    [([0, 1], [0], "mesmo tamanho"), ([], [], "vazia")],
)
def test_accuracy_errors(preds, labels, message):
    with pytest.raises(ValueError, match=message):
        accuracy(preds, labels)


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix([0, 2], [0, 1])
    with pytest.raises(ValueError, match="mesmo tamanho"):
        confusion_matrix([0], [0, 1])


# ----------------------------------------------------------------------------- treino
def toy_data(model, n=32):
    """Mensagens de brinquedo separáveis: as 'spam' terminam no token 100, as normais no 5."""
    gen = torch.Generator().manual_seed(7)
    seqs, labels = [], []
    for i in range(n):
        body = torch.randint(10, 90, (int(torch.randint(2, 7, (1,), generator=gen)),), generator=gen).tolist()
        label = i % 2
        seqs.append(body + [100 if label else 5])
        labels.append(label)
    return compute_prefix_features(model, seqs), torch.tensor(labels)


def test_training_learns_a_separable_toy_task_and_is_reproducible():
    cfg = ClassifierConfig(batch_size=8, epochs=6, lr=1e-3, head_lr=1e-2, seed=3)
    histories, accs = [], []
    for _ in range(2):
        model = tiny_classifier()
        features, labels = toy_data(model)
        before = accuracy(predict_from_features(model, features).argmax(-1), labels)
        history = train_classifier(model, features, labels, cfg, features, labels)
        histories.append(history)
        accs.append(history["val_accuracy"][-1])
    assert accs[0] == 1.0 and before < 1.0
    assert histories[0]["loss"] == histories[1]["loss"]  # mesma semente, mesmo treino
    assert len(histories[0]["loss"]) == 6 * 4 and histories[0]["epoch"] == [1, 2, 3, 4, 5, 6]
    assert sum(histories[0]["loss"][-4:]) < sum(histories[0]["loss"][:4])


def test_lr_factor_warms_up_then_decays_to_a_tenth():
    cfg = ClassifierConfig(warmup_fraction=0.1)
    factors = [classifier_lr_factor(step, 50, cfg) for step in range(50)]
    # 5 passos de aquecimento: 1/5, 2/5, ..., 1; depois o cosseno de 1 a 0,1 no último passo
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[5] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    middle = 5 + (49 - 5) // 2  # metade do cosseno: 0,1 + 0,9 * 0,5
    assert factors[middle] == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(factors[5:], factors[6:]))  # só desce depois do aquecimento
    constant = ClassifierConfig(schedule="constant")
    assert {classifier_lr_factor(step, 50, constant) for step in range(50)} == {1.0}
    assert classifier_lr_factor(0, 50, ClassifierConfig(warmup_fraction=0.0)) == 1.0


def test_training_applies_the_schedule():
    model = tiny_classifier()
    features, labels = toy_data(model)
    cfg = ClassifierConfig(batch_size=8, epochs=2, lr=1e-3, warmup_fraction=0.25)
    history = train_classifier(model, features, labels, cfg)
    assert history["lr"] == pytest.approx([1e-3 * classifier_lr_factor(s, 8, cfg) for s in range(8)])


def test_keep_best_restores_the_best_validation_epoch():
    """Com uma taxa alta demais o treino oscila; keep_best devolve os pesos da melhor época."""
    cfg = ClassifierConfig(batch_size=8, epochs=6, lr=3e-2, head_lr=3e-1, seed=3, schedule="constant")
    model = tiny_classifier()
    features, labels = toy_data(model)
    val_features, val_labels = features[:16], labels[:16]
    history = train_classifier(model, features, labels, cfg, val_features, val_labels)
    best = history["best_epoch"]
    scores = list(zip(history["val_accuracy"], [-v for v in history["val_loss"]]))
    assert best == 1 + scores.index(max(scores))
    assert best < 6  # a última época não é a melhor: o teste de fato exercita a volta
    # o modelo final mede exatamente o que a melhor época mediu
    logits = predict_from_features(model, val_features)
    assert accuracy(logits.argmax(-1), val_labels) == history["val_accuracy"][best - 1]
    assert F.cross_entropy(logits, val_labels).item() == pytest.approx(history["val_loss"][best - 1], abs=1e-6)
    # sem keep_best, o mesmo treino termina na última época
    last = tiny_classifier()
    other = train_classifier(last, features, labels, replace(cfg, keep_best=False), val_features, val_labels)
    assert other["best_epoch"] is None and other["loss"] == history["loss"]
    last_loss = F.cross_entropy(predict_from_features(last, val_features), val_labels).item()
    assert last_loss == pytest.approx(history["val_loss"][-1], abs=1e-6)


def test_max_steps_stops_early():
    model = tiny_classifier()
    features, labels = toy_data(model)
    history = train_classifier(model, features, labels, ClassifierConfig(batch_size=8, epochs=3, max_steps=5))
    assert history["step"] == [1, 2, 3, 4, 5] and history["val_accuracy"] == []


def test_train_classifier_errors():
    model = tiny_classifier()
    features, labels = toy_data(model, n=4)
    with pytest.raises(ValueError, match="mesmo tamanho"):
        train_classifier(model, features, labels[:3], ClassifierConfig())
    with pytest.raises(ValueError, match="juntos"):
        train_classifier(model, features, labels, ClassifierConfig(), val_features=features)


# ----------------------------------------------------------------------------- gravar e carregar
def test_save_and_load_roundtrip(tmp_path):
    model = tiny_classifier()
    round_trainable_(model)  # as métricas do artefato são as dos pesos em bf16
    texts = ["oi mãe, troquei de número", "reunião às 15h"]
    expected_labels, expected_probs = classify_texts(model, ByteTokenizer(), texts)
    cfg = ClassifierConfig(epochs=1, prompt_format="texto")
    save_classifier(tmp_path / "clf", model, cfg, {"teste": {"accuracy": 0.5}})
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == sorted([WEIGHTS_FILE, INFO_FILE])
    info = json.loads((tmp_path / "clf" / INFO_FILE).read_text(encoding="utf-8"))
    assert info["config"]["epochs"] == 1 and info["weights_dtype"] == "bfloat16"

    loaded, tok, info = load_classifier(tmp_path / "clf", tiny_llama(), ByteTokenizer())
    labels, probs = classify_texts(loaded, tok, texts)
    assert labels == expected_labels and set(labels) <= set(LABELS)
    torch.testing.assert_close(probs, expected_probs)
    assert info["metrics"]["teste"]["accuracy"] == 0.5
    assert loaded.prompt_format == "texto"


def test_load_classifier_keeps_the_prompt_format(tmp_path):
    model = tiny_classifier()
    save_classifier(tmp_path / "clf", model, ClassifierConfig(prompt_format="conversa"))
    loaded, _, info = load_classifier(tmp_path / "clf", tiny_llama(), ByteTokenizer())
    assert loaded.prompt_format == info["config"]["prompt_format"] == "conversa"


def test_bf16_file_is_half_of_float32(tmp_path):
    model = tiny_classifier()
    save_classifier(tmp_path / "bf16", model, ClassifierConfig())
    save_classifier(tmp_path / "fp32", model, ClassifierConfig(), weights_dtype=torch.float32)
    small = (tmp_path / "bf16" / WEIGHTS_FILE).stat().st_size
    big = (tmp_path / "fp32" / WEIGHTS_FILE).stat().st_size
    assert 0.45 < small / big < 0.55
    with pytest.raises(TypeError, match="weights_dtype"):
        save_classifier(tmp_path / "x", model, ClassifierConfig(), weights_dtype=torch.float16)


def test_load_classifier_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="finetune classify"):
        load_classifier(tmp_path / "nada")
    (tmp_path / "vazia").mkdir()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_classifier(tmp_path / "vazia")
    model = tiny_classifier()
    save_classifier(tmp_path / "clf", model, ClassifierConfig())
    with pytest.raises(ValueError, match="tokenizador"):
        load_classifier(tmp_path / "clf", tiny_llama())
    (tmp_path / "clf" / INFO_FILE).write_text('{"format": "outro"}', encoding="utf-8")
    with pytest.raises(ValueError, match="save_classifier"):
        load_classifier(tmp_path / "clf", tiny_llama(), ByteTokenizer())
    (tmp_path / "clf" / INFO_FILE).write_text("{quebrado", encoding="utf-8")
    with pytest.raises(ValueError, match="JSON"):
        load_classifier(tmp_path / "clf", tiny_llama(), ByteTokenizer())


def test_load_classifier_rejects_another_configuration(tmp_path):
    model = tiny_classifier(trainable_blocks=2)
    save_classifier(tmp_path / "clf", model, ClassifierConfig(trainable_blocks=2))
    info = json.loads((tmp_path / "clf" / INFO_FILE).read_text(encoding="utf-8"))
    info["config"]["trainable_blocks"] = 1
    (tmp_path / "clf" / INFO_FILE).write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(ValueError, match="tensores que o modelo não tem"):
        load_classifier(tmp_path / "clf", tiny_llama(), ByteTokenizer())


# ----------------------------------------------------------------------------- a linha de base sem ajuste
def test_zero_shot_errors():
    with pytest.raises(ValueError, match=r"\{texto\}"):
        zero_shot_predict(tiny_llama(), ByteTokenizer(), ["oi"], prompt="sem lugar")
    with pytest.raises(ValueError, match="mesmo token"):
        zero_shot_predict(tiny_llama(), ByteTokenizer(), ["oi"], answers=("Sim", "Sei"))
    with pytest.raises(ValueError, match="uma resposta por classe"):
        zero_shot_predict(tiny_llama(), ByteTokenizer(), ["oi"], answers=("Sim",))


# ----------------------------------------------------------------------------- o widget
def test_classifier_widget_static_render():
    from companion.book.widgets import classifier_explorer, classifier_html

    model = tiny_classifier()
    page = classifier_html(model, ByteTokenizer(), "Pix <urgente> & grátis")
    assert "&lt;urgente&gt;" in page and "%" in page
    assert any(f"<b style=\"color:{c}\">{label}</b>" in page for c, label in (("#D55E00", "spam"), ("#009E73", "normal")))
    assert "Digite uma mensagem" in classifier_html(model, ByteTokenizer(), "   ")
    with pytest.raises(TypeError, match="text"):
        classifier_html(model, ByteTokenizer(), None)
    box = classifier_explorer(model, ByteTokenizer(), text="oi")
    textarea, panel = box.children
    assert "oi" in panel.value
    textarea.value = "outra mensagem"
    assert "outra mensagem" in panel.value


# ----------------------------------------------------------------------------- linha de comando
def run_cli(capsys, *argv):
    code = cli_main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_classify_cli_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "classify", "--model", str(tmp_path / "nada"), "oi")
    assert code == 1 and "a pasta do classificador não existe" in err
    code, _, err = run_cli(capsys, "classify", "--model", str(tmp_path))
    assert code == 1 and "passe as mensagens" in err
    code, _, err = run_cli(capsys, "classify", "--model", str(tmp_path), "oi", "--file", "x.txt")
    assert code == 1 and "não os dois" in err
    code, _, err = run_cli(capsys, "classify", "--model", str(tmp_path), "--file", str(tmp_path / "x.txt"))
    assert code == 1 and "arquivo não encontrado" in err
    (tmp_path / "vazio.txt").write_text("\n\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "classify", "--model", str(tmp_path), "--file", str(tmp_path / "vazio.txt"))
    assert code == 1 and "nenhuma mensagem" in err
    code, _, err = run_cli(capsys, "classify", "--model", str(tmp_path), "oi", " ")
    assert code == 1 and "mensagem vazia" in err


def finetune(*args: str) -> int:
    """``python -m companion finetune classify ARGS`` (no mesmo processo)."""
    return cli_main(["finetune", "classify", *args])


def test_finetune_cli_errors(capsys, tmp_path):
    assert finetune("--out", str(tmp_path / "o"), "--epochs", "0") == 1
    assert "epochs deve ser um inteiro >= 1" in capsys.readouterr().err
    assert finetune("--out", str(tmp_path / "o"), "--limit", "0") == 1
    assert "--limit deve ser um inteiro >= 1" in capsys.readouterr().err
    (tmp_path / "arquivo").write_text("x", encoding="utf-8")
    assert finetune("--out", str(tmp_path / "arquivo")) == 1
    assert "não é uma pasta" in capsys.readouterr().err
    only_train = tmp_path / "so_treino.jsonl"
    only_train.write_text(json.dumps({"texto": "oi", "rotulo": "normal", "divisao": "treino"}) + "\n", encoding="utf-8")
    assert finetune("--out", str(tmp_path / "o"), "--data", str(only_train)) == 1
    assert "divisao='teste'" in capsys.readouterr().err
    no_val = tmp_path / "sem_validacao.jsonl"
    no_val.write_text(
        "".join(json.dumps({"texto": f"oi {i}", "rotulo": "normal", "divisao": d}) + "\n" for i, d in enumerate(("treino", "teste"))),
        encoding="utf-8",
    )
    assert finetune("--out", str(tmp_path / "o"), "--data", str(no_val), "--train-on-validation") == 1
    assert "--train-on-validation pede mensagens com divisao='validacao'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # falhou antes de gravar qualquer coisa


@pytest.mark.slow
def test_finetune_and_classify_end_to_end(tmp_path):
    """O comando de treino num recorte pequeno e o comando classify lendo a pasta gravada."""
    out = tmp_path / "clf"
    assert finetune("--model", "smollm2", "--out", str(out), "--limit", "8", "--epochs", "2", "--no-progress", "--threads", "1") == 0
    info = json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
    assert info["metrics"]["treino"]["n"] == 8 and info["metrics"]["teste"]["n"] == 8
    assert info["config"]["prompt_format"] == "conversa"  # o padrão: a mensagem no molde de conversa
    assert sum(map(sum, info["metrics"]["teste"]["confusion_matrix"])) == 8
    assert 6e6 < (out / WEIGHTS_FILE).stat().st_size < 8e6  # um bloco do SmolLM2 em bf16

    messages = tmp_path / "msgs.txt"
    messages.write_text("reunião amanhã às 9h\n\nganhe um iphone! clique aqui\n", encoding="utf-8")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    result = subprocess.run(
        [sys.executable, "-m", "companion", "classify", "--model", str(out), "--file", str(messages), "--threads", "1"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and set(lines) <= set(LABELS)


@pytest.mark.slow
def test_finetune_on_train_plus_validation(tmp_path, capsys):
    """O reajuste final treina com treino + validação e não finge ter medido a validação."""
    out = tmp_path / "reajuste"
    assert finetune("--model", "smollm2", "--out", str(out), "--limit", "4", "--epochs", "2", "--batch-size", "4", "--no-progress",
                    "--threads", "1", "--train-on-validation") == 0
    printed = capsys.readouterr().out
    assert "treino + validação (8 mensagens)" in printed and "época 2: perda média" in printed
    info = json.loads((out / INFO_FILE).read_text(encoding="utf-8"))
    metrics = info["metrics"]
    assert metrics["train_splits"] == ["treino", "validacao"]
    assert metrics["treino"]["n"] == 8 and metrics["teste"]["n"] == 4
    assert "validacao" not in metrics  # a validação virou treino: não há acurácia de validação a relatar
    assert metrics["history"]["best_epoch"] is None  # sem validação, ficam os pesos da última época
    assert len(metrics["history"]["step_loss"]) == 2 * 2  # 8 mensagens em lotes de 4, 2 épocas


@pytest.mark.slow
def test_zero_shot_batched_matches_the_full_model():
    """A linha de base em lotes (só 2 linhas da cabeça) decide igual ao modelo inteiro, um por um."""
    from companion.chat import encode_chat
    from companion.classifier import ZERO_SHOT_ANSWERS, ZERO_SHOT_PROMPT
    from companion.pretrained import load_smollm2

    llama, tok = load_smollm2()
    texts = ["oi, chego às 8", "Parabéns! Você ganhou R$ 1.000, clique no link", "mãe, troquei de número, me manda um pix"]
    batched = zero_shot_predict(llama, tok, texts, batch_size=2)
    answer_ids = [tok.encode(a)[0] for a in ZERO_SHOT_ANSWERS]
    with torch.no_grad():
        naive = []
        for text in texts:
            ids = encode_chat(tok, [{"role": "user", "content": ZERO_SHOT_PROMPT.format(texto=text)}])
            naive.append(int(llama(torch.tensor([ids]), last_only=True)[0, -1, answer_ids].argmax()))
    assert batched == naive

"""Testes de companion.train (a avaliação, a taxa de aprendizado e o laço) e de companion.loss (a perda)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.data import GPTDataset
from companion.loss import (
    calc_loss_batch,
    calc_loss_loader,
    cross_entropy_by_hand,
    perplexity,
)
from companion.model import GPTConfig, GPTModel
from companion.train import (
    TrainConfig,
    batch_indices,
    evaluate,
    lr_at,
    make_optimizer,
    train,
)

V = 50


def tiny_model(seed: int = 0, drop_rate: float = 0.0) -> GPTModel:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=V, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=drop_rate)
    return GPTModel(cfg)


def tiny_data(n_tokens: int = 400, seed: int = 0) -> GPTDataset:
    # Um texto com estrutura: cada token é o anterior + 1 (mod V), com um pouco de ruído.
    g = torch.Generator().manual_seed(seed)
    ids = (torch.arange(n_tokens) + (torch.rand(n_tokens, generator=g) < 0.1).long()) % V
    return GPTDataset(ids, max_length=8)


# ----------------------------------------------------------------------------- a perda
@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 5), vocab=st.integers(2, 30), seed=st.integers(0, 1000))
def test_cross_entropy_by_hand_matches_torch(B, T, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, vocab, generator=g) * 5
    targets = torch.randint(0, vocab, (B, T), generator=g)
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(cross_entropy_by_hand(logits, targets), expected)


def test_cross_entropy_by_hand_is_stable_for_huge_logits():
    logits = torch.tensor([[1000.0, 0.0, -1000.0]])
    assert cross_entropy_by_hand(logits, torch.tensor([0])).item() == pytest.approx(0.0, abs=1e-6)
    assert cross_entropy_by_hand(logits, torch.tensor([1])).item() == pytest.approx(1000.0)


def test_cross_entropy_by_hand_shape_error():
    with pytest.raises(ValueError, match="logits deve ter formato"):
        cross_entropy_by_hand(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_uniform_model_has_perplexity_equal_to_vocabulary():
    # Logits iguais = distribuição uniforme: perda log V, perplexidade V (por definição).
    logits = torch.zeros(4, 7, 123)
    loss = cross_entropy_by_hand(logits, torch.randint(0, 123, (4, 7)))
    assert loss.item() == pytest.approx(math.log(123))
    assert perplexity(loss) == pytest.approx(123.0, rel=1e-5)


def test_perplexity_nan():
    with pytest.raises(ValueError, match="NaN"):
        perplexity(float("nan"))


def test_calc_loss_batch_and_loader():
    model = tiny_model().eval()
    data = tiny_data()
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=False)
    x, y = next(iter(loader))
    loss = calc_loss_batch(x, y, model, "cpu")
    torch.testing.assert_close(loss, F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1)))
    batches = list(loader)
    expected = sum(calc_loss_batch(a, b, model, "cpu").item() for a, b in batches[:3]) / 3  # lotes cheios
    assert calc_loss_loader(loader, model, "cpu", num_batches=3) == pytest.approx(expected)
    total = sum(calc_loss_batch(a, b, model, "cpu", reduction="sum").item() for a, b in batches)
    assert calc_loss_loader(loader, model, "cpu") == pytest.approx(total / sum(b.numel() for _, b in batches))


class _Confident(torch.nn.Module):
    """Aposta tudo (logit 40) no próprio token de entrada: perda ~0 se o alvo é ele, ~40 se não."""

    def forward(self, idx):
        return 40.0 * F.one_hot(idx, 2).float()


def test_loader_mean_is_over_tokens_not_batches():
    """8 janelas de perda 0 e 2 de perda 40, lotes de 8: a média por token é 8, não (0 + 40) / 2 = 20."""
    x = torch.zeros(10, 4, dtype=torch.long)
    y = torch.zeros(10, 4, dtype=torch.long)
    y[8:] = 1  # as duas últimas janelas erram todos os tokens
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    assert calc_loss_loader(loader, _Confident(), "cpu") == pytest.approx(8.0, abs=1e-6)


def test_calc_loss_loader_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="nenhum lote"):
        calc_loss_loader([], model, "cpu")
    with pytest.raises(ValueError, match="num_batches"):
        calc_loss_loader([], model, "cpu", num_batches=0)


def test_evaluate_uses_eval_mode_and_restores_it():
    model = tiny_model(drop_rate=0.5)
    data = tiny_data()
    model.train()
    first = evaluate(model, data, batch_size=4, max_batches=2)
    second = evaluate(model, data, batch_size=4, max_batches=2)
    assert first == second  # sem dropout: sempre o mesmo número
    assert model.training
    # E é a média das perdas das janelas escolhidas, calculada com o modelo em eval.
    model.eval()
    idx = torch.linspace(0, len(data) - 1, 8).round().long().tolist()
    pairs = [data[i] for i in idx]
    x, y = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    manual = (calc_loss_batch(x[:4], y[:4], model, "cpu") + calc_loss_batch(x[4:], y[4:], model, "cpu")) / 2
    assert first == pytest.approx(manual.item(), rel=1e-6)


# ----------------------------------------------------------------------------- configuração e taxa
@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("steps", 0, "steps deve ser um inteiro >= 1"),
        ("batch_size", 1.5, "batch_size"),
        ("lr", -1.0, "lr deve ser um número > 0"),
        ("min_lr", 1.0, r"min_lr deve ser um número em \[0, 0.001\]"),
        ("warmup_steps", -1, "warmup_steps"),
        ("grad_clip", 0.0, "grad_clip"),
        ("weight_decay", -0.1, "weight_decay"),
        ("grad_accum_steps", 0, "grad_accum_steps"),
        ("precision", "bf17", "precision"),
        ("precision", "auto", "precision"),
        ("decay_steps", 0, "decay_steps"),
        ("seed", True, "seed"),
    ],
)
def test_train_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_train_config_defaults():
    cfg = TrainConfig(steps=40, lr=2e-3)
    assert cfg.min_lr == pytest.approx(2e-4) and cfg.decay_steps == 40


def test_lr_schedule_shape():
    cfg = TrainConfig(steps=100, lr=1e-3, min_lr=1e-4, warmup_steps=10)
    lrs = [lr_at(s, cfg) for s in range(120)]
    assert lrs[0] == pytest.approx(1e-4)  # 1/10 do caminho
    assert lrs[9] == pytest.approx(1e-3)  # fim do aquecimento: o pico
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))  # sobe
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:101]))  # desce
    assert lr_at(55, cfg) == pytest.approx((1e-3 + 1e-4) / 2)  # metade do cosseno: a média
    assert lrs[100] == pytest.approx(1e-4) and lrs[119] == pytest.approx(1e-4)  # depois, fica no mínimo


def test_make_optimizer_groups():
    model = tiny_model()
    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.2))
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    n_opt = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in model.parameters())  # o peso amarrado entra uma vez


# ----------------------------------------------------------------------------- os lotes
def test_batch_indices_epochs_cover_windows_without_repeating():
    n, b = 23, 5
    per_epoch = n // b
    epoch0 = torch.cat([batch_indices(n, b, 7, c) for c in range(per_epoch)])
    assert len(set(epoch0.tolist())) == per_epoch * b  # sem repetição dentro da época
    epoch1 = torch.cat([batch_indices(n, b, 7, c) for c in range(per_epoch, 2 * per_epoch)])
    assert not torch.equal(epoch0, epoch1)  # cada época é uma nova permutação
    assert torch.equal(batch_indices(n, b, 7, 6), batch_indices(n, b, 7, 6))  # função pura
    assert not torch.equal(batch_indices(n, b, 7, 0), batch_indices(n, b, 8, 0))


def test_batch_indices_too_big():
    with pytest.raises(ValueError, match="maior que o número de janelas"):
        batch_indices(3, 4, 0, 0)


# ----------------------------------------------------------------------------- o laço
def test_train_learns_and_records_history():
    model = tiny_model()
    data = tiny_data()
    cfg = TrainConfig(steps=60, batch_size=8, lr=1e-2, warmup_steps=5, eval_interval=20, eval_batches=4)
    history = train(model, data, data, cfg, progress=False, verbose=False)
    assert history["step"] == [0, 20, 40, 60]
    assert len(history["step_loss"]) == len(history["lr"]) == len(history["grad_norm"]) == 60
    assert history["val_loss"][-1] < history["val_loss"][0] - 1.0  # aprendeu a sequência
    assert history["val_loss"][0] == pytest.approx(math.log(V), abs=0.3)  # começa perto do chute uniforme
    assert history["tokens_seen"][1] == 20 * 8 * 8
    assert history["lr"] == [lr_at(s, cfg) for s in range(60)]


def test_train_preserves_caller_rng_and_is_reproducible():
    results = []
    for _ in range(2):
        model = tiny_model(drop_rate=0.1)
        torch.manual_seed(42)
        history = train(model, tiny_data(), None, TrainConfig(steps=5, eval_interval=5, eval_batches=1),
                        progress=False, verbose=False)
        results.append((history["step_loss"], torch.rand(3)))
    assert results[0][0] == results[1][0]
    torch.manual_seed(42)
    assert torch.equal(results[0][1], torch.rand(3))  # o treino não mexeu no RNG do chamador


def test_grad_accumulation_equals_bigger_batch():
    # 2 micro-lotes de 4 = 1 lote de 8: são as mesmas janelas (o fluxo de lotes é o mesmo).
    big, small = tiny_model(), tiny_model()
    data = tiny_data()
    common = {"steps": 4, "lr": 1e-2, "eval_interval": 4, "eval_batches": 1, "grad_clip": None}
    train(big, data, None, TrainConfig(batch_size=8, **common), progress=False, verbose=False)
    train(small, data, None, TrainConfig(batch_size=4, grad_accum_steps=2, **common), progress=False, verbose=False)
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_grad_clip_records_norm_before_clipping_and_clips():
    data = tiny_data()
    clipped = tiny_model()
    h = train(clipped, data, None, TrainConfig(steps=1, lr=1.0, warmup_steps=0, grad_clip=1e-3, eval_batches=1),
              progress=False, verbose=False)
    assert h["grad_norm"][0] > 1e-3  # a norma registrada é a de antes do corte
    # Os gradientes que ficaram nos parâmetros (os do último passo) foram cortados.
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in clipped.parameters()]))
    assert after.item() == pytest.approx(1e-3, rel=1e-3)


def test_train_bf16_runs():
    model = tiny_model()
    h = train(model, tiny_data(), None, TrainConfig(steps=3, precision="bf16", eval_interval=3, eval_batches=1),
              progress=False, verbose=False)
    assert all(math.isfinite(x) for x in h["step_loss"])


def test_train_argument_errors():
    model, data = tiny_model(), tiny_data()
    with pytest.raises(TypeError, match="TrainConfig"):
        train(model, data, None, {"steps": 3})
    with pytest.raises(ValueError, match="start_step"):
        train(model, data, None, TrainConfig(steps=3), start_step=5)
    with pytest.raises(ValueError, match="maior que o número de janelas"):
        train(model, tiny_data(40), None, TrainConfig(steps=3, batch_size=64))


# ----------------------------------------------------------------------------- figura e widget do cap. 5
def test_plot_losses_and_lr_schedule():
    import matplotlib

    matplotlib.use("Agg")
    from companion.book.plots import plot_losses, plot_lr_schedule

    history = {"step": [0, 10], "train_loss": [4.0, 3.0], "val_loss": [4.1, 3.5], "tokens_seen": [0, 640],
               "step_loss": [4.0 - 0.1 * i for i in range(10)]}
    ax = plot_losses(history)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["perda de cada passo (treino)", "treino", "validação"]
    assert list(ax.get_lines()[2].get_ydata()) == [4.1, 3.5]
    cfg = TrainConfig(steps=30, warmup_steps=5)
    ax = plot_lr_schedule(cfg)
    assert list(ax.get_lines()[0].get_ydata()) == [lr_at(s, cfg) for s in range(30)]
    with pytest.raises(ValueError, match="não tem a chave 'val_loss'"):
        plot_losses({"step": [0], "train_loss": [1.0]})
    with pytest.raises(ValueError, match="vazio"):
        plot_losses({"step": [], "train_loss": [], "val_loss": []})


class _CharTokenizer:
    """Tokenizador de brinquedo: um token por letra minúscula (IDs 0..25)."""

    def encode(self, text):
        return [ord(c) - 97 for c in text]

    def decode(self, ids):
        return "".join(chr(i % 26 + 97) for i in ids)


def test_decoding_html_and_explorer():
    from companion.book.widgets import decoding_explorer, decoding_html

    model = tiny_model()
    greedy = decoding_html(model, _CharTokenizer(), "abc", temperature=0.0, max_new_tokens=5, n_samples=3)
    assert "temperatura 0 · top-k desligado · top-p desligado" in greedy
    # Com temperatura 0 as três amostras são iguais; com temperatura alta, em geral não.
    samples = [part.split("</span></div>")[0] for part in greedy.split('background:#CFE8FC">')[1:]]
    assert len(samples) == 3 and len(set(samples)) == 1
    hot = decoding_html(model, _CharTokenizer(), "abc", temperature=2.0, max_new_tokens=8, n_samples=3)
    hot_samples = [part.split("</span></div>")[0] for part in hot.split('background:#CFE8FC">')[1:]]
    assert len(set(hot_samples)) > 1
    assert hot == decoding_html(model, _CharTokenizer(), "abc", temperature=2.0, max_new_tokens=8, n_samples=3)
    with pytest.raises(ValueError, match="prompt deve ser"):
        decoding_html(model, _CharTokenizer(), "")
    with pytest.raises(ValueError, match="n_samples"):
        decoding_html(model, _CharTokenizer(), "abc", n_samples=0)
    with pytest.raises(ValueError, match="top_p"):
        decoding_html(model, _CharTokenizer(), "abc", top_p=1.5)
    box = decoding_explorer(model, _CharTokenizer(), "abc", max_new_tokens=4)
    temperature, _, _, panel = box.children
    temperature.value = 0.0
    assert "temperatura 0 ·" in panel.value

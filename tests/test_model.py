"""Testes de companion/model.py (cap. 4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from companion.model import (
    GELU,
    DummyGPTModel,
    FeedForward,
    GPTConfig,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    count_parameters,
    memory_bytes,
    parameter_breakdown,
)


def tiny_cfg(**kw) -> GPTConfig:
    base = dict(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)
    return GPTConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- GPTConfig
def test_config_defaults_are_gpt2_small_shape():
    cfg = GPTConfig()
    assert (cfg.vocab_size, cfg.context_length, cfg.emb_dim, cfg.n_heads, cfg.n_layers) == (50257, 1024, 768, 12, 12)
    assert cfg.head_dim == 64


@pytest.mark.parametrize(
    "field, value",
    [
        ("vocab_size", 0),
        ("context_length", -1),
        ("emb_dim", "64"),
        ("n_heads", True),
        ("n_layers", 0),
        ("n_layers", 2.0),
        ("drop_rate", 1.0),
        ("drop_rate", -0.1),
        ("drop_rate", "0.1"),
        ("qkv_bias", 1),
        ("tie_weights", None),
    ],
)
def test_config_rejects_invalid_values(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_cfg(**{field: value})


def test_config_emb_dim_must_divide_heads():
    with pytest.raises(ValueError, match="divisível"):
        tiny_cfg(emb_dim=30, n_heads=4)


def test_preset_unknown_lists_valid_names():
    with pytest.raises(ValueError, match="gpt2-small") as info:
        GPTConfig.preset("gpt5")
    assert "curso-mini" in str(info.value)


def test_preset_overrides_and_unknown_field():
    cfg = GPTConfig.preset("curso-mini", vocab_size=500)
    assert cfg.vocab_size == 500 and cfg.emb_dim == 64
    with pytest.raises(ValueError, match="desconhecido"):
        GPTConfig.preset("curso-mini", hidden=3)
    with pytest.raises(ValueError, match="n_layers"):
        GPTConfig.preset("curso-mini", n_layers=0)


def test_gpt2_presets_follow_gpt2():
    for name in ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"):
        cfg = GPTConfig.preset(name)
        assert cfg.qkv_bias and cfg.tie_weights and cfg.context_length == 1024 and cfg.vocab_size == 50257
        assert cfg.head_dim == 64  # todos os GPT-2 usam cabeças de 64 dimensões


# ----------------------------------------------------------------------------- contagens
# Contagens publicadas (GPT2LMHeadModel do Hugging Face, pesos amarrados).
PUBLISHED = {
    "gpt2-small": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_gpt2_parameter_counts_match_published(name):
    cfg = GPTConfig.preset(name)
    with torch.device("meta"):  # sem alocar memória
        model = GPTModel(cfg)
    assert count_parameters(model) == PUBLISHED[name]
    assert parameter_breakdown(cfg)["total"] == PUBLISHED[name]


def test_untied_gpt2_small_is_163m():
    cfg = GPTConfig.preset("gpt2-small", tie_weights=False)
    with torch.device("meta"):
        model = GPTModel(cfg)
    assert count_parameters(model) == 124_439_808 + 50257 * 768 == 163_037_184
    assert parameter_breakdown(cfg)["cabeça de saída"] == 50257 * 768


@settings(max_examples=25, deadline=None)
@given(
    vocab=st.integers(2, 300),
    ctx=st.integers(1, 40),
    heads=st.integers(1, 4),
    head_dim=st.integers(1, 8),
    layers=st.integers(1, 3),
    qkv_bias=st.booleans(),
    tie=st.booleans(),
)
def test_breakdown_equals_real_count(vocab, ctx, heads, head_dim, layers, qkv_bias, tie):
    cfg = GPTConfig(vocab, ctx, heads * head_dim, heads, layers, 0.0, qkv_bias, tie)
    with torch.device("meta"):
        model = GPTModel(cfg)
    parts = parameter_breakdown(cfg)
    assert parts["total"] == count_parameters(model)
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")


def test_count_parameters_trainable_only():
    model = GPTModel(tiny_cfg())
    total = count_parameters(model)
    model.pos_emb.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - 16 * 32


def test_memory_bytes():
    assert memory_bytes(124_439_808) == 497_759_232  # 4 bytes por float32
    assert memory_bytes(10, torch.bfloat16) == 20
    assert memory_bytes(10, training=True) == 160  # pesos + gradientes + 2 momentos do AdamW
    with pytest.raises(ValueError, match="n_params"):
        memory_bytes(-1)
    with pytest.raises(TypeError, match="dtype"):
        memory_bytes(10, "float32")


# ----------------------------------------------------------------------------- peças
@pytest.mark.parametrize("fused", [False, True])
def test_layernorm_matches_torch(fused):
    ref = nn.LayerNorm(32)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours = LayerNorm(32, fused=fused)
    ours.load_state_dict(ref.state_dict())  # mesmos nomes: weight e bias
    x = torch.randn(3, 5, 32) * 4 + 2
    torch.testing.assert_close(ours(x), ref(x))


def test_layernorm_normalizes_and_backprops_like_torch():
    x = torch.randn(4, 32) * 10 + 3
    y = LayerNorm(32, fused=False)(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    (LayerNorm(32, fused=False)(a) ** 3).sum().backward()
    (F.layer_norm(b, (32,)) ** 3).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fused", [False, True])
def test_gelu_matches_torch_tanh(fused):
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(GELU(fused=fused)(x), F.gelu(x, approximate="tanh"))


def test_gelu_known_values():
    gelu = GELU(fused=False)
    x = torch.tensor([0.0, 10.0, -10.0, 1.0])
    y = gelu(x)
    assert y[0] == 0 and abs(y[1] - 10) < 1e-6 and abs(y[2]) < 1e-6
    # tanh(sqrt(2/pi) * 1.044715) calculado à parte
    expected = 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * 1.044715))
    assert abs(y[3].item() - expected) < 1e-6


def test_feedforward_and_block_keep_shape():
    cfg = tiny_cfg()
    x = torch.randn(2, 7, 32)
    ff = FeedForward(cfg)
    assert ff.fc1.out_features == 128 and ff(x).shape == (2, 7, 32)
    assert TransformerBlock(cfg)(x).shape == (2, 7, 32)


def test_dummy_model_shapes():
    model = DummyGPTModel(tiny_cfg())
    assert model(torch.randint(0, 97, (2, 5))).shape == (2, 5, 97)


# ----------------------------------------------------------------------------- GPTModel
def test_state_dict_names_are_stable():
    model = GPTModel(tiny_cfg(n_layers=1))
    expected = [
        "tok_emb.weight",
        "pos_emb.weight",
        "trf_blocks.0.norm1.weight",
        "trf_blocks.0.norm1.bias",
        "trf_blocks.0.att.W_query.weight",
        "trf_blocks.0.att.W_query.bias",
        "trf_blocks.0.att.W_key.weight",
        "trf_blocks.0.att.W_key.bias",
        "trf_blocks.0.att.W_value.weight",
        "trf_blocks.0.att.W_value.bias",
        "trf_blocks.0.att.out_proj.weight",
        "trf_blocks.0.att.out_proj.bias",
        "trf_blocks.0.norm2.weight",
        "trf_blocks.0.norm2.bias",
        "trf_blocks.0.ff.fc1.weight",
        "trf_blocks.0.ff.fc1.bias",
        "trf_blocks.0.ff.fc2.weight",
        "trf_blocks.0.ff.fc2.bias",
        "final_norm.weight",
        "final_norm.bias",
        "out_head.weight",
    ]
    assert list(model.state_dict()) == expected


def test_weight_tying():
    tied = GPTModel(tiny_cfg())
    assert tied.out_head.weight is tied.tok_emb.weight
    untied = GPTModel(tiny_cfg(tie_weights=False))
    assert untied.out_head.weight is not untied.tok_emb.weight
    assert count_parameters(untied) - count_parameters(tied) == 97 * 32


def test_gpt2_style_init():
    torch.manual_seed(0)
    model = GPTModel(tiny_cfg(vocab_size=5000, emb_dim=256, n_heads=4, n_layers=8))
    assert abs(model.tok_emb.weight.std().item() - 0.02) < 1e-3
    residual = model.trf_blocks[0].ff.fc2.weight.std().item()
    assert abs(residual - 0.02 / math.sqrt(16)) < 5e-4
    assert torch.all(model.trf_blocks[0].att.out_proj.bias == 0)


def test_initial_loss_is_near_uniform():
    # Pesos pequenos => previsões quase uniformes => perda ~ ln(V) (razão independente).
    cfg = tiny_cfg(vocab_size=1000)
    model = GPTModel(cfg)
    x = torch.randint(0, 1000, (4, 16))
    loss = F.cross_entropy(model(x).flatten(0, 1), torch.randint(0, 1000, (64,)))
    assert abs(loss.item() - math.log(1000)) < 0.1


def reference_forward(model: GPTModel, idx: torch.Tensor) -> torch.Tensor:
    """O mesmo GPT escrito só com funções do PyTorch, lendo os pesos pelo nome."""
    p = dict(model.named_parameters())
    cfg = model.cfg
    B, T = idx.shape
    C, H = cfg.emb_dim, cfg.n_heads
    x = F.embedding(idx, p["tok_emb.weight"]) + p["pos_emb.weight"][:T]
    for i in range(cfg.n_layers):
        pre = f"trf_blocks.{i}."
        h = F.layer_norm(x, (C,), p[pre + "norm1.weight"], p[pre + "norm1.bias"], 1e-5)
        q, k, v = (
            F.linear(h, p[pre + f"att.{n}.weight"], p.get(pre + f"att.{n}.bias"))
            .view(B, T, H, C // H)
            .transpose(1, 2)
            for n in ("W_query", "W_key", "W_value")
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(C // H)
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        att = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(att, p[pre + "att.out_proj.weight"], p[pre + "att.out_proj.bias"])
        h = F.layer_norm(x, (C,), p[pre + "norm2.weight"], p[pre + "norm2.bias"], 1e-5)
        h = F.gelu(F.linear(h, p[pre + "ff.fc1.weight"], p[pre + "ff.fc1.bias"]), approximate="tanh")
        x = x + F.linear(h, p[pre + "ff.fc2.weight"], p[pre + "ff.fc2.bias"])
    x = F.layer_norm(x, (C,), p["final_norm.weight"], p["final_norm.bias"], 1e-5)
    return x @ p["tok_emb.weight"].T


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_forward_matches_reference_built_from_torch(qkv_bias):
    model = GPTModel(tiny_cfg(qkv_bias=qkv_bias)).eval()
    with torch.no_grad():  # LayerNorm com escala/deslocamento não triviais
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_()
    idx = torch.randint(0, 97, (3, 11))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), reference_forward(model, idx), atol=1e-5, rtol=1e-4)


def test_readable_paths_equal_fused_paths():
    model = GPTModel(tiny_cfg()).eval()
    idx = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        fast = model(idx)
        for module in model.modules():
            if isinstance(module, (LayerNorm, GELU)):
                module.fused = False
        torch.testing.assert_close(model(idx), fast)


def test_golden_logits_under_fixed_seed():
    # Trava de regressão: valores gravados uma vez (CPU, 1 thread, semente 123).
    torch.manual_seed(123)
    model = GPTModel(GPTConfig.preset("curso-mini", vocab_size=50)).eval()
    idx = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        logits = model(idx)[0, -1, :4]
    torch.testing.assert_close(logits, GOLDEN_LOGITS, atol=1e-4, rtol=0)


GOLDEN_LOGITS = torch.tensor([-0.027864, 0.110188, -0.264210, -0.049646])


def test_last_only_is_last_row():
    model = GPTModel(tiny_cfg()).eval()
    idx = torch.randint(0, 97, (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(idx, last_only=True), model(idx)[:, -1:])


def test_kv_cache_forward_equals_full_forward():
    model = GPTModel(tiny_cfg()).eval()
    idx = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full = model(idx)
        caches = model.new_kv_caches(2)
        parts = [model(idx[:, :5], caches), model(idx[:, 5:9], caches)]
        parts += [model(idx[:, t : t + 1], caches) for t in range(9, 12)]
    assert caches[0].length == 12
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


def test_dropout_only_in_train_mode():
    model = GPTModel(tiny_cfg(drop_rate=0.5))
    idx = torch.randint(0, 97, (2, 8))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(idx), model(idx))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(idx), model(idx))


def test_gradients_reach_every_parameter():
    model = GPTModel(tiny_cfg())
    idx = torch.randint(0, 97, (2, 8))
    F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- erros
@pytest.mark.parametrize(
    "bad, error, match",
    [
        ([[1, 2]], TypeError, "tensor"),
        (torch.tensor([[1.0, 2.0]]), TypeError, "inteiros"),
        (torch.tensor([[True, False]]), TypeError, "inteiros"),
        (torch.tensor([1, 2]), ValueError, "2-D"),
        (torch.zeros(1, 2, 3, dtype=torch.long), ValueError, "2-D"),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, "vazia"),
        (torch.zeros(1, 17, dtype=torch.long), ValueError, "context_length=16"),
        (torch.tensor([[3, -1]]), ValueError, "-1"),
        (torch.tensor([[3, 97]]), ValueError, "97"),
    ],
)
def test_forward_rejects_bad_input(bad, error, match):
    model = GPTModel(tiny_cfg())
    with pytest.raises(error, match=match):
        model(bad)


def test_forward_rejects_cache_overflow_and_wrong_cache_list():
    model = GPTModel(tiny_cfg()).eval()
    caches = model.new_kv_caches(1)
    model(torch.zeros(1, 14, dtype=torch.long), caches)
    with pytest.raises(ValueError, match="14 no cache"):
        model(torch.zeros(1, 3, dtype=torch.long), caches)
    with pytest.raises(ValueError, match="um cache por bloco"):
        model(torch.zeros(1, 1, dtype=torch.long), caches[:1])


def test_new_kv_caches_validation_and_shape():
    model = GPTModel(tiny_cfg())
    caches = model.new_kv_caches(3, max_len=10)
    assert len(caches) == 2 and caches[0].keys.shape == (3, 4, 10, 8)
    for bad in (0, 17, 2.5):
        with pytest.raises(ValueError, match="max_len"):
            model.new_kv_caches(1, max_len=bad)


def test_model_requires_config():
    with pytest.raises(TypeError, match="GPTConfig"):
        GPTModel({"vocab_size": 10})


def test_hidden_states_feed_the_head():
    model = GPTModel(tiny_cfg()).eval()
    idx = torch.randint(0, 97, (2, 5))
    with torch.no_grad():
        h = model.hidden_states(idx)
        assert h.shape == (2, 5, 32)
        torch.testing.assert_close(h @ model.tok_emb.weight.T, model(idx))

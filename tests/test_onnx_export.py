"""Testes de companion/onnx_export.py e do comando ``python -m companion export-onnx`` (cap. 5).

O arquivo exportado, rodado no ``onnxruntime``, dá os logits do PyTorch; o grafo com KV cache,
numa geração gulosa feita passo a passo como a do navegador (janela cheia incluída), dá os
mesmos tokens que ``companion.generate``. E cada erro de entrada tem a sua mensagem.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from companion import onnx_export
from companion.assets import artifact_path
from companion.cli import main
from companion.generation import generate
from companion.llama import LlamaConfig, LlamaModel
from companion.model import GPTConfig, GPTModel
from companion.onnx_export import check_onnx, export_onnx, export_run

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

V, CTX = 61, 12


def tiny_gpt(seed: int = 1) -> GPTModel:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=V, context_length=CTX, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1)
    return GPTModel(cfg)  # em modo de treino de propósito: a exportação usa eval e depois devolve


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """O mesmo GPT minúsculo exportado sem e com KV cache."""
    folder = tmp_path_factory.mktemp("onnx")
    model = tiny_gpt()
    plain = export_onnx(model, folder / "plain.onnx")
    cached = export_onnx(model, folder / "cached.onnx", kv_cache=True)
    return model, plain, cached


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_plain_graph_gives_pytorch_logits_for_every_length(exported):
    model, plain, _ = exported
    assert model.training  # voltou ao modo em que estava
    s = session(plain)
    assert [i.name for i in s.get_inputs()] == ["input_ids"] and [o.name for o in s.get_outputs()] == ["logits"]
    model.eval()
    for T in (1, 5, CTX):
        ids = torch.randint(0, V, (1, T))
        (got,) = s.run(None, {"input_ids": ids.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), model(ids), atol=1e-5, rtol=1e-4)
    assert check_onnx(model, plain) < 1e-4


def test_cached_graph_generates_like_companion_generate(exported):
    """Gulosa com o grafo de cache, com a regra do navegador: 1 token por passo; janela cheia -> refaz."""
    model, _, cached = exported
    model.eval()
    s = session(cached)
    assert [i.name for i in s.get_inputs()] == ["input_ids", "past"]
    prompt = torch.randint(0, V, (1, 5))
    n_new = 15  # 5 + 15 > contexto 12: passa pela janela cheia
    expected = generate(model, prompt, n_new, temperature=0.0)[0, 5:].tolist()
    ids, past = prompt[0].tolist(), None
    for _ in range(n_new):
        if past is None or past.shape[3] >= CTX:
            window, past = ids[-CTX:], onnx_export._empty_past(model).numpy()
        else:
            window = ids[-1:]
        logits, past = s.run(None, {"input_ids": torch.tensor([window]).numpy(), "past": past})
        ids.append(int(logits[0, -1].argmax()))
    assert ids[5:] == expected
    assert check_onnx(model, cached) < 1e-4


def test_export_is_deterministic_and_has_no_local_paths(exported, tmp_path):
    model, plain, _ = exported
    again = export_onnx(model, tmp_path / "again.onnx")
    data = plain.read_bytes()
    assert again.read_bytes() == data
    assert b"stack_trace" not in data and b"/work/" not in data and str(tmp_path).encode() not in data


def test_check_onnx_catches_a_different_model(exported):
    _, plain, _ = exported
    with pytest.raises(ValueError, match="diferem"):
        check_onnx(tiny_gpt(seed=2).eval(), plain)
    with pytest.raises(ValueError, match="lengths"):
        check_onnx(tiny_gpt(), plain, lengths=[CTX + 1])


def test_cached_graph_is_only_for_gpt(tmp_path):
    cfg = LlamaConfig(vocab_size=V, context_length=CTX, emb_dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      hidden_dim=48, rope_base=10000.0)
    with pytest.raises(TypeError, match="GPTModel"):
        export_onnx(LlamaModel(cfg), tmp_path / "llama-kv.onnx", kv_cache=True)


def test_export_rejects_what_is_not_a_course_model(tmp_path):
    with pytest.raises(TypeError, match="modelo do curso"):
        export_onnx(nn.Linear(2, 2), tmp_path / "x.onnx")
    fake = nn.Linear(2, 2)
    fake.cfg = types.SimpleNamespace(context_length=8, vocab_size=4)
    with pytest.raises(TypeError, match="GPTModel"):
        export_onnx(fake, tmp_path / "x.onnx", kv_cache=True)


def test_missing_packages_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install -r requirements.txt"):
        export_onnx(tiny_gpt(), tmp_path / "x.onnx")


def test_export_run_checks_the_output_name(tmp_path):
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_run(artifact_path("cap5-treino"), tmp_path / "modelo.txt")
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_run(artifact_path("cap5-treino"), tmp_path)
    with pytest.raises(FileNotFoundError):
        export_run(tmp_path / "nao-existe", tmp_path / "x.onnx")


# --------------------------------------------------------------------------- a linha de comando
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export-onnx", "--out", "x.onnx"], "--run"),
        (["export-onnx", "--run", "/nao/existe", "--out", "x.onnx"], "não encontrado"),
        (["export-onnx", "--run", "RUN", "--out", "modelo.txt"], ".onnx"),
        (["export-onnx", "--run", "RUN", "--out", "x.onnx", "--threads", "0"], "--threads"),
        (["export-onnx", "--run", "RUN", "--out", "x.onnx", "--device", "cuda"], "--device"),
    ],
)
def test_cli_errors(capsys, argv, message):
    argv = [str(artifact_path("cap5-treino")) if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as stop:
        raise SystemExit(main(argv))
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("erro: ") and err.count("\n") == 1 and message in err, err


def test_cli_missing_exporter_is_one_error_line(capsys, monkeypatch, tmp_path):
    def missing(*modules):
        raise ModuleNotFoundError("a exportação para ONNX precisa dos pacotes onnxscript")

    monkeypatch.setattr(onnx_export, "_require", missing)
    with pytest.raises(SystemExit) as stop:
        main(["export-onnx", "--run", str(artifact_path("cap5-treino")), "--out", str(tmp_path / "x.onnx")])
    assert stop.value.code == 1
    assert capsys.readouterr().err.startswith("erro: a exportação para ONNX precisa")


def test_cli_exports_the_chapter_5_run_with_cache(capsys, tmp_path):
    out = tmp_path / "sub" / "cap5.onnx"
    assert main(["export-onnx", "--run", str(artifact_path("cap5-treino")), "--out", str(out), "--kv-cache"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and 0.5e6 < out.stat().st_size < 1e6  # 169 mil parâmetros em float32 + o grafo
    assert "modelo exportado" in text and "logits conferidos com o onnxruntime" in text and "present" in text

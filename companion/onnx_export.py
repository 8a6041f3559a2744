"""Exporta um modelo do curso para ONNX, para rodar fora do PyTorch — no navegador, por exemplo (cap. 5).

ONNX é um formato aberto de grafos de cálculo: o arquivo guarda as operações do modelo
(multiplicações de matrizes, *softmax*, normalizações...) e os pesos, e qualquer
*runtime* compatível o executa — o ``onnxruntime`` em Python, o ``onnxruntime-web``
(WebAssembly) na página ``book/05-pretreinamento/no-navegador`` do site.

Duas formas do grafo:

* **sem cache** (``kv_cache=False``, o padrão) — o ``forward`` do modelo::

      input_ids  (1, T) int64    IDs, 1 <= T <= context_length (T é dinâmico)
      logits     (1, T, V) float32

  Para gerar, passa-se a janela inteira a cada passo e lê-se a última posição.

* **com KV cache** (``kv_cache=True``, só ``GPTModel``) — as chaves e os valores dos tokens
  anteriores entram e saem do grafo, como o ``KVCache`` do cap. 4::

      input_ids  (1, T) int64                  os tokens NOVOS, nas posições [P, P + T)
      past       (2 * n_layers, 1, H, P, D)    chaves e valores de cada bloco (P >= 0; P = 0 no 1.º passo)
      logits     (1, T, V) float32
      present    (2 * n_layers, 1, H, P + T, D)  o ``past`` do passo seguinte

  Com ``P = 0`` é o mesmo ``forward`` do grafo sem cache. No navegador, medido, este é o
  mais rápido (cada passo processa 1 token em vez da janela toda).

A exportação passa pelo ``torch.export`` (``torch.onnx.export(..., dynamo=True)``) e
precisa dos pacotes ``onnx`` e ``onnxscript``; a conferência (``check_onnx``), do
``onnxruntime``. Os três estão em ``requirements.txt``, não nas dependências do pacote.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion.checkpoint import atomic_write_bytes

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "PAST_NAME",
    "PRESENT_NAME",
    "OnnxExport",
    "export_onnx",
    "check_onnx",
    "export_run",
]

INPUT_NAME = "input_ids"
OUTPUT_NAME = "logits"
PAST_NAME = "past"
PRESENT_NAME = "present"
# Conjunto de operações do ONNX pedido ao exportador (o onnxruntime 1.31, em Python e na web, executa).
OPSET = 18
# Diferença máxima aceita entre os logits do PyTorch e os do onnxruntime (float32, ordens de soma diferentes).
DEFAULT_ATOL = 1e-4


def _require(*modules: str) -> None:
    """Confere que os pacotes opcionais da exportação estão instalados."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(
            f"a exportação para ONNX precisa dos pacotes {', '.join(missing)}, que não estão instalados. "
            "Instale as versões do curso com: pip install -r requirements.txt"
        )


class _IdsToLogits(nn.Module):
    """O grafo sem cache: IDs ``(1, T)`` -> *logits* ``(1, T, V)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model(input_ids)  # (1, T, V)


class _CachedStep(nn.Module):
    """O grafo com KV cache de um ``GPTModel``: as mesmas peças do modelo, com o cache como tensores.

    O ``KVCache`` do cap. 4 guarda quantas posições já tem num inteiro do Python, e a
    atenção escolhe o caminho por esse número; um grafo exportado não tem inteiros do
    Python, só tensores. Aqui o passado entra como um tensor ``(2L, 1, H, P, D)`` e ``P``
    sai do formato dele. As contas são as de ``TransformerBlock.forward`` em modo ``eval``
    (os testes conferem contra o PyTorch).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, past: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        P, T = past.shape[3], input_ids.shape[1]
        x = m.tok_emb(input_ids) + m.pos_emb(torch.arange(P, P + T))  # (1, T, C): posições [P, P + T)
        present = []
        for i, block in enumerate(m.trf_blocks):
            q, k, v = block.att._project(block.norm1(x))  # (1, H, T, D) cada
            k = torch.cat([past[2 * i], k], dim=2)  # (1, H, P + T, D)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            present += [k, v]
            # o token novo i (posição P + i) olha para as posições 0 .. P + i
            allowed = torch.ones(T, P + T, dtype=torch.bool).tril(diagonal=P)  # (T, P + T)
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (1, H, T, D)
            context = context.transpose(1, 2).reshape(1, T, m.cfg.emb_dim)  # (1, T, C)
            x = x + block.att.out_proj(context)
            x = x + block.ff(block.norm2(x))
        return m.logits(m.final_norm(x)), torch.stack(present)  # (1, T, V), (2L, 1, H, P + T, D)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Cala o progresso e os avisos do exportador (não dizem nada a quem só quer o arquivo)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _strip_metadata(onnx_model) -> None:
    """Tira do grafo os metadados de depuração (pilhas de chamadas com caminhos desta máquina).

    Com eles o arquivo fica ~20% maior e muda de máquina para máquina; sem eles, a
    mesma versão do PyTorch exporta os mesmos bytes.
    """
    graphs = [onnx_model.graph]
    while graphs:
        graph = graphs.pop()
        for item in (*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer):
            del item.metadata_props[:]
        for node in graph.node:
            graphs.extend(attr.g for attr in node.attribute if attr.HasField("g"))


def _empty_past(model: nn.Module, length: int = 0) -> Tensor:
    """Um ``past`` de ``length`` posições, zerado: ``(2L, 1, H, length, D)``."""
    cfg = model.cfg
    return torch.zeros(2 * cfg.n_layers, 1, cfg.n_heads, length, cfg.emb_dim // cfg.n_heads)


def export_onnx(model: nn.Module, path: str | Path, *, kv_cache: bool = False, description: str = "") -> Path:
    """Exporta ``model`` (um modelo do curso) para um arquivo ONNX.

    O modelo é exportado em modo ``eval`` e ``float32``, na CPU, com os comprimentos
    dinâmicos (``T`` de 1 a ``cfg.context_length``; com cache, ``P`` de 0 a
    ``context_length - 1``). Pesos amarrados (cabeça = *embedding*) são gravados uma vez só.

    Args:
        model: um ``CausalLM`` com ``cfg.context_length`` e ``cfg.vocab_size``; com
            ``kv_cache=True``, um ``GPTModel``.
        path: o arquivo ``.onnx`` a gravar (a pasta precisa existir; gravação atômica).
        kv_cache: exporta o grafo com KV cache (veja o docstring do módulo).
        description: texto guardado no campo ``doc_string`` do arquivo.

    Returns:
        O caminho gravado.

    Raises:
        TypeError: ``model`` não é um modelo do curso (ou não é um ``GPTModel``, com ``kv_cache``).
        ValueError: ``kv_cache`` com ``context_length < 4``.
        ModuleNotFoundError: faltam ``onnx`` ou ``onnxscript``.
    """
    from companion.model import GPTModel

    cfg = getattr(model, "cfg", None)
    if not isinstance(model, nn.Module) or not hasattr(cfg, "context_length") or not hasattr(cfg, "vocab_size"):
        raise TypeError(f"export_onnx espera um modelo do curso (GPTModel...); recebi {type(model).__name__}.")
    if kv_cache and not isinstance(model, GPTModel):
        raise TypeError(f"o grafo com KV cache é o do GPTModel; recebi {type(model).__name__}.")
    _require("onnx", "onnxscript")
    import onnx

    ctx = cfg.context_length
    weight = next(model.parameters())
    # Exporta em float32 na CPU; uma cópia só quando o modelo está em outro lugar ou precisão.
    on_cpu_fp32 = weight.dtype == torch.float32 and weight.device.type == "cpu"
    source = model if on_cpu_fp32 else copy.deepcopy(model).float().cpu()
    was_training = source.training
    source.eval()
    if kv_cache and ctx < 4:
        raise ValueError(f"o grafo com KV cache precisa de context_length >= 4; o modelo tem {ctx}.")
    # Exemplos com T = 2 e P = 2 (com 0 ou 1, o exportador fixaria esse tamanho no grafo).
    example = torch.zeros(1, min(ctx, 2), dtype=torch.long)  # (1, T)
    T = torch.export.Dim("T", min=1, max=ctx)
    if kv_cache:
        P = torch.export.Dim("P", min=0, max=ctx - 1)
        wrapper: nn.Module = _CachedStep(source)
        args: tuple[Tensor, ...] = (example, _empty_past(source, 2))
        names = {"input_names": [INPUT_NAME, PAST_NAME], "output_names": [OUTPUT_NAME, PRESENT_NAME]}
        dynamic = {"input_ids": {1: T}, "past": {3: P}}
    else:
        wrapper, args = _IdsToLogits(source), (example,)
        names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME]}
        dynamic = {"input_ids": {1: T}}
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                wrapper.eval(), args, dynamo=True, opset_version=OPSET, dynamic_shapes=dynamic, verbose=False, **names
            )
    finally:
        source.train(was_training)
    onnx_model = program.model_proto
    _strip_metadata(onnx_model)
    onnx_model.doc_string = description
    onnx.checker.check_model(onnx_model)
    return atomic_write_bytes(path, onnx_model.SerializeToString())


def _session(path: str | Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(
    model: nn.Module,
    path: str | Path,
    lengths: Sequence[int] | None = None,
    atol: float = DEFAULT_ATOL,
    seed: int = 0,
) -> float:
    """Confere, com o ``onnxruntime``, que o arquivo dá os mesmos *logits* que o PyTorch.

    Para cada comprimento ``T``: os *logits* de ``T`` IDs sorteados. Num grafo com KV cache,
    também os de uma geração: o *prompt* de ``T - 1`` tokens com ``past`` vazio e depois o
    último token sozinho, com o ``present`` do passo anterior.

    Args:
        model: o modelo exportado.
        path: o arquivo ``.onnx`` (com ou sem cache: a conferência descobre pelas entradas).
        lengths: os comprimentos ``T`` testados (padrão: 1, 2, metade e o contexto inteiro).
        atol: a maior diferença absoluta aceita.
        seed: semente dos IDs sorteados.

    Returns:
        A maior diferença absoluta encontrada.

    Raises:
        ModuleNotFoundError: falta o ``onnxruntime``.
        ValueError: um comprimento inválido, ou *logits* diferentes além de ``atol``.
    """
    _require("onnxruntime")
    cfg = model.cfg
    ctx = cfg.context_length
    lengths = tuple(sorted({1, min(2, ctx), max(1, ctx // 2), ctx})) if lengths is None else tuple(lengths)
    for T in lengths:
        if isinstance(T, bool) or not isinstance(T, int) or not 1 <= T <= ctx:
            raise ValueError(f"lengths deve ter inteiros em [1, {ctx}]; recebi {T!r}.")
    session = _session(path)
    cached = PAST_NAME in {i.name for i in session.get_inputs()}
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    worst = 0.0

    def compare(got, expected: Tensor, what: str) -> None:
        nonlocal worst
        diff = float((torch.from_numpy(got) - expected.float().cpu()).abs().max())
        worst = max(worst, diff)
        if not diff <= atol:  # também pega NaN
            raise ValueError(f"os logits do ONNX diferem dos do PyTorch em {diff:.3g} ({what}); o limite é {atol:g}.")

    was_training = model.training
    model.eval()
    try:
        for T in lengths:
            ids = torch.randint(0, cfg.vocab_size, (1, T), generator=generator)  # (1, T)
            with torch.no_grad():
                expected = model(ids.to(device))  # (1, T, V)
            feed = {INPUT_NAME: ids.numpy()}
            if not cached:
                compare(session.run([OUTPUT_NAME], feed)[0], expected, f"T={T}")
                continue
            compare(session.run([OUTPUT_NAME], {**feed, PAST_NAME: _empty_past(model).numpy()})[0], expected,
                    f"T={T}, sem passado")
            if T >= 2:  # prompt de T - 1 tokens, depois 1 token com o cache
                _, present = session.run(None, {INPUT_NAME: ids[:, :-1].numpy(), PAST_NAME: _empty_past(model).numpy()})
                (last,) = session.run([OUTPUT_NAME], {INPUT_NAME: ids[:, -1:].numpy(), PAST_NAME: present})
                compare(last, expected[:, -1:], f"T={T}, último token com o cache")
    finally:
        model.train(was_training)
    return worst


@dataclass(frozen=True)
class OnnxExport:
    """O resultado de ``export_run``: o arquivo e o que se sabe dele."""

    path: Path
    size_bytes: int
    sha256: str
    vocab_size: int
    context_length: int
    kv_cache: bool
    max_abs_diff: float | None  # None quando a conferência com o onnxruntime não foi feita


def export_run(run: str | Path, out: str | Path, *, kv_cache: bool = False, check: bool = True) -> OnnxExport:
    """Exporta o modelo de uma pasta de treino (``python -m companion train``) para ONNX.

    Args:
        run: a pasta do treino (ou o seu ``checkpoint.safetensors``).
        out: o arquivo ``.onnx`` a gravar (as pastas que faltarem são criadas).
        kv_cache: exporta o grafo com KV cache.
        check: confere os *logits* com o ``onnxruntime`` (``check_onnx``).

    Returns:
        Um ``OnnxExport``.

    Raises:
        FileNotFoundError / ValueError: pasta de treino ausente ou inválida (``load_trained``),
            ``out`` que não termina em ``.onnx`` ou que é uma pasta.
        ModuleNotFoundError: faltam os pacotes da exportação (ou o ``onnxruntime``, com ``check``).
    """
    from companion.runs import load_trained

    out = Path(out)
    if out.suffix != ".onnx" or out.is_dir():
        raise ValueError(f"o arquivo de saída deve terminar em .onnx (e não ser uma pasta); recebi {out}.")
    model, _ = load_trained(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = "input_ids, past -> logits, present (KV cache)" if kv_cache else "input_ids (1, T) -> logits (1, T, V)"
    export_onnx(model, out, kv_cache=kv_cache, description=f"LLM do Zero: GPT de {Path(run).name} ({graph})")
    diff = check_onnx(model, out) if check else None
    data = out.read_bytes()
    return OnnxExport(
        path=out,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        vocab_size=model.cfg.vocab_size,
        context_length=model.cfg.context_length,
        kv_cache=kv_cache,
        max_abs_diff=diff,
    )

"""Um detector de golpes sobre o Gemma 3 congelado: uma sonda linear (cap. 6).

O Gemma 3 270M leu muito português no pré-treinamento. Os vetores que ele calcula para
uma mensagem (os estados ocultos dos blocos) já separam, em boa parte, "isto é um
golpe" de "isto é uma conversa comum" — falta só uma regra que leia essa separação. A
regra mais simples é uma **sonda linear** (*linear probe*; Alain e Bengio, 2016): uma
regressão logística sobre os vetores, treinada com o modelo inteiro congelado. Uma
camada escondida pequena na sonda ainda deixa o modelo congelado e o artefato pequeno
(~2,6 MB), e acerta mais.

1. ``message_features``: roda o modelo (sem gradiente) em cada mensagem, começando com
   ``<bos>``, e guarda a **média** dos estados ocultos dos tokens da mensagem na saída
   de alguns blocos (``ProbeConfig.layers``), lado a lado: um vetor de
   ``len(layers) x 640`` números por mensagem;
2. ``LinearProbe``: padroniza cada número (média 0, desvio 1, com as estatísticas do
   treino) e aplica uma ``nn.Linear(F, 2)`` — ou, com ``hidden > 0``, uma camada
   escondida pequena antes dela (a sonda do curso usa 256 neurônios);
3. ``train_probe``: o treino em lote cheio (todas as mensagens de treino a cada passo),
   com AdamW, decaimento de peso e *dropout* nos vetores — segundos na CPU;
4. ``save_probe``/``load_probe``: o artefato é só a sonda (alguns KB) + um JSON com a
   configuração e as métricas; o Gemma vem do pacote do PyPI;
5. ``classify_with_probe``: de textos a rótulos.

O treino completo é ``python -m companion finetune classify --model gemma3-270m``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from companion._checks import check_int, check_number, check_probability
from companion.textcodec import text_codec

__all__ = [
    "ProbeConfig",
    "message_features",
    "LinearProbe",
    "train_probe",
    "save_probe",
    "load_probe",
    "classify_with_probe",
    "PROBE_WEIGHTS_FILE",
    "PROBE_INFO_FILE",
]

PROBE_WEIGHTS_FILE = "sonda.safetensors"
PROBE_INFO_FILE = "sonda.json"
PROBE_FORMAT = "companion-probe"


@dataclass
class ProbeConfig:
    """Como as mensagens viram vetores e como a sonda é treinada.

    Args:
        layers: os blocos (contando de 1) cujas saídas entram no vetor da mensagem.
            Blocos do meio costumam separar melhor o *sentido* do texto que o último,
            que já se especializou em prever o próximo token.
        hidden: neurônios da camada escondida da sonda (``0`` = regressão logística pura,
            uma ``nn.Linear`` direto nos vetores).
        dropout: *dropout* nos vetores de entrada durante o treino da sonda.
        max_length: tokens por mensagem (as mais longas são cortadas no fim).
        batch_size: mensagens por lote ao calcular os vetores.
        steps: passos de otimização da regressão logística (lote cheio).
        lr: taxa de aprendizado do AdamW.
        weight_decay: decaimento de peso (regularização: a sonda tem ``F + 1`` pesos por
            classe e poucas mil mensagens).
        seed: semente dos pesos iniciais.

    Raises:
        ValueError: valores fora do permitido (a mensagem diz qual e o que é aceito).
    """

    layers: tuple[int, ...] = (4, 8, 12, 16)
    hidden: int = 256
    dropout: float = 0.2
    max_length: int = 128
    batch_size: int = 16
    steps: int = 400
    lr: float = 0.003
    weight_decay: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        owner = "ProbeConfig: "
        layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else ()
        if not layers or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in layers):
            raise ValueError(f"{owner}layers deve ser uma lista não vazia de blocos (inteiros >= 1); recebi {self.layers!r}.")
        self.layers = layers
        check_int("hidden", self.hidden, 0, owner=owner)
        self.dropout = check_probability("dropout", self.dropout, owner=owner)
        check_int("max_length", self.max_length, 2, owner=owner)
        check_int("batch_size", self.batch_size, 1, owner=owner)
        check_int("steps", self.steps, 1, owner=owner)
        self.lr = check_number("lr", self.lr, 0.0, min_open=True, owner=owner)
        self.weight_decay = check_number("weight_decay", self.weight_decay, 0.0, owner=owner)
        check_int("seed", self.seed, 0, owner=owner)


# ----------------------------------------------------------------------------- os vetores
@torch.no_grad()
def message_features(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    cfg: ProbeConfig | None = None,
    progress: bool = False,
) -> Tensor:
    """O vetor de cada mensagem: médias dos estados ocultos na saída dos blocos ``cfg.layers``.

    As mensagens são agrupadas por tamanho (pouco preenchimento) e completadas à direita:
    com a atenção causal, um token real nunca olha para o preenchimento que vem depois
    dele, e a média só conta os tokens da mensagem (nem ``<bos>``, nem preenchimento).

    Args:
        model: um ``CausalLM`` do curso (Gemma 3 ou SmolLM2), congelado.
        tokenizer: o tokenizador do modelo.
        texts: as mensagens.
        cfg: a configuração (``layers``, ``max_length``, ``batch_size``).
        progress: barra de progresso.

    Returns:
        ``(N, len(layers) * C)`` em ``float32``, na ordem de ``texts``.

    Raises:
        ValueError: lista vazia, texto vazio ou bloco que o modelo não tem.
    """
    from tqdm.auto import tqdm

    cfg = cfg or ProbeConfig()
    if len(texts) == 0:
        raise ValueError("message_features: a lista de mensagens está vazia.")
    n_blocks = len(model.blocks)
    if max(cfg.layers) > n_blocks:
        raise ValueError(f"o modelo tem {n_blocks} blocos; layers={cfg.layers} pede o bloco {max(cfg.layers)}.")
    codec = text_codec(tokenizer)
    encoded = []
    for i, text in enumerate(texts):
        ids = codec.encode(text)[: cfg.max_length - len(codec.bos)]
        if not ids:
            raise ValueError(f"a mensagem {i} está vazia: não há tokens para resumir.")
        encoded.append(ids)
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    wanted = {layer - 1: k for k, layer in enumerate(cfg.layers)}
    result = torch.empty(len(encoded), len(cfg.layers) * model.cfg.emb_dim)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(order), disable=not progress, desc="vetores", unit="msg")
    for start in range(0, len(order), cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        T = len(codec.bos) + max(len(encoded[i]) for i in rows)
        idx = torch.full((len(rows), T), codec.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros(len(rows), T)  # 1 nos tokens da mensagem
        for r, i in enumerate(rows):
            ids = list(codec.bos) + encoded[i]
            idx[r, : len(ids)] = torch.tensor(ids)
            mask[r, len(codec.bos) : len(ids)] = 1.0
        idx, mask = idx.to(device), mask.to(device)
        x = model.embed(idx, 0)  # (B, T, C)
        extra = model.block_inputs(0, T, x)
        pooled = [None] * len(cfg.layers)
        for b, block in enumerate(model.blocks[: max(cfg.layers)]):
            x = block(x, *extra, kv_cache=None)  # (B, T, C)
            if b in wanted:
                summed = (x.float() * mask.unsqueeze(-1)).sum(dim=1)  # (B, C)
                pooled[wanted[b]] = summed / mask.sum(dim=1, keepdim=True)
        result[rows] = torch.cat(pooled, dim=-1).cpu()  # (B, len(layers) * C)
        bar.update(len(rows))
    bar.close()
    model.train(was_training)
    return result


# ----------------------------------------------------------------------------- a sonda
class LinearProbe(nn.Module):
    """Padronização + uma rede pequena: ``(N, F)`` -> *logits* ``(N, K)``.

    Com ``hidden=0`` é uma regressão logística (``nn.Linear(F, K)``); com ``hidden > 0``,
    uma camada escondida com GELU antes da saída — ainda minúscula perto do modelo
    congelado, e capaz de combinar os números dos vetores de jeitos que uma reta não
    combina. A média e o desvio de cada número vêm do treino (``fit_scaler``) e ficam
    guardados como *buffers*: a sonda gravada aplica exatamente a mesma padronização depois.
    """

    def __init__(self, n_features: int, n_classes: int = 2, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        check_int("n_features", n_features, 1)
        check_int("n_classes", n_classes, 2)
        check_int("hidden", hidden, 0)
        self.n_classes = n_classes
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.dropout = nn.Dropout(dropout)
        if hidden == 0:
            self.net = nn.Linear(n_features, n_classes)
        else:
            self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Linear(hidden, n_classes))

    def fit_scaler(self, features: Tensor) -> None:
        """Guarda a média e o desvio de cada coluna de ``features`` ``(N, F)``."""
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0).clamp_min(1e-6))  # uma coluna constante não divide por zero

    def forward(self, features: Tensor) -> Tensor:
        """``(N, F)`` -> *logits* ``(N, K)``."""
        if features.dim() != 2 or features.shape[1] != self.mean.numel():
            raise ValueError(
                f"a sonda espera vetores (N, {self.mean.numel()}); recebi o formato {tuple(features.shape)}."
            )
        return self.net(self.dropout((features - self.mean) / self.std))


def train_probe(
    features: Tensor,
    labels: Tensor,
    cfg: ProbeConfig | None = None,
    n_classes: int = 2,
    log: Callable[[str], None] | None = None,
) -> tuple[LinearProbe, list[float]]:
    """Treina a sonda em lote cheio (entropia cruzada + AdamW com decaimento de peso e *dropout*).

    Args:
        features: ``(N, F)`` de ``message_features``.
        labels: ``(N,)`` inteiros em ``[0, n_classes)``.
        cfg: ``hidden``, ``dropout``, ``steps``, ``lr``, ``weight_decay`` e ``seed``.
        n_classes: quantas classes.
        log: função que recebe uma linha de progresso a cada 100 passos (ou ``None``).

    Returns:
        ``(sonda, perdas_por_passo)``, a sonda em modo ``eval``.

    Raises:
        ValueError: formatos incompatíveis ou rótulos fora de ``[0, n_classes)``.
    """
    cfg = cfg or ProbeConfig()
    labels = torch.as_tensor(labels).long()
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"features deve ser (N, F) e labels (N,); recebi {tuple(features.shape)} e {tuple(labels.shape)}."
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"os rótulos devem estar em [0, {n_classes}); recebi de {int(labels.min())} a {int(labels.max())}.")
    losses = []
    with torch.random.fork_rng(devices=[]):  # pesos iniciais e dropout dependem só de cfg.seed
        torch.manual_seed(cfg.seed)
        probe = LinearProbe(features.shape[1], n_classes, cfg.hidden, cfg.dropout)
        probe.fit_scaler(features)
        optimizer = torch.optim.AdamW(probe.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        probe.train()
        for step in range(cfg.steps):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(probe(features), labels)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if log is not None and (step + 1) % 100 == 0:
                log(f"passo {step + 1:>4} | perda de treino {losses[-1]:.4f}")
    probe.eval()
    return probe, losses


# ----------------------------------------------------------------------------- gravar e ler
def save_probe(folder: str | Path, probe: LinearProbe, cfg: ProbeConfig, info: dict[str, Any]) -> Path:
    """Grava ``PASTA/sonda.safetensors`` (a sonda, atômico) e ``PASTA/sonda.json``.

    Args:
        info: o que mais vai no JSON (``labels``, ``pretrained``, métricas...).

    Returns:
        A pasta.
    """
    from companion.checkpoint import atomic_write_json, save_checkpoint

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"format": PROBE_FORMAT, "config": asdict(cfg), "n_features": probe.mean.numel(),
            "n_classes": probe.n_classes, **info}
    save_checkpoint(folder / PROBE_WEIGHTS_FILE, probe, probe=data)
    atomic_write_json(folder / PROBE_INFO_FILE, data)
    return folder


def load_probe(folder: str | Path) -> tuple[LinearProbe, ProbeConfig, dict[str, Any]]:
    """Lê uma sonda gravada por ``save_probe``.

    Returns:
        ``(sonda, configuração, conteúdo do JSON)``, a sonda em modo ``eval``.

    Raises:
        FileNotFoundError: a pasta ou os arquivos não existem.
        ValueError: arquivos de outro formato.
    """
    from companion.checkpoint import load_checkpoint

    folder = Path(folder)
    for name in (PROBE_WEIGHTS_FILE, PROBE_INFO_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder} não tem o arquivo {name}: não é uma pasta de sonda "
                "(treine uma com `python -m companion finetune classify --model gemma3-270m --out PASTA`)."
            )
    try:
        info = json.loads((folder / PROBE_INFO_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{folder / PROBE_INFO_FILE} não é JSON válido ({error}).") from error
    if not isinstance(info, dict) or info.get("format") != PROBE_FORMAT:
        raise ValueError(f"{folder / PROBE_INFO_FILE} não foi gravado por save_probe (falta format={PROBE_FORMAT!r}).")
    cfg = ProbeConfig(**{**info["config"], "layers": tuple(info["config"]["layers"])})
    probe = LinearProbe(int(info["n_features"]), int(info["n_classes"]), cfg.hidden)
    load_checkpoint(folder / PROBE_WEIGHTS_FILE, probe)
    probe.eval()
    return probe, cfg, info


@torch.no_grad()
def classify_with_probe(
    model: nn.Module,
    tokenizer: Any,
    probe: LinearProbe,
    cfg: ProbeConfig,
    texts: Sequence[str],
    labels: Sequence[str] = ("normal", "spam"),
) -> list[tuple[str, float]]:
    """Classifica textos: ``[(rótulo, probabilidade do rótulo escolhido), ...]``."""
    probs = probe(message_features(model, tokenizer, texts, cfg)).softmax(dim=-1)  # (N, K)
    best = probs.argmax(dim=-1)
    return [(labels[int(k)], float(probs[i, k])) for i, k in enumerate(best)]

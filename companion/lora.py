"""LoRA do zero: ajuste fino com matrizes de posto baixo (cap. 6).

Ajustar os 270 milhões de pesos do Gemma 3 (ou os 135 milhões do SmolLM2) para cada tarefa
custa memória (os momentos do AdamW dobram o tamanho do modelo) e disco (um modelo
inteiro por tarefa). A LoRA
(*Low-Rank Adaptation*, Hu et al., 2022) congela os pesos ``W`` de algumas camadas
lineares e aprende só uma correção de posto ``r`` pequeno::

    y = x Wᵀ + (alpha / r) · x Aᵀ Bᵀ          A: (r, entrada)   B: (saída, r)

``B`` começa em zero, então no início o modelo ajustado é *exatamente* o original; o
treino move só ``A`` e ``B`` — para ``r = 8`` numa matriz 576 x 192, são 6.144
números em vez de 110.592. Depois do treino, ``W + (alpha / r) · B A`` pode ser somado
aos pesos (``merge``): a inferência volta a custar o mesmo que a do modelo original.

O que este arquivo oferece, na ordem em que o capítulo os constrói:

1. ``LoRAConfig`` — posto, ``alpha``, *dropout* e os nomes das camadas a adaptar;
2. ``LoRALinear`` — embrulha um ``nn.Linear`` congelado, com ``merge``/``unmerge``;
3. ``apply_lora`` — troca, num modelo, as camadas escolhidas por ``LoRALinear`` e
   congela todo o resto (``companion.model.count_parameters`` conta os treináveis);
4. ``lora_state_dict`` / ``load_lora_state_dict`` — só os pesos do adaptador;
5. ``merge_lora`` — soma os adaptadores aos pesos e devolve camadas ``nn.Linear`` comuns;
   ``disable_lora`` desliga os adaptadores por um momento (o modelo volta a ser o base);
6. ``save_lora_adapter`` / ``load_lora_adapter`` — o adaptador em disco (safetensors,
   gravação atômica), com a configuração nos metadados.

Nos nomes do ``companion.llama``, as camadas de atenção são ``q_proj``, ``k_proj``,
``v_proj`` e ``o_proj``; as da *feed-forward*, ``gate_proj``, ``up_proj`` e ``down_proj``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from companion._checks import check_int, check_number, check_probability

__all__ = [
    "LoRAConfig",
    "LoRALinear",
    "apply_lora",
    "adapter_file",
    "lora_state_dict",
    "load_lora_state_dict",
    "merge_lora",
    "disable_lora",
    "ADAPTER_FILE",
    "ADAPTER_FORMAT",
    "save_lora_adapter",
    "load_lora_adapter",
    "read_adapter_metadata",
]

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_FORMAT = "companion-lora"


# ----------------------------------------------------------------------------- configuração
@dataclass
class LoRAConfig:
    """Hiperparâmetros de um adaptador LoRA (cap. 6).

    Args:
        r: o posto da correção (quantas "direções" novas cada camada aprende).
        alpha: escala; a correção é multiplicada por ``alpha / r``. Fixar ``alpha`` e
            variar ``r`` mantém o tamanho típico da correção, e a mesma taxa de
            aprendizado continua servindo.
        dropout: *dropout* aplicado à entrada do ramo LoRA (só no treino).
        targets: nomes (o último pedaço do nome do módulo) das camadas ``nn.Linear`` a
            adaptar. O artigo original adapta as projeções de consulta e de valor.

    Raises:
        ValueError: valores fora do permitido (a mensagem diz qual e o que é aceito).
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")

    def __post_init__(self) -> None:
        check_int("r (o posto)", self.r, 1, owner="LoRAConfig: ")
        self.alpha = check_number("alpha", self.alpha, 0.0, min_open=True, owner="LoRAConfig: ")
        self.dropout = check_probability("dropout", self.dropout, owner="LoRAConfig: ")
        if isinstance(self.targets, str):
            self.targets = (self.targets,)
        targets = tuple(self.targets) if isinstance(self.targets, Iterable) else ()
        if not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(
                "LoRAConfig: targets deve ser uma lista não vazia de nomes de camadas, por exemplo "
                f"('q_proj', 'v_proj'); recebi {self.targets!r}."
            )
        self.targets = targets

    @property
    def scaling(self) -> float:
        """O fator ``alpha / r`` que multiplica a correção."""
        return self.alpha / self.r

    def to_dict(self) -> dict[str, Any]:
        """A configuração como dicionário de JSON (``targets`` vira lista)."""
        data = dataclasses.asdict(self)
        data["targets"] = list(self.targets)
        return data


# ----------------------------------------------------------------------------- a camada
class LoRALinear(nn.Module):
    """Uma ``nn.Linear`` congelada mais uma correção treinável de posto ``r`` (cap. 6).

    ::

        y = base(x) + (alpha / r) · dropout(x) Aᵀ Bᵀ

    ``A`` ``(r, in_features)`` começa como os pesos de uma ``nn.Linear`` nova (uniforme
    de Kaiming) e ``B`` ``(out_features, r)`` começa em **zero**: a correção parte de
    zero e o modelo embrulhado calcula, no início, exatamente o mesmo que o original.
    Os pesos da ``base`` recebem ``requires_grad=False``.

    Args:
        base: a camada linear a adaptar.
        r: o posto.
        alpha: a escala (a correção é multiplicada por ``alpha / r``).
        dropout: *dropout* na entrada do ramo LoRA.

    Raises:
        TypeError: ``base`` não é ``nn.Linear``.
        ValueError: ``r``, ``alpha`` ou ``dropout`` inválidos, ou ``r`` maior que as
            dimensões da camada.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear embrulha um torch.nn.Linear; recebi {type(base).__name__}.")
        cfg = LoRAConfig(r=r, alpha=alpha, dropout=dropout)  # valida os números
        if r > min(base.in_features, base.out_features):
            raise ValueError(
                f"LoRALinear: r={r} é maior que a menor dimensão da camada "
                f"({base.in_features} -> {base.out_features}); a correção não teria posto baixo."
            )
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r = r
        self.alpha = cfg.alpha
        self.scaling = cfg.scaling
        factory = {"dtype": torch.float32, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # o mesmo sorteio de uma nn.Linear
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.merged = False
        self.enabled = True  # False: calcula só a camada base (veja disable_lora)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> Tensor:
        """O peso da camada base (para código que lê ``.weight`` de uma ``nn.Linear``)."""
        return self.base.weight

    def delta_weight(self) -> Tensor:
        """A correção ``(alpha / r) · B A``, formato ``(out_features, in_features)``."""
        return (self.lora_B @ self.lora_A) * self.scaling  # (saída, r) @ (r, entrada)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(..., in_features)`` -> ``(..., out_features)``."""
        y = self.base(x)
        if self.merged or not self.enabled:
            return y  # a correção já está dentro de base.weight, ou está desligada
        a = self.dropout(x) @ self.lora_A.to(x.dtype).T  # (..., r)
        return y + (a @ self.lora_B.to(x.dtype).T) * self.scaling  # (..., saída)

    @torch.no_grad()
    def merge(self) -> None:
        """Soma a correção ao peso da base: depois, ``forward`` custa o mesmo que a ``nn.Linear``.

        Raises:
            ValueError: se já estiver somada.
        """
        if self.merged:
            raise ValueError("LoRALinear.merge: a correção já está somada aos pesos (chame unmerge antes).")
        weight = self.base.weight
        weight.copy_((weight.float() + self.delta_weight()).to(weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Desfaz ``merge`` (subtrai a correção), para voltar a treinar ``A`` e ``B``.

        Raises:
            ValueError: se a correção não estiver somada.
        """
        if not self.merged:
            raise ValueError("LoRALinear.unmerge: a correção não está somada aos pesos (chame merge antes).")
        weight = self.base.weight
        weight.copy_((weight.float() - self.delta_weight()).to(weight.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, merged={self.merged}"


# ----------------------------------------------------------------------------- aplicar ao modelo
def _linear_names(model: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear) and name})


def _shared_weight_names(model: nn.Module) -> dict[str, str]:
    """Nome de cada parâmetro que aparece sob mais de um nome -> o primeiro desses nomes."""
    first: dict[int, str] = {}
    shared: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            shared[name] = first[id(p)]
            shared.setdefault(first[id(p)], name)
        else:
            first[id(p)] = name
    return shared


def apply_lora(
    model: nn.Module,
    targets: Iterable[str] | str = ("q_proj", "v_proj"),
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
) -> list[str]:
    """Congela o modelo e troca as camadas ``nn.Linear`` escolhidas por ``LoRALinear`` (cap. 6).

    Depois da chamada, os únicos parâmetros treináveis do modelo são os ``lora_A`` e
    ``lora_B`` novos. A troca é feita no lugar.

    Args:
        model: qualquer ``nn.Module`` (no livro, o ``Gemma3Model``; serve também ao ``LlamaModel`` do SmolLM2).
        targets: o último pedaço do nome das camadas a adaptar (``"q_proj"`` pega
            ``blocks.0.attn.q_proj``, ``blocks.1.attn.q_proj``...).
        r, alpha, dropout: como em ``LoRAConfig``.

    Returns:
        Os nomes completos das camadas trocadas, em ordem.

    Raises:
        ValueError: configuração inválida, nome de camada que não existe no modelo (a
            mensagem lista os nomes possíveis), camada de peso compartilhado (a cabeça
            amarrada ao *embedding*) ou modelo que já tem LoRA.
    """
    cfg = LoRAConfig(r=r, alpha=alpha, dropout=dropout, targets=targets)  # type: ignore[arg-type]
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError(
            "apply_lora: o modelo já tem camadas LoRA. Use merge_lora(model) para somá-las aos pesos "
            "antes de aplicar um adaptador novo."
        )
    available = _linear_names(model)
    missing = [t for t in cfg.targets if t not in available]
    if missing:
        raise ValueError(f"apply_lora: o modelo não tem camadas nn.Linear chamadas {missing}; as que existem são {available}.")
    chosen = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name and name.rsplit(".", 1)[-1] in cfg.targets
    ]
    shared = _shared_weight_names(model)
    refused = [name for name in chosen if f"{name}.weight" in shared]
    if refused:
        raise ValueError(
            f"apply_lora: a camada {refused[0]} compartilha o peso com {shared[f'{refused[0]}.weight']} "
            "(pesos amarrados). Somar a LoRA a ela mudaria também a outra na hora de juntar os pesos "
            "(merge_lora); escolha outras camadas em targets."
        )
    for p in model.parameters():
        p.requires_grad_(False)
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), cfg.r, cfg.alpha, cfg.dropout))
    return chosen


def _lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Só os pesos dos adaptadores: ``{"<camada>.lora_A": ..., "<camada>.lora_B": ...}``.

    Raises:
        ValueError: o modelo não tem camadas LoRA.
    """
    modules = _lora_modules(model)
    if not modules:
        raise ValueError("lora_state_dict: o modelo não tem camadas LoRA (use apply_lora antes).")
    state: dict[str, Tensor] = {}
    for name, m in modules.items():
        state[f"{name}.lora_A"] = m.lora_A.detach()
        state[f"{name}.lora_B"] = m.lora_B.detach()
    return state


def load_lora_state_dict(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Copia pesos de adaptador (de ``lora_state_dict``) para as camadas LoRA do modelo.

    Raises:
        ValueError: o modelo não tem camadas LoRA, há chaves faltando ou sobrando, ou
            formatos diferentes (a mensagem nomeia o tensor). Camadas somadas (``merge``)
            também são recusadas: os pesos da base já contêm a correção antiga.
    """
    modules = _lora_modules(model)
    if not modules:
        raise ValueError("load_lora_state_dict: o modelo não tem camadas LoRA (use apply_lora antes).")
    expected = {f"{name}.lora_{which}": m for name, m in modules.items() for which in ("A", "B")}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(
            f"load_lora_state_dict: as chaves não combinam com as camadas LoRA do modelo "
            f"(faltam {missing[:3]}, sobram {extra[:3]}); o adaptador foi treinado com outros targets."
        )
    for key, module in expected.items():
        if module.merged:
            raise ValueError(f"load_lora_state_dict: a camada {key.rsplit('.', 1)[0]} está somada (merge); chame unmerge antes.")
        param = module.lora_A if key.endswith("lora_A") else module.lora_B
        tensor = state[key]
        if tuple(tensor.shape) != tuple(param.shape):
            raise ValueError(
                f"load_lora_state_dict: {key} tem formato {tuple(tensor.shape)} no adaptador, mas "
                f"{tuple(param.shape)} no modelo (outro posto r?)."
            )
    with torch.no_grad():
        for key, module in expected.items():
            param = module.lora_A if key.endswith("lora_A") else module.lora_B
            param.copy_(state[key])


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Soma cada adaptador aos pesos e devolve ao modelo camadas ``nn.Linear`` comuns.

    Depois disso o modelo não tem mais LoRA (pode receber outro adaptador com
    ``apply_lora``, como o DPO faz sobre o modelo ajustado a instruções). Os pesos das
    camadas continuam congelados.

    Returns:
        Quantas camadas foram somadas.
    """
    count = 0
    for name, module in list(_lora_modules(model).items()):
        if not module.merged:
            module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.base)
        count += 1
    return count


@contextlib.contextmanager
def disable_lora(model: nn.Module) -> Iterator[nn.Module]:
    """Desliga as camadas LoRA dentro do bloco ``with``: o modelo calcula como o modelo base.

    Útil para obter as saídas do modelo de referência sem guardar uma segunda cópia
    (a DPO compara a política com a referência)::

        with disable_lora(model):
            ref_logits = model(idx)

    Raises:
        ValueError: o modelo não tem camadas LoRA, ou alguma está somada aos pesos
            (``merge``) e por isso não pode ser desligada.
    """
    modules = list(_lora_modules(model).values())
    if not modules:
        raise ValueError("disable_lora: o modelo não tem camadas LoRA.")
    if any(m.merged for m in modules):
        raise ValueError("disable_lora: há camadas LoRA somadas aos pesos (merge); chame unmerge antes de desligá-las.")
    previous = [m.enabled for m in modules]
    for m in modules:
        m.enabled = False
    try:
        yield model
    finally:
        for m, state in zip(modules, previous):
            m.enabled = state


# ----------------------------------------------------------------------------- em disco
def adapter_file(path: str | os.PathLike) -> Path:
    """O arquivo ``adapter.safetensors`` de uma pasta de adaptador (ou o próprio caminho, se já é o arquivo)."""
    path = Path(path)
    return path / ADAPTER_FILE if path.is_dir() or path.suffix != ".safetensors" else path


def save_lora_adapter(
    path: str | os.PathLike,
    model: nn.Module,
    config: LoRAConfig,
    **info: Any,
) -> Path:
    """Grava só o adaptador (alguns MB) em safetensors, de forma atômica.

    Args:
        path: uma pasta (grava ``PASTA/adapter.safetensors``; a pasta é criada) ou um
            arquivo ``.safetensors``.
        model: o modelo com as camadas LoRA.
        config: a ``LoRAConfig`` usada em ``apply_lora`` (vai nos metadados).
        **info: valores de JSON a guardar nos metadados (a tarefa, a semente, o
            adaptador de base...).

    Returns:
        O caminho do arquivo gravado.

    Raises:
        TypeError: ``config`` não é ``LoRAConfig`` ou ``info`` não é JSON.
        ValueError: o modelo não tem camadas LoRA.
    """
    from safetensors.torch import save as save_bytes

    from companion.checkpoint import atomic_write_bytes

    if not isinstance(config, LoRAConfig):
        raise TypeError(f"config deve ser um LoRAConfig; recebi {type(config).__name__}.")
    tensors = {k: v.detach().cpu().contiguous() for k, v in lora_state_dict(model).items()}
    try:
        info_json = json.dumps(info, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"save_lora_adapter: os valores extras precisam ser JSON ({error}).") from error
    metadata = {"format": ADAPTER_FORMAT, "lora_config": json.dumps(config.to_dict()), "info": info_json}
    file = adapter_file(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(file, save_bytes(tensors, metadata=metadata))


def read_adapter_metadata(path: str | os.PathLike) -> tuple[LoRAConfig, dict[str, Any]]:
    """A ``LoRAConfig`` e os valores extras gravados num adaptador, sem carregar os tensores.

    Raises:
        FileNotFoundError: o arquivo não existe.
        ValueError: o arquivo não é um adaptador do ``companion`` (ou está corrompido).
    """
    from safetensors import SafetensorError, safe_open

    file = adapter_file(path)
    if not file.is_file():
        raise FileNotFoundError(f"adaptador LoRA não encontrado: {file} (grave-o com save_lora_adapter).")
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{file} está truncado ou corrompido ({error}).") from error
    if metadata.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{file} não é um adaptador LoRA do companion (falta format={ADAPTER_FORMAT!r}).")
    cfg = json.loads(metadata["lora_config"])
    return LoRAConfig(**cfg), json.loads(metadata.get("info", "{}"))


def load_lora_adapter(path: str | os.PathLike, model: nn.Module, merge: bool = False) -> dict[str, Any]:
    """Aplica ao modelo o adaptador gravado: ``apply_lora`` com a configuração salva + os pesos.

    Args:
        path: a pasta (com ``adapter.safetensors``) ou o arquivo.
        model: o modelo base (sem LoRA), com a mesma arquitetura do treino.
        merge: soma o adaptador aos pesos (``merge_lora``) — para só usar o modelo, ou
            para empilhar outro adaptador por cima.

    Returns:
        Os valores extras gravados (``info``) mais ``"lora_config"``.

    Raises:
        FileNotFoundError / ValueError: como em ``read_adapter_metadata`` e
            ``load_lora_state_dict``.
    """
    from safetensors.torch import load_file

    cfg, info = read_adapter_metadata(path)
    apply_lora(model, cfg.targets, cfg.r, cfg.alpha, cfg.dropout)
    state = load_file(str(adapter_file(path)))
    load_lora_state_dict(model, state)
    if merge:
        merge_lora(model)
    return {**info, "lora_config": cfg.to_dict()}

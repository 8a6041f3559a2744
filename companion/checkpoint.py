"""*Checkpoints* de treino em safetensors, sem pickle e sem arquivo pela metade (cap. 5).

Um *checkpoint* guarda tudo o que é preciso para continuar um treino exatamente de onde
ele parou: os pesos do modelo, o estado do otimizador (os momentos do AdamW) e o que mais
o laço de treino quiser (o passo, o histórico das perdas, as configurações...).

Por que safetensors e não ``torch.save``? ``torch.save`` usa o pickle do Python, e abrir
um pickle de origem desconhecida pode executar código arbitrário. Um arquivo safetensors
é só um cabeçalho JSON seguido dos bytes dos tensores: ler não executa nada.

O formato deste módulo, dentro de um único arquivo ``.safetensors``:

- ``model.<nome>``: cada tensor do ``state_dict`` do modelo. Pesos compartilhados (a
  cabeça de saída amarrada ao *embedding*) são gravados uma vez só; os apelidos ficam
  nos metadados;
- ``optimizer.<i>.<nome>``: cada tensor do estado do otimizador, achatado (``i`` é o
  índice do parâmetro); o resto (os ``param_groups`` e os escalares) vai como JSON;
- ``state.<nome>``: os tensores passados em ``**state``;
- metadados (texto): o formato, a versão, a configuração do modelo (se ele tiver
  ``cfg``) e os valores de ``**state`` que não são tensores, em JSON.

A gravação é atômica: escrevemos num arquivo temporário na mesma pasta, forçamos os
bytes para o disco (``fsync``), só então o renomeamos (``os.replace``) por cima do destino
e forçamos também a pasta (a troca de nome fica gravada mesmo se faltar energia). Se o
processo morrer no meio, o *checkpoint* anterior continua inteiro.

Na leitura, duas conferências que o safetensors sozinho não faz: o sha256 dos bytes dos
tensores, gravado nos metadados (um byte trocado no disco vira um erro claro, não pesos
errados em silêncio), e a configuração gravada contra a do modelo de destino (um
*checkpoint* de 4 cabeças não entra num modelo de 2, mesmo que os formatos coincidam).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_metadata",
    "tensors_sha256",
    "atomic_write_bytes",
    "atomic_write_json",
]

CHECKPOINT_FORMAT = "companion-checkpoint"
CHECKPOINT_VERSION = "2"  # 2: sha256 dos tensores nos metadados

_MODEL = "model."
_OPTIM = "optimizer."
_STATE = "state."


# ----------------------------------------------------------------------------- escrita atômica
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Grava ``data`` em ``path`` de forma atômica (temporário na mesma pasta + ``os.replace``).

    Args:
        path: o arquivo de destino (a pasta precisa existir).
        data: o conteúdo.

    Returns:
        O caminho gravado.

    Raises:
        FileNotFoundError: se a pasta de destino não existir.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"a pasta {path.parent} não existe; crie-a antes de gravar {path.name}.")
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)  # as permissões de um arquivo comum (mkstemp cria 0600)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # os bytes estão no disco antes da troca de nome
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Força para o disco a entrada da pasta (a troca de nome sobrevive a uma queda de energia)."""
    if os.name != "posix":  # no Windows não se abre uma pasta para fsync
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Grava ``obj`` como JSON legível (UTF-8, indentado), de forma atômica."""
    text = json.dumps(obj, ensure_ascii=False, indent=2) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- gravação
def tensors_sha256(tensors: dict[str, Tensor]) -> str:
    """sha256 dos nomes, formatos, tipos e bytes dos tensores, em ordem de nome (independe do cabeçalho)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _shared_aliases(state_dict: dict[str, Tensor]) -> dict[str, str]:
    """Chaves que apontam para o mesmo tensor de outra chave anterior: ``{apelido: original}``."""
    seen: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state_dict.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
    return aliases


def _to_json(value: Any, where: str) -> Any:
    """Confere que ``value`` vira JSON (e devolve a versão que volta igual de ``json.loads``)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{where} não pode ser gravado no checkpoint: use tensores ou valores de JSON "
            f"(números, textos, listas, dicionários); recebi {type(value).__name__} ({error})."
        ) from error


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    **state: Any,
) -> Path:
    """Grava um *checkpoint* (pesos, otimizador e estado extra) num arquivo safetensors.

    Args:
        path: o arquivo (por convenção ``.../checkpoint.safetensors``); a pasta precisa existir.
        model: o modelo (se tiver ``cfg`` dataclass, como o ``GPTModel``, a configuração
            também é gravada, e ``load_checkpoint`` a compara com a do modelo de destino).
        optimizer: o otimizador, para retomar o treino exatamente (opcional).
        **state: o que mais guardar. Tensores vão como tensores (por exemplo o estado
            do gerador aleatório, ``torch.get_rng_state()``); o resto precisa ser JSON
            (números, textos, listas, dicionários).

    Returns:
        O caminho gravado.

    Raises:
        TypeError: ``model``/``optimizer`` de tipo errado ou valor de ``state`` que não é
            tensor nem JSON.
        FileNotFoundError: se a pasta de destino não existir.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model deve ser um torch.nn.Module; recebi {type(model).__name__}.")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer deve ser um torch.optim.Optimizer ou None; recebi {type(optimizer).__name__}.")

    tensors: dict[str, Tensor] = {}
    model_state = model.state_dict()
    aliases = _shared_aliases(model_state)
    for name, tensor in model_state.items():
        if name not in aliases:
            tensors[_MODEL + name] = tensor.detach().cpu().contiguous()

    metadata: dict[str, str] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "aliases": json.dumps(aliases),
    }
    cfg = getattr(model, "cfg", None)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        metadata["model_config"] = json.dumps(dataclasses.asdict(cfg))

    if optimizer is not None:
        optim_state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, param_state in optim_state["state"].items():
            for name, value in param_state.items():
                if isinstance(value, Tensor):
                    tensors[f"{_OPTIM}{index}.{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(index), {})[name] = _to_json(value, f"optimizer.state[{index}][{name!r}]")
        metadata["optimizer"] = json.dumps(
            {
                "param_groups": _to_json(optim_state["param_groups"], "optimizer.param_groups"),
                "scalars": scalars,
                "indices": [int(i) for i in optim_state["state"]],
            }
        )

    extra: dict[str, Any] = {}
    for name, value in state.items():
        if isinstance(value, Tensor):
            tensors[_STATE + name] = value.detach().cpu().contiguous()
        else:
            extra[name] = _to_json(value, f"o valor de state[{name!r}]")
    metadata["state"] = json.dumps(extra, ensure_ascii=False)
    metadata["tensors_sha256"] = tensors_sha256(tensors)

    return atomic_write_bytes(path, save_bytes(tensors, metadata=metadata))


# ----------------------------------------------------------------------------- leitura
def _open_checkpoint(path: str | os.PathLike) -> tuple[Path, dict[str, str]]:
    """Confere que o arquivo existe e é um checkpoint deste módulo; devolve os metadados."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint não encontrado: {path}. Confira o caminho (o comando train grava "
            "PASTA/checkpoint.safetensors)."
        )
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"o arquivo {path} está truncado ou corrompido e não pode ser lido como safetensors "
            f"({error}). Talvez a gravação tenha sido interrompida: use uma cópia anterior ou treine de novo."
        ) from error
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} é um arquivo safetensors, mas não um checkpoint do companion "
            f"(falta format={CHECKPOINT_FORMAT!r} nos metadados); grave-o com save_checkpoint."
        )
    if metadata.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} tem a versão {metadata.get('version')!r} do formato; este pacote lê a {CHECKPOINT_VERSION}. "
            "Carregue-o com a versão do pacote que o gravou e grave de novo com save_checkpoint."
        )
    return path, metadata


def _check_model_config(path: Path, metadata: dict[str, str], model: nn.Module) -> None:
    """Recusa um *checkpoint* cuja configuração gravada difere da do modelo (nomeando o campo)."""
    cfg = getattr(model, "cfg", None)
    if "model_config" not in metadata or not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return
    saved = json.loads(metadata["model_config"])
    current = dataclasses.asdict(cfg)
    for name in sorted(set(saved) | set(current)):
        if saved.get(name) != current.get(name):
            raise ValueError(
                f"o checkpoint {path} foi gravado com {name}={saved.get(name)!r}, mas o modelo de destino tem "
                f"{name}={current.get(name)!r}. Crie o modelo com a configuração do treino "
                "(ela está no próprio checkpoint: read_checkpoint_metadata(...)['model_config'])."
            )


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Lê só os metadados de um *checkpoint* (sem carregar os tensores).

    Args:
        path: o arquivo ``.safetensors`` ou a pasta que contém ``checkpoint.safetensors``.

    Returns:
        ``{"model_config": dict | None, "state": dict}`` — a configuração do modelo
        gravada e os valores de ``**state`` que não são tensores.

    Raises:
        FileNotFoundError: arquivo inexistente.
        ValueError: arquivo truncado, corrompido ou de outro formato.
    """
    _, metadata = _open_checkpoint(path)
    config = metadata.get("model_config")
    return {"model_config": None if config is None else json.loads(config), "state": json.loads(metadata["state"])}


def _check_model_tensors(path: Path, model_state: dict[str, Tensor], saved: dict[str, Tensor]) -> None:
    """Erros claros quando o checkpoint é de outra configuração (nome do tensor e os dois formatos)."""
    for name, tensor in model_state.items():
        if name not in saved:
            raise ValueError(
                f"o checkpoint {path} não tem o tensor {name!r} que o modelo espera: ele foi gravado "
                "por outro tipo de modelo ou por outra configuração."
            )
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"o checkpoint {path} é de outra configuração: o tensor {name!r} tem formato "
                f"{tuple(saved[name].shape)} no checkpoint, mas {tuple(tensor.shape)} no modelo. "
                "Crie o modelo com a mesma configuração usada no treino (veja config.json ao lado do checkpoint)."
            )
    unexpected = sorted(set(saved) - set(model_state))
    if unexpected:
        raise ValueError(
            f"o checkpoint {path} tem tensores que o modelo não tem ({', '.join(unexpected[:5])}"
            f"{'...' if len(unexpected) > 5 else ''}): ele é de outra arquitetura ou configuração."
        )


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, Any]:
    """Carrega um *checkpoint* de ``save_checkpoint`` no modelo (e no otimizador).

    Os pesos são copiados para o *device* do modelo; o estado do otimizador vai para o
    *device* dos parâmetros.

    Args:
        path: o arquivo ``.safetensors`` ou a pasta que contém ``checkpoint.safetensors``.
        model: um modelo da MESMA configuração do que foi gravado.
        optimizer: se dado, recebe o estado gravado (o *checkpoint* precisa tê-lo).

    Returns:
        O ``**state`` gravado: valores JSON e tensores, pelo mesmo nome.

    Raises:
        FileNotFoundError: arquivo inexistente.
        ValueError: arquivo truncado/corrompido (também um byte trocado nos tensores), de outro
            formato, de outra configuração (a mensagem nomeia o campo ou o tensor) ou sem
            estado de otimizador.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model deve ser um torch.nn.Module; recebi {type(model).__name__}.")
    path, metadata = _open_checkpoint(path)
    try:
        tensors = load_bytes(path.read_bytes())
    except (SafetensorError, ValueError) as error:  # cabeçalho lido, mas os dados não batem
        raise ValueError(f"o arquivo {path} está truncado ou corrompido ({error}).") from error
    if tensors_sha256(tensors) != metadata.get("tensors_sha256"):
        raise ValueError(
            f"o arquivo {path} está corrompido: o sha256 dos tensores não bate com o gravado nos metadados "
            "(algum byte mudou no disco). Use uma cópia anterior ou treine de novo."
        )

    saved_model = {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    for alias, original in json.loads(metadata["aliases"]).items():
        saved_model[alias] = saved_model[original]
    _check_model_tensors(path, model.state_dict(), saved_model)
    _check_model_config(path, metadata, model)  # mesmos formatos não bastam (n_heads, tie_weights...)
    model.load_state_dict(saved_model)

    if optimizer is not None:
        if "optimizer" not in metadata:
            raise ValueError(
                f"o checkpoint {path} não tem o estado do otimizador (foi gravado sem optimizer); "
                "carregue só o modelo, com optimizer=None."
            )
        info = json.loads(metadata["optimizer"])
        optim_state: dict[int, dict[str, Any]] = {}
        for index in info["indices"]:
            optim_state[index] = dict(info["scalars"].get(str(index), {}))
        for key, value in tensors.items():
            if key.startswith(_OPTIM):
                index, name = key[len(_OPTIM) :].split(".", 1)
                optim_state[int(index)][name] = value
        try:
            optimizer.load_state_dict({"state": optim_state, "param_groups": info["param_groups"]})
        except (ValueError, KeyError) as error:
            raise ValueError(
                f"o estado do otimizador em {path} não combina com este otimizador ({error}): "
                "ele foi gravado para outros parâmetros ou outro tipo de otimizador."
            ) from error

    state: dict[str, Any] = json.loads(metadata["state"])
    state.update({k[len(_STATE) :]: v for k, v in tensors.items() if k.startswith(_STATE)})
    return state

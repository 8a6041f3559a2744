"""Ler arquivos GGUF (o formato do llama.cpp) com o pacote ``gguf``: metadados e tensores.

Os pesos pré-treinados do curso (SmolLM2 e Gemma 3, cap. 5) chegam como GGUF
dentro de pacotes do PyPI. Aqui fica o que é comum aos dois: abrir o arquivo depressa,
ler um metadado obrigatório, desquantizar um tensor para ``float32`` e conferir que os
tensores lidos são os parâmetros do modelo.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["open_gguf", "gguf_field", "dequantize_tensor", "check_state_dict"]


def _fast_reader_class() -> type:
    """Um ``gguf.GGUFReader`` que lê os metadados ~10x mais rápido.

    O leitor original cria um ``ndarray`` pequeno para cada item de cada lista de
    metadados — 786 mil no Gemma 3 (262.144 textos, pontuações e tipos de token), ~6 s.
    Aqui, sem mudar o que ``ReaderField.contents()`` devolve:

    - os bytes mapeados são vistos como um ``ndarray`` comum (a mesma memória, sem cópia):
      fatiar um ``np.memmap`` paga uma finalização cara a cada fatia;
    - uma lista de números (pontuações, tipos de token) vira UMA visão do arquivo, em vez
      de um ``ndarray`` por número;
    - numa lista de textos, o tamanho de cada texto é lido com ``struct`` (sem criar arrays
      só para saber onde o próximo começa).

    Diferença: ``field.contents(i)`` com um índice inteiro não funciona mais em listas de
    números (use ``field.contents()[i]``); nada no pacote usa essa forma.
    """
    import struct

    import gguf
    from gguf import GGUFValueType

    read_length = struct.Struct("<Q").unpack_from  # o tamanho (uint64) de um texto do GGUF

    class FastGGUFReader(gguf.GGUFReader):
        @property
        def data(self) -> np.ndarray:
            return self._bytes

        @data.setter
        def data(self, value: np.ndarray) -> None:
            self._bytes = value.view(np.ndarray) if isinstance(value, np.memmap) else value

        def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list, list[int], list]:
            if raw_type != GGUFValueType.ARRAY or self.byte_order != "I":  # "I": a ordem de bytes da máquina
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            length = self._get(orig_offs + 4, np.uint64)
            item_type, count = GGUFValueType(int(raw_itype[0])), int(length[0])
            number_type = self.gguf_scalar_to_np.get(item_type)
            if count == 0 or (number_type is None and item_type != GGUFValueType.STRING):
                return super()._get_field_parts(orig_offs, raw_type)  # vazias e listas de listas
            offs = orig_offs + 12  # depois do tipo (uint32) e do tamanho (uint64)
            types = [GGUFValueType.ARRAY, item_type]
            if number_type is not None:
                values = self._get(offs, number_type, count)  # (count,): uma visão só
                return 12 + int(values.nbytes), [raw_itype, length, values], [2], types
            parts: list[np.ndarray] = [raw_itype, length]
            for _ in range(count):  # cada texto: tamanho (uint64) + bytes UTF-8
                (size,) = read_length(self._bytes, offs)
                parts.append(self._bytes[offs : offs + 8].view(np.uint64))
                parts.append(self._bytes[offs + 8 : offs + 8 + size])
                offs += 8 + size
            return offs - orig_offs, parts, list(range(3, len(parts), 2)), types

    return FastGGUFReader


def open_gguf(path: str | Path) -> Any:
    """Abre um arquivo GGUF para ler metadados e tensores (sem carregar tudo na memória).

    Args:
        path: o arquivo (``smollm2_gguf_path()``, ``gemma3_gguf_path()``...).

    Returns:
        Um ``gguf.GGUFReader`` (na versão rápida de ``_fast_reader_class``): ``.fields``
        tem os metadados (``.contents()`` devolve o valor) e ``.tensors`` os tensores,
        ainda quantizados, mapeados do disco.

    Raises:
        FileNotFoundError: o arquivo não existe.
        ValueError: o arquivo não é um GGUF válido.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"arquivo GGUF não encontrado: {path}")
    try:
        return _fast_reader_class()(path)
    except Exception as error:  # o leitor do gguf dá erros pouco claros para arquivos ruins
        raise ValueError(f"não consegui ler {path} como GGUF ({type(error).__name__}: {error}).") from error


def gguf_field(reader: Any, key: str) -> Any:
    """O valor do metadado ``key`` (erro claro se o arquivo não o tiver)."""
    field = reader.fields.get(key)
    if field is None:
        raise ValueError(f"o GGUF não tem o metadado obrigatório {key!r}.")
    return field.contents()


def dequantize_tensor(tensor: Any) -> np.ndarray:
    """Um tensor do GGUF em ``float32`` (formato do ``numpy``: saída x entrada), gravável e contíguo.

    Cada tipo de quantização do arquivo (F32, Q4_K, Q5_0, Q6_K, Q8_0...) é desfeito pelo
    ``gguf.quants.dequantize``. Os tensores F32 vêm como visões somente-leitura do arquivo
    mapeado: são copiados aqui (uma vez) para que o PyTorch possa usá-los.
    """
    from gguf.quants import dequantize

    array = dequantize(tensor.data, tensor.tensor_type)
    if not array.flags.writeable or not array.flags.c_contiguous or array.dtype != np.float32:
        array = np.array(array, dtype=np.float32, order="C")
    return array


def check_state_dict(model: Any, state: Mapping[str, Any]) -> None:
    """Confere que os tensores lidos de um GGUF são exatamente os parâmetros do modelo.

    Args:
        model: o modelo (um ``nn.Module``; pode estar no *device* ``meta``).
        state: nome do parâmetro -> tensor lido.

    Raises:
        ValueError: falta um parâmetro, sobra um tensor ou um formato não bate (a
            mensagem diz qual).
    """
    name = type(model).__name__
    expected = {key: tuple(p.shape) for key, p in model.named_parameters()}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"o GGUF não tem os pesos de {missing[:3]}{'...' if len(missing) > 3 else ''}.")
    for key, tensor in state.items():
        if key not in expected:
            raise ValueError(f"o GGUF tem o tensor {key!r}, que o {name} desta configuração não tem.")
        if tuple(tensor.shape) != expected[key]:
            raise ValueError(
                f"formato errado para {key}: o GGUF tem {tuple(tensor.shape)}, o {name} espera {expected[key]}."
            )

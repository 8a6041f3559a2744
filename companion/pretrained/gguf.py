"""Ler arquivos GGUF (o formato do llama.cpp) com o pacote ``gguf``: metadados e tensores.

Os pesos pré-treinados do curso (SmolLM2 no cap. 5, Gemma 3 no cap. 6) chegam como GGUF
dentro de pacotes do PyPI. Aqui fica o que é comum aos dois: abrir o arquivo depressa,
ler um metadado obrigatório e desquantizar um tensor para ``float32``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["open_gguf", "gguf_field", "dequantize_tensor"]


def _fast_reader_class() -> type:
    """Um ``gguf.GGUFReader`` que lê os metadados ~3x mais rápido.

    O leitor original mapeia o arquivo como ``np.memmap`` e fatia esse objeto uma vez
    para cada um dos ~100 mil textos do vocabulário e das fusões; cada fatia de um
    ``np.memmap`` paga uma finalização cara. Aqui os bytes mapeados são vistos como um
    ``ndarray`` comum (a mesma memória, sem cópia), e as fatias ficam baratas.
    """
    import gguf

    class FastGGUFReader(gguf.GGUFReader):
        @property
        def data(self) -> np.ndarray:
            return self._bytes

        @data.setter
        def data(self, value: np.ndarray) -> None:
            self._bytes = value.view(np.ndarray) if isinstance(value, np.memmap) else value

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

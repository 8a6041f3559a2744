"""Testes de companion/pretrained/gguf.py: o leitor rápido de GGUF e a conferência dos pesos.

O leitor rápido (``open_gguf``) precisa devolver exatamente o que o ``gguf.GGUFReader``
original devolve; a referência é um GGUF pequeno escrito aqui mesmo com o
``gguf.GGUFWriter``. Os arquivos de verdade (SmolLM2, Gemma 3) são lidos nos testes
``slow`` de ``test_smollm2.py`` e ``test_gemma3.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from companion.llama import LlamaConfig, LlamaModel
from companion.pretrained.gguf import (
    check_state_dict,
    dequantize_tensor,
    gguf_field,
    open_gguf,
)

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "pequeno.gguf"
    writer = gguf.GGUFWriter(str(path), "teste")
    writer.add_string("teste.nome", "Olá, São Paulo! 🙂")
    writer.add_uint32("teste.blocos", 18)
    writer.add_float32("teste.eps", 1e-6)
    writer.add_bool("teste.ligado", True)
    writer.add_array("teste.textos", ["<pad>", "", "▁casa", "  ", "ação", "\n"])
    writer.add_array("teste.pontos", [0.0, -1.5, -1000.0, 3.25])
    writer.add_array("teste.tipos", [3, 1, 1, 6])
    writer.add_array("teste.vazia", [])
    writer.add_array("teste.listas", [[1, 2], [3]])
    writer.add_tensor("pesos", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_fast_reader_reads_what_the_original_reads(small_gguf):
    fast, original = open_gguf(small_gguf), gguf.GGUFReader(small_gguf)
    assert list(fast.fields) == list(original.fields)
    for key, field in original.fields.items():
        assert fast.fields[key].contents() == field.contents(), key
        assert fast.fields[key].types == field.types, key
    assert gguf_field(fast, "teste.textos") == ["<pad>", "", "▁casa", "  ", "ação", "\n"]
    assert gguf_field(fast, "teste.pontos") == [0.0, -1.5, -1000.0, 3.25]
    assert len(fast.fields["teste.textos"].data) == 6  # quantos itens, sem decodificá-los
    assert [t.name for t in fast.tensors] == ["pesos"]
    np.testing.assert_array_equal(dequantize_tensor(fast.tensors[0]), np.arange(12, dtype=np.float32).reshape(3, 4))


def test_dequantized_tensor_is_writable(small_gguf):
    array = dequantize_tensor(open_gguf(small_gguf).tensors[0])
    assert array.flags.writeable and array.flags.c_contiguous and array.dtype == np.float32
    array -= 1.0  # o carregador do Gemma 3 faz isto nas normalizações


def test_gguf_field_names_the_missing_key(small_gguf):
    with pytest.raises(ValueError, match="metadado obrigatório 'nada'"):
        gguf_field(open_gguf(small_gguf), "nada")


def test_check_state_dict_names_the_problem():
    model = LlamaModel(LlamaConfig.preset("llama-mini", vocab_size=50))
    good = {k: v.clone() for k, v in model.state_dict().items()}
    check_state_dict(model, good)
    with pytest.raises(ValueError, match=r"blocks.0.attn.k_proj.weight: o GGUF tem \(64, 64\), o LlamaModel espera \(32, 64\)"):
        check_state_dict(model, {**good, "blocks.0.attn.k_proj.weight": torch.zeros(64, 64)})
    with pytest.raises(ValueError, match=r"não tem os pesos de \['final_norm.weight'\]"):
        check_state_dict(model, {k: v for k, v in good.items() if k != "final_norm.weight"})
    with pytest.raises(ValueError, match="tem o tensor 'out_head.weight', que o LlamaModel"):
        check_state_dict(model, {**good, "out_head.weight": torch.zeros(50, 64)})

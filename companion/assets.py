"""Arquivos que acompanham o pacote — dados e artefatos treinados —, verificados por sha256.

Todo arquivo em ``companion/assets/`` que o curso lê tem o seu hash em
``companion/assets/SHA256SUMS``. Há dois tipos:

- dados (``corpus_ptbr.txt``, ``finetune/mensagens.jsonl``...): ``asset_path(nome)``;
- artefatos de treinos longos, feitos pela linha de comando e publicados com o pacote
  (``artefatos/cap5-treino``, ``artefatos/gemma-instrucoes-lora``...): ``artifact_path(nome)``
  devolve a pasta depois de conferir todos os arquivos dela.

Por virem dentro do pacote instalado, funcionam igual num clone do repositório, num
``pip install`` e num notebook aberto sozinho no Colab.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
SUMS_FILE = ASSETS_DIR / "SHA256SUMS"
ARTIFACTS_PREFIX = "artefatos/"


def sha256_of(path: str | Path) -> str:
    """Hash sha256 (hexadecimal) do conteúdo de um arquivo."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_sha256(name: str) -> str:
    """Hash publicado em SHA256SUMS para o arquivo ``name`` (caminho relativo a assets/)."""
    for line in SUMS_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, file_name = line.partition("  ")
        if file_name.strip() == name:
            return digest.strip()
    raise KeyError(f"O arquivo {name!r} não está listado em {SUMS_FILE}.")


def _listed(prefix: str) -> list[str]:
    """Os arquivos de SHA256SUMS cujo nome começa com ``prefix``."""
    names = []
    for line in SUMS_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name = line.partition("  ")[2].strip()
            if name.startswith(prefix):
                names.append(name)
    return names


def artifacts() -> list[str]:
    """Os nomes dos artefatos publicados com o pacote (as pastas de ``assets/artefatos``)."""
    return sorted({name.split("/")[1] for name in _listed(ARTIFACTS_PREFIX)})


def artifact_path(name: str, verify: bool = True) -> Path:
    """A pasta de um artefato publicado com o pacote, com todos os arquivos conferidos.

    Args:
        name: o nome do artefato (``"cap5-treino"``, ``"gemma-instrucoes-lora"``...; veja ``artifacts()``).
        verify: confere o sha256 de cada arquivo da pasta.

    Returns:
        O caminho da pasta.

    Raises:
        ValueError: artefato desconhecido (a mensagem lista os que existem) ou arquivo alterado.
        FileNotFoundError: um arquivo do artefato sumiu.
    """
    files = _listed(f"{ARTIFACTS_PREFIX}{name}/")
    if not files:
        raise ValueError(f"artefato desconhecido: {name!r}. Os publicados com o pacote são: {', '.join(artifacts())}.")
    for file in files:
        asset_path(file, verify=verify)
    return ASSETS_DIR / ARTIFACTS_PREFIX / name


def asset_path(name: str, verify: bool = True) -> Path:
    """Caminho de um arquivo de dados do pacote, conferido por sha256.

    Raises:
        FileNotFoundError: se o arquivo não existir.
        ValueError: se o conteúdo não bater com o hash publicado (arquivo alterado
            ou corrompido).
    """
    path = ASSETS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"Arquivo de dados do curso não encontrado: {path}")
    if verify:
        expected, actual = expected_sha256(name), sha256_of(path)
        if expected != actual:
            raise ValueError(
                f"O arquivo {path.name} foi alterado ou está corrompido: sha256 {actual}, "
                f"mas o publicado é {expected}. Reinstale o pacote ou restaure o arquivo."
            )
    return path

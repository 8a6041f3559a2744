"""Arquivos de dados que acompanham o pacote, verificados por sha256.

Todo arquivo em ``companion/assets/`` que o curso lê tem o seu hash em
``companion/assets/SHA256SUMS``; ``asset_path`` só devolve o caminho depois de
conferir que o conteúdo é exatamente o publicado.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
SUMS_FILE = ASSETS_DIR / "SHA256SUMS"


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

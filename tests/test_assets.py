import hashlib
from pathlib import Path

import pytest

from companion import assets


@pytest.fixture
def fake_assets(tmp_path, monkeypatch):
    data = "Olá, mundo! O céu está azul.\n".encode("utf-8")
    (tmp_path / "texto.txt").write_bytes(data)
    (tmp_path / "SHA256SUMS").write_text(f"{hashlib.sha256(data).hexdigest()}  texto.txt\n", encoding="utf-8")
    monkeypatch.setattr(assets, "ASSETS_DIR", tmp_path)
    monkeypatch.setattr(assets, "SUMS_FILE", tmp_path / "SHA256SUMS")
    return tmp_path


def test_asset_path_returns_verified_file(fake_assets):
    assert assets.asset_path("texto.txt").read_text(encoding="utf-8").startswith("Olá")


def test_changed_file_is_refused_with_both_hashes(fake_assets):
    (fake_assets / "texto.txt").write_text("alterado", encoding="utf-8")
    with pytest.raises(ValueError, match="alterado ou está corrompido"):
        assets.asset_path("texto.txt")
    assert assets.asset_path("texto.txt", verify=False).read_text(encoding="utf-8") == "alterado"


def test_missing_file_and_unlisted_file(fake_assets):
    with pytest.raises(FileNotFoundError, match="não encontrado"):
        assets.asset_path("nao_existe.txt")
    (fake_assets / "solto.txt").write_text("x", encoding="utf-8")
    with pytest.raises(KeyError, match="não está listado"):
        assets.asset_path("solto.txt")


def test_every_listed_asset_matches_its_hash():
    listed = [
        line.split("  ", 1)[1].strip()
        for line in assets.SUMS_FILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert listed, "SHA256SUMS está vazio"
    for name in listed:
        assert assets.sha256_of(assets.ASSETS_DIR / name) == assets.expected_sha256(name), name


def test_sha256_of_matches_hashlib(tmp_path: Path):
    path = tmp_path / "grande.bin"
    payload = bytes(range(256)) * 9000  # maior que um bloco de leitura
    path.write_bytes(payload)
    assert assets.sha256_of(path) == hashlib.sha256(payload).hexdigest()

"""O site construído, visto por um navegador de verdade (Chromium sem interface).

Confere, em cada página do sumário: nenhuma requisição sai da máquina, as fórmulas
são compostas pelo MathJax local, os widgets guardados aparecem, e o botão do Colab
abre a cópia para o Colab da própria página (branch `colab` do repositório configurado,
gerada por .ci/colab_notebooks.py). Também confere a busca.
Guarda uma captura de tela de cada página em _build/screenshots/.

Precisa do site em _build/html (construído por `bash .ci/setup`) e do Chromium.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"


def _missing(reason: str) -> None:
    # Na CI, faltar o site ou o navegador é um erro; numa máquina de desenvolvimento, um aviso.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _toc_pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return pages


def _repository() -> tuple[str, str]:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    return config["repository"]["url"].rstrip("/"), config["repository"]["branch"]


@pytest.fixture(scope="module")
def site_url():
    if not (SITE / "index.html").is_file():
        _missing("o site não foi construído: rode `bash .ci/setup` antes")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # sem ruído na saída dos testes
        pass


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        _missing("Chromium não encontrado (o `bash .ci/setup` o instala quando roda como root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield chromium
        chromium.close()


def _open(browser, url: str):
    """Abre `url` bloqueando (e anotando) toda requisição que não seja para esta máquina."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside: list[str] = []

    def guard(route) -> None:
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:", "about:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.goto(url, wait_until="networkidle")
    return page, outside


@pytest.mark.parametrize("doc", _toc_pages())
def test_page_renders_offline(doc, site_url, browser):
    html_file = SITE / f"{doc}.html"
    assert html_file.is_file(), f"página não gerada: {html_file}"
    source = html_file.read_text(encoding="utf-8")
    page, outside = _open(browser, f"{site_url}/{doc}.html")
    try:
        if 'class="math' in source:
            page.wait_for_selector("mjx-container", state="attached", timeout=60_000)
            assert page.locator(".math mjx-container, mjx-container").count() > 0
        if "application/vnd.jupyter.widget-view+json" in source:  # um widget exibido (não só o estado guardado)
            page.wait_for_selector(".jupyter-widgets", state="attached", timeout=60_000)
            assert page.locator(".jupyter-widgets").count() > 0
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{doc.replace('/', '__')}.png"), full_page=False)
    finally:
        page.close()
    assert outside == [], f"requisições para fora da máquina: {outside}"


@pytest.mark.parametrize("doc", [d for d in _toc_pages() if (ROOT / f"{d}.ipynb").is_file()])
def test_colab_link_opens_the_colab_copy_of_the_page(doc):
    source = (SITE / f"{doc}.html").read_text(encoding="utf-8") if (SITE / f"{doc}.html").is_file() else None
    if source is None:
        _missing("o site não foi construído: rode `bash .ci/setup` antes")
    repo_url, _ = _repository()
    owner_repo = urlparse(repo_url).path.strip("/")
    # a cópia para o Colab fica no mesmo caminho, na branch `colab` (.ci/colab_notebooks.py)
    expected = f"https://colab.research.google.com/github/{owner_repo}/blob/colab/{doc}.ipynb"
    links = re.findall(r'href="(https://colab\.research\.google\.com/[^"]+)"', source)
    assert set(links) == {expected}, f"link do Colab esperado {expected}, encontrados {links}"
    assert (ROOT / f"{doc}.ipynb").is_file()


def test_search_finds_pages(site_url, browser):
    page, outside = _open(browser, f"{site_url}/search.html?q=token")
    try:
        page.wait_for_selector("#search-results li, .search li", state="attached", timeout=60_000)
        assert page.locator("#search-results li, .search li").count() > 0
    finally:
        page.close()
    assert outside == []

"""Simulação do Colab: cada capítulo, aberto sozinho, roda do começo ao fim.

Fica fora do `python -m pytest` comum (marca `colab`, desmarcada em `addopts`); a CI
roda à parte, e você também pode:

    OMP_WAIT_POLICY=PASSIVE python -m pytest -m colab tests/test_colab.py

Como o Colab é simulado, sem rede além do PyPI:

1. um ambiente virtual novo, só com os pacotes de base do Colab (`BASE_PACKAGES`,
   versões fixas; o PyTorch 2.13.0 de CPU e o transformers, que o Colab também traz);
2. um módulo `google.colab` de mentira, importado por `sitecustomize.py`, como o kernel
   do Colab faz: a célula de configuração toma o caminho do Colab;
3. o endereço do repositório de `_config.yml` redirecionado para este clone com
   `url.<clone>.insteadOf` do git (num arquivo apontado por `GIT_CONFIG_GLOBAL`): o
   `%pip install "llm-do-zero @ git+..."` da primeira célula instala o pacote daqui, sem
   ir ao GitHub. **O git clona o commit atual (HEAD), não a árvore de trabalho: mudanças
   não commitadas no pacote não são testadas aqui** — faça o commit antes;
4. cada cópia para o Colab (`.ci/colab_notebooks.py`) roda sozinha numa pasta vazia,
   com nbclient. Depois de cada uma, o ambiente volta ao estado de base (o que a primeira
   célula instalou sai), como um Colab novo; o ambiente em si é criado uma vez por execução.

Células com a tag `nbval-skip` não rodam: são as que precisam de internet além do PyPI
(baixar o GPT-2 do Hugging Face), que o livro também não executa nos testes.

Variáveis de ambiente:
- `COLAB_SIM_NOTEBOOKS`: trechos de caminho separados por vírgula (só esses capítulos);
- `COLAB_SIM_VENV`: pasta de um ambiente para reaproveitar entre execuções (desenvolvimento);
- `COLAB_SIM_NEW_SETUP=1`: troca a célula de configuração pelo modelo atual de
  `.ci/execute_notebooks.py` antes de rodar (para testar o modelo antes de reexecutar os
  notebooks).

Os tempos (criação do ambiente e cada capítulo) vão para `_build/colab-sim/tempos.json`;
cada notebook executado e o seu relatório, para `_build/colab-sim/executados/`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "_build" / "colab-sim" / "tempos.json"
CELL_TIMEOUT = 1800  # segundos por célula: o Colab de CPU é lento, e o da CI também
# O que o Colab já traz e os capítulos usam (versões de requirements.txt). O PyTorch é o de
# CPU que está no disco da máquina: nunca sem versão (viria uma build com CUDA de vários GB).
# O transformers também vem no Colab (com safetensors e huggingface_hub): o cap. 5 o usa
# para comparar o GPT-2 da Hugging Face com o nosso.
BASE_PACKAGES = [
    "torch==2.13.0",
    "numpy==2.4.6",
    "matplotlib==3.11.2",
    "ipywidgets==8.1.9",
    "tqdm==4.70.1",
    "transformers==5.23.0",
    "ipykernel==7.4.0",
    "nbclient==0.11.0",
    "nbformat==5.11.1",
]

pytestmark = pytest.mark.colab


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


colab_notebooks = _load("colab_notebooks")


def _selected_notebooks() -> list[str]:
    docs = [e.docname for e in colab_notebooks.toc_entries(ROOT) if e.path.suffix == ".ipynb"]
    wanted = [w.strip() for w in os.environ.get("COLAB_SIM_NOTEBOOKS", "").split(",") if w.strip()]
    return [d for d in docs if not wanted or any(w in d for w in wanted)]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, check=False, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"falhou: {' '.join(args)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _installed(python: Path) -> dict[str, str]:
    listing = _run([str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"]).stdout
    return {p["name"].lower(): p["version"] for p in json.loads(listing)}


SITECUSTOMIZE = '''\
# Simulação do Colab (tests/test_colab.py): o kernel do Colab já importou google.colab.
import google.colab  # noqa: F401
'''
STAND_IN = '''\
"""Módulo de mentira: só existe para que `"google.colab" in sys.modules` seja verdade."""
'''

RUNNER = textwrap.dedent(
    r'''
    """Executa um notebook célula a célula, como o leitor no Colab, e anota tempos e erros."""
    import json, os, re, sys, time
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook, report_path, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": os.getcwd()}})
    report = {"cells": [], "skipped": [], "error": None}
    start = time.perf_counter()
    with client.setup_kernel():
        report["kernel"] = list(client.km.kernel_spec.argv)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if "nbval-skip" in cell.metadata.get("tags", []):
                report["skipped"].append(index)
                continue
            began = time.perf_counter()
            try:
                client.execute_cell(cell, index)
            except CellExecutionError as error:
                message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))[-4000:]  # sem as cores do traceback
                report["error"] = {"cell": index, "source": cell.source[:400], "message": message}
                break
            finally:
                report["cells"].append([index, round(time.perf_counter() - began, 2)])
    report["total"] = round(time.perf_counter() - start, 1)
    nbformat.write(nb, report_path[: -len(".json")] + ".ipynb")  # o notebook executado, para investigar
    with open(report_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    sys.exit(1 if report["error"] else 0)
    '''
).lstrip()


class ColabSimulation:
    """O ambiente simulado: venv de base, cópias para o Colab e o redirecionamento do git."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        reuse = os.environ.get("COLAB_SIM_VENV")
        self.venv = Path(reuse).resolve() if reuse else workdir / "venv"
        self.python = self.venv / "bin" / "python"
        self.times: dict = {"venv_s": None, "venv_reused": False, "notebooks": {}}

    # -- ambiente -------------------------------------------------------------

    def create_venv(self) -> None:
        stamp = self.venv / "colab-sim-base.json"
        if stamp.is_file() and json.loads(stamp.read_text())["packages"] == BASE_PACKAGES:
            self.times["venv_reused"] = True
            self.base = json.loads(stamp.read_text())["installed"]
            self.restore()
            return
        start = time.perf_counter()
        _run([sys.executable, "-m", "venv", "--clear", str(self.venv)])
        _run([str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *BASE_PACKAGES])
        purelib = Path(_run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
        # google/ sem __init__.py: pacote de namespace, como o de verdade (google.protobuf etc.)
        (purelib / "google" / "colab").mkdir(parents=True, exist_ok=True)
        (purelib / "google" / "colab" / "__init__.py").write_text(STAND_IN, encoding="utf-8")
        (purelib / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        self.base = _installed(self.python)
        stamp.write_text(json.dumps({"packages": BASE_PACKAGES, "installed": self.base}, indent=1), encoding="utf-8")
        self.times["venv_s"] = round(time.perf_counter() - start, 1)

    def restore(self) -> None:
        """Desinstala o que os capítulos instalaram: o próximo começa de um Colab novo."""
        now = _installed(self.python)
        extra = sorted(name for name in now if name not in self.base)
        if extra:
            _run([str(self.python), "-m", "pip", "uninstall", "-y", "-q", *extra])
        if any(now.get(name) != version for name, version in self.base.items()):
            _run([str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *BASE_PACKAGES])

    def env(self) -> dict[str, str]:
        """Ambiente dos processos do notebook: só o venv, o git redirecionado, 1 núcleo calmo."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER", "IPYTHON", "CONDA", "MPL", "GIT_"))
        }
        jupyter = self.workdir / "jupyter"
        env.update(
            PATH=f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            VIRTUAL_ENV=str(self.venv),
            GIT_CONFIG_GLOBAL=str(self.gitconfig),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_TERMINAL_PROMPT="0",
            OMP_WAIT_POLICY="PASSIVE",
            PYDEVD_DISABLE_FILE_VALIDATION="1",
            JUPYTER_DATA_DIR=str(jupyter / "data"),
            JUPYTER_CONFIG_DIR=str(jupyter / "config"),
            JUPYTER_RUNTIME_DIR=str(jupyter / "runtime"),
            IPYTHONDIR=str(jupyter / "ipython"),
        )
        return env

    def redirect_repository(self) -> None:
        repo = colab_notebooks.read_repository(ROOT)
        self.gitconfig = self.workdir / "gitconfig"
        self.gitconfig.write_text(
            f'[url "{ROOT}"]\n\tinsteadOf = {repo.url}\n[safe]\n\tdirectory = *\n', encoding="utf-8"
        )

    def convert(self) -> None:
        self.notebooks = self.workdir / "colab"
        colab_notebooks.convert_book(self.notebooks, ROOT)
        if os.environ.get("COLAB_SIM_NEW_SETUP") == "1":
            import nbformat

            execute_notebooks = _load("execute_notebooks")
            repo_url = colab_notebooks.read_repository(ROOT).url
            for path in self.notebooks.rglob("*.ipynb"):
                nb = nbformat.read(path, as_version=4)
                first = next(c for c in nb.cells if c.cell_type == "code")
                first.source = execute_notebooks.setup_cell_source(repo_url, execute_notebooks.notebook_requirements(nb))
                nbformat.write(nb, path)

    # -- um capítulo ----------------------------------------------------------

    def run(self, docname: str) -> dict:
        folder = self.workdir / "content" / docname.replace("/", "__")
        folder.mkdir(parents=True)  # vazia, como /content num Colab novo
        runner = self.workdir / "runner.py"
        runner.write_text(RUNNER, encoding="utf-8")
        # relatório e notebook executado ficam em _build/colab-sim/executados/, para investigar
        report_path = REPORT.parent / "executados" / f"{docname.replace('/', '__')}.json"
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.unlink(missing_ok=True)
        started = time.perf_counter()
        result = subprocess.run(
            [str(self.python), str(runner), str(self.notebooks / f"{docname}.ipynb"), str(report_path), str(CELL_TIMEOUT)],
            check=False,
            cwd=folder,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=4 * 3600,
        )
        report = json.loads(report_path.read_text()) if report_path.is_file() else {"error": {"message": result.stderr[-4000:]}}
        report["wall_s"] = round(time.perf_counter() - started, 1)
        self.restore()
        return report

    def record(self, docname: str, report: dict) -> None:
        cells = report.get("cells", [])
        self.times["notebooks"][docname] = {
            "ok": not report.get("error"),
            "total_s": report.get("wall_s"),
            "setup_cell_s": cells[0][1] if cells else None,
            "skipped_cells": report.get("skipped", []),
            "slowest_cells": sorted(cells, key=lambda c: -c[1])[:3],
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(self.times, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _say(config, line: str) -> None:
    """Escreve no terminal na hora, mesmo com a captura de saída do pytest ligada."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    if reporter and capture:
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(line)


@pytest.fixture(scope="module")
def simulation(tmp_path_factory, request):
    sim = ColabSimulation(tmp_path_factory.mktemp("colab-sim"))
    sim.redirect_repository()
    sim.create_venv()
    sim.convert()
    reused = " (reaproveitado)" if sim.times["venv_reused"] else f": {sim.times['venv_s']} s"
    _say(request.config, f"\nambiente de base do Colab{reused}")
    return sim


@pytest.mark.parametrize("docname", _selected_notebooks())
def test_notebook_runs_alone_in_colab(docname, simulation, request):
    report = simulation.run(docname)
    simulation.record(docname, report)
    info = simulation.times["notebooks"][docname]
    _say(request.config, f"  {docname}: {info['total_s']} s (1.ª célula {info['setup_cell_s']} s)")
    kernel = report.get("kernel", ["python"])[0]
    error = report.get("error")
    assert not error, (
        f"{docname}: a célula {error.get('cell')} falhou no Colab simulado\n"
        f"--- código ---\n{error.get('source', '')}\n--- erro ---\n{error.get('message', '')}"
    )
    assert kernel in ("python", "python3") or kernel.startswith(str(simulation.venv)), (
        f"o kernel não é o Python do ambiente simulado: {report.get('kernel')}"
    )

"""O JavaScript do site (book/_site_static/web/) contra o Python, rodando no Node.js.

- ``bpe.js``: os mesmos IDs que o ``BPETokenizer`` do curso e que o tiktoken do GPT-2, texto a
  texto, e as mesmas peças que ``token_pieces``;
- ``sampler.js``: as mesmas probabilidades de onde ``companion.generation.sample_next_token``
  sorteia (capturadas do ``torch.multinomial``), a mesma gulosa (o primeiro maior logit) e a
  mesma penalidade de repetição.

Precisa do Node.js (o ``bash .ci/setup`` já o usa para baixar o JavaScript do site).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import pytest
import torch

from companion.assets import artifact_path, asset_path
from companion.generation import sample_next_token
from companion.tokenizers import (
    BPETokenizer,
    gpt2_files_dir,
    gpt2_tokenizer,
    token_pieces,
)

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None and not os.environ.get("CI"), reason="Node.js não encontrado")


def run_node(script: str, payload: object) -> object:
    """Roda ``script`` no Node.js com ``payload`` (JSON) na entrada; devolve o JSON da saída."""
    if NODE is None:
        pytest.fail("Node.js não encontrado (na CI ele é obrigatório)")
    result = subprocess.run([NODE, "-e", script], input=json.dumps(payload), capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- bpe.js
BPE_SCRIPT = r"""
const fs = require("fs");
const { BPETokenizer } = require("./book/_site_static/web/bpe.js");
const input = JSON.parse(fs.readFileSync(0, "utf8"));
const course = BPETokenizer.fromCourseJSON(JSON.parse(fs.readFileSync(input.course, "utf8")));
const gpt2 = BPETokenizer.fromGPT2VocabBPE(fs.readFileSync(input.gpt2, "utf8"));
console.log(JSON.stringify({
  course: input.texts.map((t) => course.encode(t)),
  gpt2: input.texts.map((t) => gpt2.encode(t)),
  pieces: input.texts.map((t) => course.pieces(t).map((p) => [p.id, p.piece])),
  roundTrip: input.texts.map((t) => course.decode(course.encode(t)) === t),
  sizes: [course.vocabSize, gpt2.vocabSize],
}));
"""

TRICKY = [
    "O beija-flor pousou na jabuticabeira às 6h30; paguei R$ 12,50 no Pix. 🙂",
    "Era uma vez",
    "  dois  espaços \n\n\t no fim  ",
    "Hello, world!",
    "it's they're I'll we've",
    "a\u0085b\ufeffc\u00a0d\u2028e\u3000f",  # espaços que o \s do JavaScript e o do Python tratam diferente
    "<|endoftext|>Era uma vez<|endoftext|>",
    "",
    "ção, pão, mãe, avô, ü, ñ, 中文, 😀👍🏽, 🇧🇷",
    "123456789 1.000,50 3x4 ½ ² Ⅻ",
    "\ufeffcomeça com BOM",
]


def random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = "aáâãàbcçdeéêfghiíjklmnoóôõpqrstuúüvwxyz AÉÇ0123456789.,;!?-—'\"\n\t\u00a0\u2028🙂中\u0301"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 50))) for _ in range(n)]


@pytest.fixture(scope="module")
def bpe_results():
    corpus = asset_path("corpus_ptbr.txt").read_text(encoding="utf-8")
    texts = TRICKY + random_texts(300) + [corpus[:30_000]]
    payload = {
        "texts": texts,
        "course": str(artifact_path("cap5-treino") / "tokenizer.json"),
        "gpt2": str(gpt2_files_dir() / "vocab.bpe"),
    }
    return texts, run_node(BPE_SCRIPT, payload)


def test_course_bpe_in_js_gives_the_python_ids(bpe_results):
    texts, out = bpe_results
    tokenizer = BPETokenizer.load(artifact_path("cap5-treino") / "tokenizer.json")
    expected = [tokenizer.encode(t, allowed_special="all") for t in texts]
    assert out["course"] == expected
    assert out["sizes"][0] == tokenizer.vocab_size == 1024


def test_gpt2_bpe_in_js_gives_tiktoken_ids(bpe_results):
    texts, out = bpe_results
    expected = [gpt2_tokenizer().encode(t, allowed_special="all") for t in texts]
    assert out["gpt2"] == expected
    assert out["sizes"][1] == 50_257


def test_js_pieces_and_round_trip(bpe_results):
    texts, out = bpe_results
    tokenizer = BPETokenizer.load(artifact_path("cap5-treino") / "tokenizer.json")
    assert out["pieces"] == [[list(p) for p in token_pieces(tokenizer, t)] for t in texts]
    assert all(out["roundTrip"])


# --------------------------------------------------------------------------- sampler.js
SAMPLER_SCRIPT = r"""
const fs = require("fs");
const S = require("./book/_site_static/web/sampler.js");
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
console.log(JSON.stringify(cases.map((c) => {
  const options = { temperature: c.temperature, topK: c.top_k, topP: c.top_p,
                    repetitionPenalty: c.penalty, previous: c.previous };
  const probs = S.nextTokenProbs(c.logits, options);
  const greedy = S.sampleNextToken(c.logits, { ...options, temperature: 0 }, S.mulberry32(1)).id;
  return { probs: probs && Array.from(probs), greedy };
})));
"""


def python_probs(logits: torch.Tensor, temperature: float, top_k, top_p, previous, penalty) -> torch.Tensor:
    """As probabilidades que ``sample_next_token`` entrega ao ``torch.multinomial``."""
    captured = {}

    def fake_multinomial(probs, num_samples, generator=None):
        captured["probs"] = probs.clone()
        return torch.zeros(probs.shape[0], 1, dtype=torch.long)

    with mock.patch("torch.multinomial", fake_multinomial):
        sample_next_token(logits[None], temperature, top_k, top_p, previous=previous, repetition_penalty=penalty)
    return captured["probs"][0]


def sampler_cases() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    cases = []
    settings = [
        (1.0, None, None), (0.7, 40, None), (1.3, None, 0.9), (0.8, 40, 0.9), (2.0, 1, None),
        (1.0, 5, 0.5), (0.5, None, 0.3), (1.0, 1000, 0.95), (1.5, 3, None),
    ]
    for i, (temperature, top_k, top_p) in enumerate(settings * 3):
        V = (50, 1024, 300)[i % 3]
        logits = torch.randn(V, generator=g) * 3
        if i % 4 == 0:  # empates: valores arredondados repetem muito
            logits = logits.round()
        previous = torch.randint(0, V, (1, 6), generator=g) if i % 5 == 0 else None
        penalty = 1.3 if previous is not None else 1.0
        cases.append({"logits": logits.tolist(), "temperature": temperature, "top_k": top_k, "top_p": top_p,
                      "previous": None if previous is None else previous[0].tolist(), "penalty": penalty})
    # os empates na fronteira do top-k ficam todos; empates no top-p saem pelo maior ID
    cases.append({"logits": [1.0, 3.0, 3.0, 2.0, 3.0, 0.0], "temperature": 1.0, "top_k": 2, "top_p": None,
                  "previous": None, "penalty": 1.0})
    cases.append({"logits": [0.0] * 50, "temperature": 1.0, "top_k": None, "top_p": 0.15,
                  "previous": None, "penalty": 1.0})
    return cases


def test_js_sampler_follows_sample_next_token():
    cases = sampler_cases()
    out = run_node(SAMPLER_SCRIPT, cases)
    for case, js in zip(cases, out):
        logits = torch.tensor(case["logits"])
        previous = None if case["previous"] is None else torch.tensor([case["previous"]])
        expected = python_probs(logits, case["temperature"], case["top_k"], case["top_p"], previous, case["penalty"])
        got = torch.tensor(js["probs"], dtype=torch.float64)
        assert torch.equal(got > 0, expected > 0), case  # os mesmos tokens sobrevivem aos filtros
        torch.testing.assert_close(got, expected.double(), atol=1e-6, rtol=1e-5)
        greedy = sample_next_token(logits[None], 0.0, previous=previous, repetition_penalty=case["penalty"])
        assert js["greedy"] == greedy.item()
    assert out[-2]["probs"][0] == 0 and sum(p > 0 for p in out[-2]["probs"]) == 3  # os três 3,0 ficam
    assert [p > 0 for p in out[-1]["probs"]] == [True] * 8 + [False] * 42


def test_js_greedy_takes_the_first_maximum_like_torch_argmax():
    logits = [0.5, 2.0, -1.0, 2.0, 2.0]
    out = run_node(SAMPLER_SCRIPT, [{"logits": logits, "temperature": 0, "top_k": None, "top_p": None,
                                      "previous": None, "penalty": 1.0}])
    assert out[0]["probs"] is None
    assert out[0]["greedy"] == int(torch.tensor(logits).argmax()) == 1


def test_js_draws_are_reproducible_and_follow_the_probabilities():
    script = r"""
    const S = require("./book/_site_static/web/sampler.js");
    const probs = [0.1, 0, 0.6, 0.3];
    const draw = (seed, n) => { const r = S.mulberry32(seed); return Array.from({ length: n }, () => S.drawFrom(probs, r())); };
    const many = draw(5, 20000);
    console.log(JSON.stringify({ a: draw(123, 30), b: draw(123, 30), c: draw(124, 30),
      freq: [0, 1, 2, 3].map((i) => many.filter((x) => x === i).length / many.length) }));
    """
    out = run_node(script, None)
    assert out["a"] == out["b"] and out["a"] != out["c"]
    assert out["freq"][1] == 0
    for got, expected in zip(out["freq"], [0.1, 0.0, 0.6, 0.3]):
        assert abs(got - expected) < 0.015

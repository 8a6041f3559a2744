// LLM do Zero — a escolha do próximo token, em JavaScript (cap. 5).
//
// Segue companion.generation.sample_next_token passo a passo, na mesma ordem:
//   penalidade de repetição -> (temperatura 0: o maior logit) -> temperatura -> top-k -> top-p -> sorteio
// com as mesmas regras de empate:
//   - gulosa: o PRIMEIRO maior logit (como torch.argmax);
//   - top-k: fica todo token com logit >= o k-ésimo maior (empatados com ele também ficam);
//   - top-p: ordena do maior para o menor, empates pelo menor ID (torch.sort estável), e tira
//     um token quando os que vêm ANTES dele já somam top_p (o 1.º nunca sai).
// As contas são em float64 (o PyTorch usa float32): só um corte de top-p a menos de ~1e-7
// da fronteira poderia sair diferente.
//
// O sorteio não pode ser o do PyTorch (o gerador dele não existe aqui): usamos o Mulberry32,
// um gerador pequeno com semente, e a inversão da distribuição acumulada. Mesma semente,
// mesmos tokens — no navegador e na execução de referência dos testes (Node.js).
(function (root) {
  "use strict";

  const LLMdoZero = (root.LLMdoZero = root.LLMdoZero || {});
  if (LLMdoZero.sampling) return;

  /** Mulberry32: devolve uma função que gera números em [0, 1) a partir de uma semente inteira. */
  function mulberry32(seed) {
    let state = seed >>> 0;
    return function next() {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  /** O índice do PRIMEIRO maior valor (como torch.argmax). */
  function argmax(values) {
    let best = 0;
    for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
    return best;
  }

  /** Penalidade de repetição do CTRL: logit positivo / penalty, negativo * penalty (uma vez por token). */
  function applyRepetitionPenalty(logits, previous, penalty) {
    if (penalty === 1 || !previous || previous.length === 0) return logits;
    const out = Float64Array.from(logits);
    for (const id of new Set(previous)) {
      const value = logits[id];
      out[id] = value > 0 ? value / penalty : value * penalty;
    }
    return out;
  }

  /** softmax em float64 (os -Infinity viram probabilidade 0). */
  function softmax(values) {
    let max = -Infinity;
    for (const v of values) if (v > max) max = v;
    const out = new Float64Array(values.length);
    let total = 0;
    for (let i = 0; i < values.length; i++) {
      out[i] = Math.exp(values[i] - max);
      total += out[i];
    }
    for (let i = 0; i < out.length; i++) out[i] /= total;
    return out;
  }

  /** Os logits depois da temperatura, do top-k e do top-p (os cortados viram -Infinity). */
  function filterLogits(logits, temperature, topK, topP) {
    const V = logits.length;
    const scaled = new Float64Array(V);
    for (let i = 0; i < V; i++) scaled[i] = logits[i] / temperature;
    if (topK !== null && topK !== undefined && topK < V) {
      const kth = Float64Array.from(scaled).sort().reverse()[topK - 1]; // o k-ésimo maior
      for (let i = 0; i < V; i++) if (scaled[i] < kth) scaled[i] = -Infinity;
    }
    if (topP !== null && topP !== undefined && topP < 1) {
      // do maior para o menor; empates pelo menor ID (a ordem estável)
      const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => scaled[b] - scaled[a] || a - b);
      const probs = softmax(order.map((i) => scaled[i]));
      let cumulative = 0;
      const cut = [];
      order.forEach((id, rank) => {
        cumulative += probs[rank];
        const before = cumulative - probs[rank]; // o que vem antes dele já soma isto
        if (before >= topP) cut.push(id);
      });
      for (const id of cut) scaled[id] = -Infinity;
    }
    return scaled;
  }

  /**
   * As probabilidades de onde o próximo token é sorteado (null na gulosa, que não sorteia).
   * @param {ArrayLike<number>} logits  os logits da última posição (V valores)
   * @param {{temperature:number, topK?:number|null, topP?:number|null,
   *          repetitionPenalty?:number, previous?:number[]}} options
   */
  function nextTokenProbs(logits, options) {
    const penalized = applyRepetitionPenalty(logits, options.previous, options.repetitionPenalty ?? 1);
    if (options.temperature === 0) return null;
    return softmax(filterLogits(penalized, options.temperature, options.topK, options.topP));
  }

  /** Sorteia um ID de `probs` com um número u em [0, 1) (inversão da distribuição acumulada). */
  function drawFrom(probs, u) {
    let total = 0;
    for (const p of probs) total += p;
    const target = u * total;
    let cumulative = 0;
    let last = -1;
    for (let i = 0; i < probs.length; i++) {
      if (probs[i] <= 0) continue; // um token cortado nunca é sorteado
      cumulative += probs[i];
      last = i;
      if (cumulative > target) return i;
    }
    return last; // arredondamento: o último token com probabilidade
  }

  /**
   * O próximo token, como companion.generation.sample_next_token.
   * @param {ArrayLike<number>} logits
   * @param {object} options  ver nextTokenProbs
   * @param {() => number} random  o gerador (mulberry32(semente)); só é usado quando há sorteio
   * @returns {{id:number, probs:Float64Array|null}}
   */
  function sampleNextToken(logits, options, random) {
    const probs = nextTokenProbs(logits, options);
    if (probs === null) {
      const penalized = applyRepetitionPenalty(logits, options.previous, options.repetitionPenalty ?? 1);
      return { id: argmax(penalized), probs: null };
    }
    return { id: drawFrom(probs, random()), probs };
  }

  /** Os n tokens mais prováveis: [{id, p}], do maior para o menor (empates pelo menor ID). */
  function topCandidates(probs, n) {
    const ids = Array.from({ length: probs.length }, (_, i) => i);
    ids.sort((a, b) => probs[b] - probs[a] || a - b);
    return ids.slice(0, n).map((id) => ({ id, p: probs[id] }));
  }

  LLMdoZero.sampling = {
    mulberry32,
    argmax,
    softmax,
    applyRepetitionPenalty,
    filterLogits,
    nextTokenProbs,
    drawFrom,
    sampleNextToken,
    topCandidates,
  };
  if (typeof module !== "undefined" && module.exports) module.exports = LLMdoZero.sampling;
})(typeof window !== "undefined" ? window : globalThis);

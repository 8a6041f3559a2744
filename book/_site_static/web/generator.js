// LLM do Zero — o modelo do cap. 5 gerando texto no navegador do leitor (onnxruntime-web, WebAssembly).
//
// Nada sai da máquina do leitor: o modelo (model.onnx), o tokenizador (tokenizer.json) e o
// onnxruntime-web vêm do próprio site, e as contas rodam em WebAssembly, numa thread.
//
// Um passo de geração é o de companion.generation.generate, com KV cache:
//   1.º passo: a janela (os últimos context_length tokens do começo) com o cache vazio;
//   depois: só o token novo, com as chaves e os valores guardados (o "present" do passo
//   anterior); se a janela encheu, o cache é refeito a partir dos últimos context_length
//   tokens — a mesma regra do Python, que nunca muda um token escolhido.
//   logits da última posição -> sampler.js (temperatura, top-k, top-p) -> próximo token.
// (O grafo sem cache também funciona: cada passo passa a janela inteira.)
// Uso: um <div class="llmz-generator" data-run="cap5-treino"></div> na página, depois
// bpe.js, sampler.js e este arquivo.
(function (root) {
  "use strict";

  const LLMdoZero = (root.LLMdoZero = root.LLMdoZero || {});
  if (LLMdoZero.BrowserLM) return;

  // Os arquivos do site ficam em _static/: este script está em _static/web/.
  const STATIC = new URL("..", document.currentScript.src).href;
  const ORT_DIR = STATIC + "offline/ort/";

  const loaded = new Map();
  /** Carrega um <script> uma vez só (as próximas chamadas devolvem a mesma promessa). */
  function loadScript(url) {
    if (!loaded.has(url)) {
      loaded.set(url, new Promise((resolve, reject) => {
        const tag = document.createElement("script");
        tag.src = url;
        tag.onload = resolve;
        tag.onerror = () => reject(new Error("não consegui carregar " + url));
        document.head.appendChild(tag);
      }));
    }
    return loaded.get(url);
  }

  async function fetchOk(url, kind) {
    const response = await fetch(url);
    if (!response.ok) throw new Error("não consegui baixar " + url + " (HTTP " + response.status + ")");
    return kind === "json" ? response.json() : response.arrayBuffer();
  }

  /** O modelo de um treino do curso, rodando no onnxruntime-web. */
  class BrowserLM {
    constructor(session, tokenizer, info) {
      this.session = session;
      this.tokenizer = tokenizer;
      this.contextLength = info.context_length;
      this.vocabSize = info.vocab_size;
      this.info = info;
      this.cached = session.inputNames.includes("past"); // o grafo com KV cache
    }

    /** Baixa o onnxruntime-web, o modelo e o tokenizador do treino `run` (ex.: "cap5-treino"). */
    static async load(run) {
      const folder = STATIC + "generated/" + run + "/";
      await loadScript(ORT_DIR + "ort.wasm.min.js");
      const ort = root.ort;
      ort.env.wasm.wasmPaths = ORT_DIR; // o .wasm e o .mjs vêm do site, nunca de um CDN
      ort.env.wasm.numThreads = 1; // sem cabeçalhos de isolamento, o navegador não dá threads ao WASM
      ort.env.wasm.proxy = false;
      const [info, tokenizerJSON, modelBytes] = await Promise.all([
        fetchOk(folder + "model.json", "json"),
        fetchOk(folder + "tokenizer.json", "json"),
        fetchOk(folder + "model.onnx", "bytes"),
      ]);
      const session = await ort.InferenceSession.create(new Uint8Array(modelBytes), {
        executionProviders: ["wasm"],
        graphOptimizationLevel: "all",
      });
      const tokenizer = LLMdoZero.BPETokenizer.fromCourseJSON(tokenizerJSON);
      const lm = new BrowserLM(session, tokenizer, info);
      await lm.nextLogits([0], {}); // aquecimento: a 1.ª chamada do onnxruntime prepara a memória e os kernels
      return lm;
    }

    /** Um cache vazio: (2 * blocos, 1, cabeças, 0, dimensão da cabeça). */
    emptyPast() {
      const info = this.info;
      return new root.ort.Tensor("float32", new Float32Array(0), [2 * info.n_layers, 1, info.n_heads, 0, info.head_dim]);
    }

    /**
     * Os logits do próximo token (V valores) dada a sequência `ids`, como next_logits de generate.
     * `state.past` guarda o cache entre um passo e o seguinte (comece com {}).
     */
    async nextLogits(ids, state) {
      const ctx = this.contextLength;
      let window;
      let past;
      if (!this.cached || !state.past || state.past.dims[3] >= ctx) {
        // sem cache, 1.º passo, ou janela cheia: a janela (cortada) inteira, com o cache vazio
        window = ids.slice(-ctx);
        past = this.cached ? this.emptyPast() : null;
      } else {
        window = ids.slice(-1); // cabe: só o token novo
        past = state.past;
      }
      const feeds = { input_ids: new root.ort.Tensor("int64", BigInt64Array.from(window, BigInt), [1, window.length]) };
      if (past) feeds.past = past;
      const out = await this.session.run(feeds); // logits (1, T, V); com cache, present
      if (this.cached) state.past = out.present;
      const V = this.vocabSize;
      return out.logits.data.slice((window.length - 1) * V, window.length * V); // a última posição
    }

    /**
     * Gera `maxNewTokens` tokens depois de `promptIds`, chamando `onToken` a cada passo.
     * @param {number[]} promptIds
     * @param {{maxNewTokens:number, temperature:number, topK:number|null, topP:number|null,
     *          seed:number, repetitionPenalty?:number}} options
     * @param {(step:object) => (void|Promise<void>)} onToken  recebe {id, candidates, computeMs}
     * @param {() => boolean} [stopped]  devolve true para interromper
     * @returns {Promise<{ids:number[], computeMs:number[]}>}
     */
    async generate(promptIds, options, onToken, stopped) {
      const sampling = LLMdoZero.sampling;
      const random = sampling.mulberry32(options.seed);
      const ids = promptIds.slice();
      const computeMs = [];
      const state = {};
      for (let step = 0; step < options.maxNewTokens; step++) {
        if (stopped && stopped()) break;
        const t0 = performance.now();
        const logits = await this.nextLogits(ids, state);
        const previous = (options.repetitionPenalty ?? 1) !== 1 ? ids.slice() : undefined;
        const { id, probs } = sampling.sampleNextToken(logits, { ...options, previous }, random);
        computeMs.push(performance.now() - t0);
        ids.push(id);
        // Os candidatos mostrados: a distribuição de onde o token foi sorteado (na gulosa,
        // a do modelo, softmax dos logits).
        const shown = probs || sampling.softmax(sampling.applyRepetitionPenalty(logits, previous, options.repetitionPenalty ?? 1));
        const candidates = sampling.topCandidates(shown, 6);
        if (onToken) await onToken({ step, id, candidates, computeMs: computeMs[step] });
      }
      return { ids: ids.slice(promptIds.length), computeMs };
    }
  }

  // ------------------------------------------------------------------ a interface da página
  const esc = (text) => String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  const visible = (piece) => piece.replace(/ /g, "·").replace(/\n/g, "↵").replace(/\t/g, "→");
  const pt = (x, digits) => x.toFixed(digits).replace(".", ",");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function slider(name, label, min, max, step, value, hint) {
    return `<label class="llmz-control">${label} <output data-for="${name}"></output>
      <input type="range" name="${name}" min="${min}" max="${max}" step="${step}" value="${value}">
      <small>${hint}</small></label>`;
  }

  function candidatesHTML(step, piece) {
    const rows = step.candidates.map((c) => {
      const chosen = c.id === step.id ? " llmz-chosen" : "";
      return `<div class="llmz-bar${chosen}"><code>${esc(visible(piece(c.id)))}</code>
        <span class="llmz-track"><span class="llmz-fill" style="width:${(c.p * 100).toFixed(1)}%"></span></span>
        <span>${pt(c.p * 100, 1)}%</span></div>`;
    });
    return `<p>Passo ${step.step + 1}: o modelo escolheu <code>${esc(visible(piece(step.id)))}</code>
      entre os candidatos (os 6 mais prováveis depois dos filtros):</p>${rows.join("")}`;
  }

  /** Monta o gerador dentro de `box` (um <div class="llmz-generator" data-run="...">). */
  function mountGenerator(box) {
    const run = box.dataset.run || "cap5-treino";
    box.innerHTML = `
      <label class="llmz-control llmz-wide">Comece o texto:
        <input type="text" name="prompt" value="${esc(box.dataset.prompt || "Era uma vez")}"></label>
      <div class="llmz-controls">
        ${slider("temperature", "temperatura", 0, 2, 0.05, 0, "0 = gulosa (sempre o mais provável)")}
        ${slider("topK", "top-k", 0, 100, 1, 0, "0 = desligado")}
        ${slider("topP", "top-p", 0.05, 1, 0.05, 1, "1 = desligado")}
        ${slider("maxNewTokens", "tokens novos", 1, 60, 1, 30, "quantos gerar")}
        <label class="llmz-control">semente <input type="number" name="seed" value="123" min="0" step="1">
          <small>mesma semente, mesmo sorteio</small></label>
        <label class="llmz-check"><input type="checkbox" name="slow" checked> escrever devagar
          <small>uma pausa de 80 ms entre tokens, para você acompanhar</small></label>
      </div>
      <p><button type="button" name="go">Gerar</button> <button type="button" name="stop" disabled>Parar</button>
        <span class="llmz-status" aria-live="polite">O modelo e o onnxruntime-web são baixados quando você
        clicar em Gerar (cerca de 16 MB, 4 MB comprimidos; uma vez só).</span></p>
      <div class="llmz-output" aria-live="polite"></div>
      <div class="llmz-candidates"></div>`;
    const $ = (selector) => box.querySelector(selector);
    const input = (name) => box.querySelector(`[name="${name}"]`);
    const status = $(".llmz-status");
    const output = $(".llmz-output");
    const panel = $(".llmz-candidates");
    let model = null;
    let busy = false;
    let stopRequested = false;
    let pending = false;

    function readOptions() {
      const topK = Number(input("topK").value);
      const topP = Number(input("topP").value);
      return {
        temperature: Number(input("temperature").value),
        topK: topK > 0 ? topK : null,
        topP: topP < 1 ? topP : null,
        maxNewTokens: Number(input("maxNewTokens").value),
        seed: Math.max(0, Math.floor(Number(input("seed").value) || 0)),
      };
    }

    function showValues() {
      const o = readOptions();
      box.querySelector('output[data-for="temperature"]').textContent = pt(o.temperature, 2);
      box.querySelector('output[data-for="topK"]').textContent = o.topK === null ? "desligado" : o.topK;
      box.querySelector('output[data-for="topP"]').textContent = o.topP === null ? "desligado" : pt(o.topP, 2);
      box.querySelector('output[data-for="maxNewTokens"]').textContent = o.maxNewTokens;
    }

    async function ensureModel() {
      if (model) return model;
      status.textContent = "Carregando o onnxruntime-web e o modelo...";
      const t0 = performance.now();
      model = await BrowserLM.load(run);
      box.dataset.loadMs = (performance.now() - t0).toFixed(1);
      return model;
    }

    async function generate() {
      if (busy) {
        pending = true; // um controle mudou no meio: gera de novo quando terminar
        return;
      }
      busy = true;
      stopRequested = false;
      input("go").disabled = true;
      input("stop").disabled = false;
      box.dataset.state = "running";
      try {
        const lm = await ensureModel();
        const options = readOptions();
        const slow = input("slow").checked;
        const started = performance.now();
        const promptIds = lm.tokenizer.encode(input("prompt").value);
        if (promptIds.length === 0) {
          status.textContent = "Escreva um começo: o modelo precisa de pelo menos um token.";
          return;
        }
        output.innerHTML = `<span class="llmz-prompt">${esc(input("prompt").value)}</span>`;
        panel.innerHTML = "";
        const steps = [];
        let firstTokenMs = null;
        const piece = (id) => lm.tokenizer.piece(id);
        // Um token pode ser só um pedaço de um caractere (o 1.º byte de "ç"): juntamos os
        // tokens seguintes até os bytes formarem texto, e mostramos o grupo num <span> só.
        let group = [];
        const showGroup = (final) => {
          const text = lm.tokenizer.decodeStrict(group.map((s) => s.id));
          if (text === null && !final) return;
          const last = group[group.length - 1];
          const span = document.createElement("span");
          span.className = "llmz-token";
          span.textContent = text === null ? lm.tokenizer.decode(group.map((s) => s.id)) : text;
          span.title = `passo ${last.step + 1}: clique para ver os candidatos`;
          span.addEventListener("click", () => (panel.innerHTML = candidatesHTML(last, piece)));
          output.appendChild(span);
          group = [];
        };
        const { ids, computeMs } = await lm.generate(promptIds, options, async (step) => {
          if (firstTokenMs === null) firstTokenMs = performance.now() - started;
          steps.push(step);
          group.push(step);
          showGroup(false);
          panel.innerHTML = candidatesHTML(step, piece);
          if (slow) await sleep(80);
          else await new Promise((resolve) => requestAnimationFrame(resolve));
        }, () => stopRequested);
        if (group.length) showGroup(true);
        // Depois do 1.º token (que processa o começo inteiro), cada passo processa 1 token:
        // a velocidade de geração é a desses passos (sem as pausas de "escrever devagar").
        const decodeMs = computeMs.slice(1).reduce((a, b) => a + b, 0);
        const perSecond = decodeMs > 0 ? (ids.length - 1) / (decodeMs / 1000) : 0;
        box.dataset.ids = JSON.stringify(ids);
        box.dataset.text = lm.tokenizer.decode(ids);
        box.dataset.firstTokenMs = firstTokenMs.toFixed(1);
        box.dataset.tokensPerSecond = perSecond.toFixed(1);
        status.textContent = `${ids.length} tokens · primeiro token em ${pt(firstTokenMs, 0)} ms · ` +
          `depois, ${pt(perSecond, 0)} tokens/s (no seu navegador, WebAssembly, 1 thread)`;
      } catch (error) {
        status.textContent = "Não deu para rodar o modelo aqui: " + error.message +
          (location.protocol === "file:" ? " (abra o site por um servidor: python -m http.server -d _build/html)" : "");
        box.dataset.error = error.message;
      } finally {
        busy = false;
        input("go").disabled = false;
        input("stop").disabled = true;
        box.dataset.state = "done";
        box.dataset.runs = String(Number(box.dataset.runs || 0) + 1); // quantas gerações terminaram
        if (pending) {
          pending = false;
          generate();
        }
      }
    }

    input("go").addEventListener("click", generate);
    input("stop").addEventListener("click", () => (stopRequested = true));
    input("prompt").addEventListener("keydown", (event) => event.key === "Enter" && generate());
    // Mexer num controle depois da primeira geração gera de novo, com o mesmo começo.
    for (const name of ["temperature", "topK", "topP", "maxNewTokens", "seed"]) {
      input(name).addEventListener("input", showValues);
      input(name).addEventListener("change", () => model && generate());
    }
    showValues();
  }

  LLMdoZero.BrowserLM = BrowserLM;
  LLMdoZero.mountGenerator = mountGenerator;
  document.querySelectorAll(".llmz-generator:not([data-mounted])").forEach((box) => {
    box.dataset.mounted = "1";
    mountGenerator(box);
  });
})(window);

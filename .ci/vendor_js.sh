#!/usr/bin/env bash
# Baixa do npm (versões fixas) o JavaScript que o site serve localmente:
# MathJax 3 (fórmulas), RequireJS, o gerenciador HTML dos ipywidgets e o
# onnxruntime-web (só o backend WASM), que roda o modelo do cap. 5 no navegador.
# Destino: book/_site_static/offline/ (fora do git). Idempotente.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=book/_site_static/offline
stamp="$dest/.versions"
versions="mathjax@3.2.2 requirejs@2.3.7 @jupyter-widgets/html-manager@1.0.15 onnxruntime-web@1.31.1"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$versions" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && for pkg in $versions; do npm pack --silent "$pkg" >/dev/null 2>&1 || npm pack "$pkg"; done )
for tarball in "$tmp"/*.tgz; do
  mkdir -p "$tmp/x/$(basename "$tarball" .tgz)"
  tar -xzf "$tarball" -C "$tmp/x/$(basename "$tarball" .tgz)"
done
rm -rf "$dest"
mkdir -p "$dest/mathjax/output/chtml/fonts"
mj="$tmp/x/mathjax-3.2.2/package/es5"
cp "$mj/tex-mml-chtml.js" "$dest/mathjax/"
cp -r "$mj/output/chtml/fonts/woff-v2" "$dest/mathjax/output/chtml/fonts/"
# Extensões que o MathJax carrega sob demanda (menu de acessibilidade etc.)
for sub in a11y ui input/tex/extensions sre; do
  if [ -d "$mj/$sub" ]; then mkdir -p "$dest/mathjax/$sub" && cp -r "$mj/$sub/." "$dest/mathjax/$sub/"; fi
done
cp "$tmp/x/requirejs-2.3.7/package/require.js" "$dest/require.min.js"
hm="$tmp/x/jupyter-widgets-html-manager-1.0.15/package/dist"
cp "$hm/embed-amd.js" "$dest/embed-amd.js"
# onnxruntime-web: a API (ort.wasm.min.js, sem WebGPU/WebGL), o carregador do WebAssembly
# (.mjs) e o próprio WebAssembly (~15 MB; ~3,8 MB comprimido). Só a página
# book/05-pretreinamento/no-navegador os carrega, e só quando o leitor pede para gerar.
ort="$tmp/x/onnxruntime-web-1.31.1/package/dist"
mkdir -p "$dest/ort"
cp "$ort/ort.wasm.min.js" "$ort/ort-wasm-simd-threaded.mjs" "$ort/ort-wasm-simd-threaded.wasm" "$dest/ort/"
echo "$versions" > "$stamp"
echo "JavaScript do site em $dest: $versions"

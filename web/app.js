// The page: load a model (file picker or ?model=URL), an image (picker, webcam or ?image=URL),
// detect, draw, report the inference time. ?threshold=, ?runs= (timed runs, median reported).
// When it has finished one detection it sets document.body.dataset.state = "done" and
// window.detectionResult = {faces, milliseconds, runs_ms, quantized, width, height} (used by the test).
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { deploymentConfig, detect, readMetadata } from "./detector.js";

ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
ort.env.wasm.numThreads = 1;  // no cross-origin isolation needed; the Python side is timed with 1 thread too

const params = new URLSearchParams(location.search);
const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d", { willReadFrequently: true });
const status = document.getElementById("status");
const thresholdInput = document.getElementById("threshold");
if (params.has("threshold")) thresholdInput.value = params.get("threshold");
const runs = Math.max(1, Number(params.get("runs") || 3));
let model = null;  // {session, config, name}
let source = null;  // an image or video frame drawn on the canvas

function report(text, error = false) {
  status.textContent = text;
  status.style.color = error ? "#b00" : "";
}

async function loadModel(buffer, name) {
  const config = deploymentConfig(readMetadata(buffer));
  const session = await ort.InferenceSession.create(new Uint8Array(buffer), { executionProviders: ["wasm"] });
  model = { session, config, name };
  report(`model ${name} (${config.quantized ? "INT8" : "FP32"}) loaded`);
}

function drawFaces(faces, threshold) {
  context.lineWidth = Math.max(2, canvas.width / 400);
  context.font = `${Math.max(12, canvas.width / 60)}px sans-serif`;
  const colours = ["#f00", "#ff0", "#f0f", "#0f0", "#00f"];
  for (const face of faces.filter((f) => f.score >= threshold)) {
    const [x1, y1, x2, y2] = face.box;
    context.strokeStyle = "#f00";
    context.strokeRect(x1, y1, x2 - x1, y2 - y1);
    context.fillStyle = "#fff";
    context.fillText(face.score.toFixed(2), x1, Math.max(12, y1 - 4));
    face.landmarks.forEach(([x, y], k) => {
      context.fillStyle = colours[k];
      context.beginPath();
      context.arc(x, y, context.lineWidth * 1.5, 0, 2 * Math.PI);
      context.fill();
    });
  }
}

async function run() {
  if (!model || !source) return;
  const width = source.naturalWidth || source.videoWidth, height = source.naturalHeight || source.videoHeight;
  canvas.width = width;
  canvas.height = height;
  context.drawImage(source, 0, 0);
  const pixels = context.getImageData(0, 0, width, height);
  const threshold = Number(thresholdInput.value);
  const times = [];
  let result = null;
  await detect(ort, model.session, model.config, pixels, threshold);  // warm-up
  for (let i = 0; i < runs; i++) {
    result = await detect(ort, model.session, model.config, pixels, threshold);
    times.push(result.milliseconds);
  }
  const median = [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)];
  drawFaces(result.faces, threshold);
  const kind = model.config.quantized ? "INT8" : "FP32";
  report(`${result.faces.length} faces >= ${threshold} | ${model.name} (${kind}, wasm) | ` +
         `inference ${median.toFixed(1)} ms (median of ${runs}) | ${width}x${height}`);
  window.detectionResult = { faces: result.faces, milliseconds: median, runs_ms: times, quantized: model.config.quantized,
                             width, height };
  document.body.dataset.state = "done";
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`cannot load image ${url}`));
    image.src = url;
  });
}

async function guarded(action) {
  try {
    await action();
  } catch (error) {
    report(String(error.message || error), true);
    window.detectionError = String(error.message || error);
    document.body.dataset.state = "error";
  }
}

document.getElementById("model-file").addEventListener("change", (event) => guarded(async () => {
  const file = event.target.files[0];
  await loadModel(await file.arrayBuffer(), file.name);
  await run();
}));
document.getElementById("image-file").addEventListener("change", (event) => guarded(async () => {
  source = await loadImage(URL.createObjectURL(event.target.files[0]));
  await run();
}));
document.getElementById("webcam").addEventListener("click", () => guarded(async () => {
  const video = document.getElementById("video");
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
  await video.play();
  source = video;  // one frame per click
  await run();
}));
thresholdInput.addEventListener("change", () => guarded(run));

guarded(async () => {
  if (params.has("model")) {
    const response = await fetch(params.get("model"));
    if (!response.ok) throw new Error(`cannot fetch model ${params.get("model")}: HTTP ${response.status}`);
    await loadModel(await response.arrayBuffer(), params.get("model").split("/").pop());
  }
  if (params.has("image")) source = await loadImage(params.get("image"));
  await run();
});

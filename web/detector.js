// Face detection for compresskit's RetinaFace-family ONNX exports, in the browser (onnxruntime-web).
//
// Everything the page needs is read from the ONNX file itself (metadata_props written by
// `compresskit export`): preprocessing.{channel_order, mean, scale, input_size} and detector.priors
// ({min_sizes, steps, variances}). Pre- and post-processing mirror reference/featherface/detect.py
// (FaceDetector) exactly: pad right/bottom to a multiple of 32 with the mean colour (0 after mean
// subtraction), softmax face score, score filter, top-k, decode with variances, greedy NMS with the
// py_cpu_nms (+1 pixel) IoU, keep 750.

export const PAD_MULTIPLE = 32;
export const TOP_K = 5000;
export const KEEP_TOP_K = 750;

// --- metadata_props from the ONNX protobuf (ModelProto field 14: repeated StringStringEntryProto) ---

function readVarint(bytes, state) {
  let result = 0, shift = 0, byte;
  do {
    byte = bytes[state.pos++];
    result += (byte & 0x7f) * 2 ** shift;
    shift += 7;
  } while (byte & 0x80);
  return result;
}

function skipField(bytes, state, wireType) {
  if (wireType === 0) readVarint(bytes, state);
  else if (wireType === 1) state.pos += 8;
  else if (wireType === 2) {
    const length = readVarint(bytes, state);  // read before adding: `pos += f()` reads pos first
    state.pos += length;
  }
  else if (wireType === 5) state.pos += 4;
  else throw new Error(`unsupported protobuf wire type ${wireType}`);
}

/** metadata_props of an ONNX file as a plain object {key: value}. */
export function readMetadata(buffer) {
  const bytes = new Uint8Array(buffer);
  const decoder = new TextDecoder();
  const state = { pos: 0 };
  const props = {};
  while (state.pos < bytes.length) {
    const tag = readVarint(bytes, state);
    const field = Math.floor(tag / 8), wireType = tag & 7;
    if (field === 14 && wireType === 2) {
      const end = readVarint(bytes, state) + state.pos;
      let key = "", value = "";
      while (state.pos < end) {
        const inner = readVarint(bytes, state);
        if ((inner & 7) !== 2) { skipField(bytes, state, inner & 7); continue; }
        const length = readVarint(bytes, state);
        const text = decoder.decode(bytes.subarray(state.pos, state.pos + length));
        state.pos += length;
        if (inner >> 3 === 1) key = text; else if (inner >> 3 === 2) value = text;
      }
      props[key] = value;
    } else {
      skipField(bytes, state, wireType);
    }
  }
  return props;
}

/** {channelOrder, mean, scale, inputSize, priors} from metadata; throws naming the missing key. */
export function deploymentConfig(props) {
  const need = ["preprocessing.channel_order", "preprocessing.mean", "preprocessing.scale", "detector.priors"];
  const missing = need.filter((key) => !(key in props));
  if (missing.length) {
    throw new Error(`the ONNX file lacks metadata ${missing.join(", ")}: export it with 'compresskit export'`);
  }
  return {
    channelOrder: JSON.parse(props["preprocessing.channel_order"]),
    mean: JSON.parse(props["preprocessing.mean"]),
    scale: JSON.parse(props["preprocessing.scale"]),
    inputSize: props["preprocessing.input_size"] ? JSON.parse(props["preprocessing.input_size"]) : null,
    priors: JSON.parse(props["detector.priors"]),
    quantized: "quantization.format" in props,
  };
}

// --- preprocessing ---

/**
 * RGBA ImageData -> {data: Float32Array(1*3*H*W), height, width}: (pixel - mean) * scale, CHW, padded
 * right/bottom to a multiple of 32 with zeros (the mean colour).
 */
export function preprocess(imageData, config) {
  const { width, height, data } = imageData;
  const paddedH = Math.ceil(height / PAD_MULTIPLE) * PAD_MULTIPLE;
  const paddedW = Math.ceil(width / PAD_MULTIPLE) * PAD_MULTIPLE;
  const plane = paddedH * paddedW;
  const out = new Float32Array(3 * plane);
  // channel c of the model input takes RGBA component rgbaIndex[c]
  const rgbaIndex = config.channelOrder === "BGR" ? [2, 1, 0] : [0, 1, 2];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const source = (y * width + x) * 4, target = y * paddedW + x;
      for (let c = 0; c < 3; c++) {
        out[c * plane + target] = (data[source + rgbaIndex[c]] - config.mean[c]) * config.scale;
      }
    }
  }
  return { data: out, height: paddedH, width: paddedW };
}

// --- priors, decoding, NMS ---

/** Float32Array(P*4) of (cx, cy, w, h), normalised, in the order level, row, column, anchor. */
export function priorBoxes(height, width, priors) {
  const values = [];
  priors.steps.forEach((step, level) => {
    const rows = Math.ceil(height / step), cols = Math.ceil(width / step);
    for (let row = 0; row < rows; row++) {
      for (let col = 0; col < cols; col++) {
        for (const size of priors.min_sizes[level]) {
          values.push(((col + 0.5) * step) / width, ((row + 0.5) * step) / height, size / width, size / height);
        }
      }
    }
  });
  return Float32Array.from(values);
}

function iou(a, b) {  // py_cpu_nms: pixel boxes, width x2 - x1 + 1
  const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]) + 1);
  const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]) + 1);
  const inter = w * h;
  const areaA = (a[2] - a[0] + 1) * (a[3] - a[1] + 1), areaB = (b[2] - b[0] + 1) * (b[3] - b[1] + 1);
  return inter / (areaA + areaB - inter);
}

/**
 * Raw outputs of one image -> faces [{box: [x1, y1, x2, y2], score, landmarks: [[x, y] x 5]}] by
 * descending score, in input pixels divided by `resize`.
 */
export function postprocess(bboxDeltas, clsLogits, landmarkDeltas, height, width, config,
                            scoreThreshold, nmsThreshold = 0.4, resize = 1.0) {
  const priors = priorBoxes(height, width, config.priors);
  const count = priors.length / 4;
  if (bboxDeltas.length !== count * 4) {
    throw new Error(`model returned ${bboxDeltas.length / 4} priors for ${height}x${width}; expected ${count}`);
  }
  const [v0, v1] = config.priors.variances;
  let candidates = [];
  for (let i = 0; i < count; i++) {
    const a = clsLogits[2 * i], b = clsLogits[2 * i + 1];
    const m = Math.max(a, b);
    const score = Math.exp(b - m) / (Math.exp(a - m) + Math.exp(b - m));
    if (score > scoreThreshold) candidates.push([i, score]);
  }
  candidates.sort((p, q) => q[1] - p[1] || p[0] - q[0]);
  candidates = candidates.slice(0, TOP_K);
  const faces = candidates.map(([i, score]) => {
    const [cx, cy, pw, ph] = priors.subarray(4 * i, 4 * i + 4);
    const x = cx + bboxDeltas[4 * i] * v0 * pw, y = cy + bboxDeltas[4 * i + 1] * v0 * ph;
    const w = pw * Math.exp(bboxDeltas[4 * i + 2] * v1), h = ph * Math.exp(bboxDeltas[4 * i + 3] * v1);
    const box = [(x - w / 2) * width, (y - h / 2) * height, (x + w / 2) * width, (y + h / 2) * height]
      .map((v) => v / resize);
    const landmarks = [];
    for (let k = 0; k < 5; k++) {
      landmarks.push([(cx + landmarkDeltas[10 * i + 2 * k] * v0 * pw) * width / resize,
                      (cy + landmarkDeltas[10 * i + 2 * k + 1] * v0 * ph) * height / resize]);
    }
    return { box, score, landmarks };
  });
  const kept = [];
  for (const face of faces) {
    if (kept.every((other) => iou(face.box, other.box) <= nmsThreshold)) kept.push(face);
    if (kept.length >= KEEP_TOP_K) break;
  }
  return kept;
}

/** Run one image through an ort.InferenceSession; returns {faces, milliseconds}. */
export async function detect(ort, session, config, imageData, scoreThreshold, nmsThreshold = 0.4) {
  const input = preprocess(imageData, config);
  const tensor = new ort.Tensor("float32", input.data, [1, 3, input.height, input.width]);
  const start = performance.now();
  const outputs = await session.run({ [session.inputNames[0]]: tensor });
  const milliseconds = performance.now() - start;
  const [boxes, logits, landmarks] = session.outputNames.map((name) => outputs[name].data);
  const faces = postprocess(boxes, logits, landmarks, input.height, input.width, config, scoreThreshold, nmsThreshold);
  return { faces, milliseconds };
}

// A static file server for the page: web/ at "/", and optionally a data folder at "/data/".
//   node serve.mjs [--port 8080] [--data DIR]      then open http://localhost:8080/?model=/data/model.onnx
import { createReadStream, statSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
                ".onnx": "application/octet-stream", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                ".json": "application/json", ".map": "application/json" };
export const WEB_ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)));

function within(root, path) {  // the file under root for a URL path, or null if it escapes root
  const file = normalize(join(root, decodeURIComponent(path)));
  return file === root || file.startsWith(root + sep) ? file : null;  // not a sibling such as root + "-other"
}

/** Start serving; resolves to {server, url}. port 0 picks a free port. */
export function startServer({ port = 8080, dataDir = null, host = "127.0.0.1" } = {}) {
  const data = dataDir ? resolve(dataDir) : null;
  const server = createServer((request, response) => {
    const path = new URL(request.url, "http://localhost").pathname;
    const file = path.startsWith("/data/") && data ? within(data, path.slice(5))
      : within(WEB_ROOT, path === "/" ? "/index.html" : path);
    let size = -1;
    try { size = file ? statSync(file).size : -1; } catch { size = -1; }
    if (size < 0) {
      response.writeHead(404, { "content-type": "text/plain" });
      response.end(`not found: ${path}`);
      return;
    }
    response.writeHead(200, { "content-type": TYPES[extname(file)] || "application/octet-stream", "content-length": size });
    createReadStream(file).pipe(response);
  });
  return new Promise((done) => server.listen(port, host, () => {
    done({ server, url: `http://${host}:${server.address().port}/` });
  }));
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
  const { url } = await startServer({ port: Number(option("--port", 8080)), dataDir: option("--data", null) });
  console.log(`serving ${WEB_ROOT} at ${url}`);
}

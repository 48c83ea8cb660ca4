// A static file server for the page: web/ at "/", and optionally a data folder at "/data/".
//   node serve.mjs [--port 8080] [--data DIR]      then open http://localhost:8080/?model=/data/model.onnx
// Listens on 127.0.0.1 only. It answers every request and never exits on one: GET and HEAD only (else 405),
// plain files only (directories, except "/" for index.html, are 404), nothing whose real path (symlinks
// resolved) leaves web/ or DIR (404), malformed percent-encodings and NUL bytes 400, URLs over 2048 bytes 414.
import { createReadStream, realpathSync } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, resolve, sep } from "node:path";
import { pipeline } from "node:stream";
import { fileURLToPath } from "node:url";

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
                ".onnx": "application/octet-stream", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                ".json": "application/json", ".map": "application/json" };
const MAX_URL_BYTES = 2048;
export const WEB_ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)));

const inside = (root, file) =>  // file is root or below it (not a sibling such as root + "-other")
  file === root || file.startsWith(root.endsWith(sep) ? root : root + sep);
const realRoot = (folder) => { try { return realpathSync(folder); } catch { return resolve(folder); } };

/** The real path and size of the plain file that a decoded URL path names under root, or null. */
async function fileUnder(root, path) {
  const file = join(root, path);  // normalises "..", so a lexical escape is caught before touching the disk
  if (!inside(root, file)) return null;
  try {
    const real = await realpath(file);  // and a symlink that leads out of root after it
    const info = inside(root, real) ? await stat(real) : null;
    return info?.isFile() ? { real, size: info.size } : null;
  } catch {
    return null;  // missing, unreadable, name too long, ...
  }
}

function answer(response, status, text, headers = {}) {
  const body = `${text}\n`;
  response.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body),
                               ...headers });
  response.end(body);
}

async function handle(request, response, roots) {
  if (request.method !== "GET" && request.method !== "HEAD") {
    return answer(response, 405, "only GET and HEAD", { allow: "GET, HEAD" });
  }
  if (Buffer.byteLength(request.url) > MAX_URL_BYTES) return answer(response, 414, "URL too long");
  let path;
  try {
    path = decodeURIComponent(new URL(request.url, "http://localhost").pathname);
  } catch {
    return answer(response, 400, "malformed URL");
  }
  if (path.includes("\0")) return answer(response, 400, "NUL byte in path");
  const [root, name] = path.startsWith("/data/") && roots.data ? [roots.data, path.slice(5)]
    : [roots.web, path === "/" ? "/index.html" : path];
  const found = await fileUnder(root, name);
  if (!found) return answer(response, 404, `not found: ${path}`);
  response.writeHead(200, { "content-type": TYPES[extname(name)] || "application/octet-stream",
                            "content-length": found.size });
  if (request.method === "HEAD") return response.end();
  // pipeline closes the file when the client goes away and swallows the error that this raises
  pipeline(createReadStream(found.real), response, () => {});
}

/** Start serving; resolves to {server, url}. port 0 picks a free port. */
export function startServer({ port = 8080, dataDir = null, host = "127.0.0.1" } = {}) {
  const roots = { web: realRoot(WEB_ROOT), data: dataDir ? realRoot(dataDir) : null };
  const server = createServer((request, response) => {
    response.on("error", () => response.destroy());  // a client that hangs up mid-answer is no error of ours
    handle(request, response, roots).catch((error) => {  // a bug here costs one request, not the server
      console.error(`${request.method} ${request.url}:`, error);
      if (response.headersSent) response.destroy();
      else answer(response, 500, "internal error");
    }).catch(() => response.destroy());
  });
  return new Promise((done, fail) => {
    server.once("error", fail);
    server.listen(port, host, () => done({ server, url: `http://${host}:${server.address().port}/` }));
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
  const { url } = await startServer({ port: Number(option("--port", 8080)), dataDir: option("--data", null) });
  console.log(`serving ${WEB_ROOT} at ${url}`);
}

// Headless-Chromium driver for the page (used by tests/web/test_browser.py).
//   node test_driver.mjs --chromium /usr/bin/chromium --data DIR --image IMG --model A.onnx [--model B.onnx ...]
//                        [--threshold 0.6] [--runs 3] [--screenshot-dir DIR] [--timeout-ms 60000]
// For each model: open the page with ?model=/data/<model>&image=/data/<image>, wait until it has drawn,
// save <screenshot-dir>/<model>.png, and collect window.detectionResult. Prints one JSON object
// {"<model>": {faces, milliseconds, runs_ms, quantized, width, height}} on stdout; exit 1 on a page error.
import { join } from "node:path";
import puppeteer from "puppeteer-core";
import { startServer } from "./serve.mjs";

const args = process.argv.slice(2);
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const models = args.flatMap((value, index) => (args[index - 1] === "--model" ? [value] : []));
const chromium = option("--chromium", "/usr/bin/chromium");
const timeout = Number(option("--timeout-ms", 60000));

const { server, url } = await startServer({ port: 0, dataDir: option("--data", ".") });
const browser = await puppeteer.launch({
  executablePath: chromium, headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream"],
});
const results = {};
let failed = false;
try {
  for (const model of models) {
    const page = await browser.newPage();
    const logs = [];
    page.on("console", (message) => logs.push(message.text()));
    page.on("pageerror", (error) => logs.push(String(error)));
    const query = new URLSearchParams({ model: `/data/${model}`, image: `/data/${option("--image")}`,
                                        threshold: option("--threshold", "0.6"), runs: option("--runs", "3") });
    await page.goto(`${url}?${query}`);
    await page.waitForSelector("body[data-state]", { timeout });
    const state = await page.evaluate(() => document.body.dataset.state);
    if (state !== "done") {
      failed = true;
      results[model] = { error: await page.evaluate(() => window.detectionError), logs };
      continue;
    }
    results[model] = await page.evaluate(() => window.detectionResult);
    const width = results[model].width;
    await page.setViewport({ width: Math.min(1400, width + 40), height: 900 });
    if (option("--screenshot-dir")) {
      await page.screenshot({ path: join(option("--screenshot-dir"), `${model.replace(/[^\w.-]/g, "_")}.png`), fullPage: true });
    }
    await page.close();
  }
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(results));
process.exit(failed ? 1 : 0);

// Opens circuit-tracer's viewer on one graph in headless Chromium (playwright-core driving
// the system's chromium), waits for the link graph to draw, optionally clicks a feature
// node, and prints one JSON report on stdout. Run by viewer.py; not a test by itself.
//
//   node viewer_driver.cjs '{"playwright": ".../playwright-core", "chromium": "/usr/bin/chromium",
//                            "url": "http://127.0.0.1:PORT/index.html?slug=SLUG", "click": true, ...}'
"use strict";

const opts = JSON.parse(process.argv[2]);
const { chromium } = require(opts.playwright);

const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const NODE_SELECTOR = ".link-graph svg text.node"; // one per drawn node, d3 datum = the node

async function main() {
  const report = await run();
  process.stdout.write(JSON.stringify(report));
}

async function run() {
  const report = {
    drawn_node_ids: [], console_errors: [], console_messages: 0, page_errors: [],
    failed_requests: [], blocked_requests: [], requests: [], click: null, timings: {},
  };
  const t0 = Date.now();
  const context = await chromium.launchPersistentContext(opts.userDataDir, {
    executablePath: opts.chromium, headless: true, args: FLAGS, viewport: { width: 1400, height: 1000 },
  });
  report.timings.launch_ms = Date.now() - t0;
  try {
    const origin = new URL(opts.url).origin;
    // Nothing leaves the machine: anything not on the local server is aborted and recorded,
    // so an offline run fails fast and says what the page wanted.
    await context.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith(origin)) return route.continue();
      report.blocked_requests.push({ url, method: route.request().method() });
      return route.abort("blockedbyclient");
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (msg) => {
      report.console_messages += 1;
      if (msg.type() === "error") report.console_errors.push(msg.text());
    });
    page.on("pageerror", (err) => report.page_errors.push(String(err && err.stack || err)));
    page.on("request", (req) => report.requests.push({ url: req.url(), method: req.method(), t: Date.now() - t0 }));
    page.on("requestfailed", (req) => {
      const failure = req.failure() ? req.failure().errorText : "failed";
      if (failure.includes("ERR_BLOCKED_BY_CLIENT")) return; // recorded in blocked_requests
      report.failed_requests.push({ url: req.url(), method: req.method(), error: failure });
    });
    page.on("response", (res) => {
      if (res.status() >= 400) report.failed_requests.push({ url: res.url(), method: res.request().method(), status: res.status() });
    });

    await page.goto(opts.url, { waitUntil: "load", timeout: opts.timeoutMs });
    try {
      await page.waitForSelector(NODE_SELECTOR, { state: "attached", timeout: opts.timeoutMs });
    } catch (err) {
      // nothing drew: report what the page said instead of failing blind
      report.error = `no ${NODE_SELECTOR} within ${opts.timeoutMs} ms`;
      report.body_text = (await page.locator("body").innerText().catch(() => "")).slice(0, 2000);
      return report;
    }
    // the graph draws in one go after its JSON arrives; wait until the count holds still
    let last = -1;
    for (let i = 0; i < 50; i++) {
      const n = await page.locator(NODE_SELECTOR).count();
      if (n === last) break;
      last = n;
      await page.waitForTimeout(200);
    }
    report.timings.drawn_ms = Date.now() - t0;
    report.drawn_node_ids = await page.$$eval(NODE_SELECTOR, (els) => els.map((e) => e.__data__ && e.__data__.nodeId));
    report.drawn_nodes = await page.$$eval(NODE_SELECTOR, (els) => els.map((e) => ({
      node_id: e.__data__.nodeId, feature_type: e.__data__.feature_type, feature: e.__data__.feature,
      layer: e.__data__.layer, ctx_idx: e.__data__.ctx_idx,
    })));

    if (opts.click) {
      const target = opts.clickNodeId
        ? report.drawn_nodes.find((d) => d.node_id === opts.clickNodeId)
        : report.drawn_nodes.find((d) => d.feature_type === "cross layer transcoder");
      if (!target) {
        report.click = { error: "no feature node drawn to click" };
      } else {
        const index = report.drawn_nodes.indexOf(target);
        const box = await page.locator(NODE_SELECTOR).nth(index).boundingBox();
        const before = report.requests.length;
        const [beforeConsole, beforePage] = [report.console_errors.length, report.page_errors.length];
        await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
        await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
        await page.waitForLoadState("networkidle", { timeout: 10000 }).catch(() => {});
        await page.waitForTimeout(opts.settleMs);
        const clicked = await page.$$eval(`${NODE_SELECTOR}.clicked`, (els) => els.map((e) => e.__data__.nodeId));
        report.click = {
          target: target.node_id,
          feature_index: target.feature,
          clicked_node_ids: clicked,
          panel_text: await page.locator(".feature-detail").innerText().catch((e) => `(no .feature-detail: ${e})`),
          panel_title: await page.locator(".feature-detail .feature-title").first().innerText({ timeout: 2000 }).catch(() => null),
          requests: report.requests.slice(before),
          errors: [...report.console_errors.slice(beforeConsole), ...report.page_errors.slice(beforePage)],
        };
      }
    }
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot });
  } finally {
    await context.close();
  }
  report.timings.total_ms = Date.now() - t0;
  return report;
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + "\n");
  process.exit(1);
});

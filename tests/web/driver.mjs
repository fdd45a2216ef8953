// Drive the system Chromium through a list of steps with playwright-core; report JSON.
//
// stdin: {"executable": "/usr/bin/chromium", "steps": [{op, ...}], "timeout_ms": 15000,
//         "args"?: [extra Chromium flags, e.g. --use-file-for-fake-audio-capture=F.wav]}
// stdout: {"ok": bool, "results": [...], "error"?, "failed_step"?, "console": [...],
//          "page_errors": [...], "body_text"?}
//
// Steps: goto {url} · wait_text {selector, pattern} (regex on innerText; returns the text) ·
// wait_value {selector, pattern} (input/select value) · select {selector, value} ·
// fill {selector, value} · click {selector} · text {selector} · eval {expr} ·
// call {fn} (a function's source, called in the page; its result is returned) ·
// screenshot {path, full_page}. The test (pytest) makes the assertions; this only acts and
// observes. Playwright gives the browser a fresh temporary profile (--user-data-dir) itself.
import { chromium } from 'playwright-core';

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
];

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

async function waitFor(page, step, timeout, read) {
  const re = new RegExp(step.pattern, step.flags || '');
  const deadline = Date.now() + (step.timeout_ms || timeout);
  let last = null;
  for (;;) {
    last = await read(page.locator(step.selector).first()).catch(() => null);
    if (last !== null && re.test(last)) return last;
    if (Date.now() > deadline) {
      throw new Error(`${step.selector} did not match /${step.pattern}/; last: ${JSON.stringify(last)}`);
    }
    await page.waitForTimeout(50);
  }
}

async function run(page, step, timeout) {
  switch (step.op) {
    case 'goto':
      return (await page.goto(step.url, {waitUntil: 'load', timeout}))?.status() ?? null;
    case 'wait_text':
      return waitFor(page, step, timeout, (loc) => loc.innerText({timeout: 500}));
    case 'wait_value':
      return waitFor(page, step, timeout, (loc) => loc.inputValue({timeout: 500}));
    case 'select':
      return page.selectOption(step.selector, step.value, {timeout});
    case 'fill':
      return page.fill(step.selector, step.value, {timeout});
    case 'click':
      return page.click(step.selector, {timeout});
    case 'text':
      return page.locator(step.selector).first().innerText({timeout});
    case 'eval':
      return page.evaluate(step.expr);
    case 'call':
      return page.evaluate(`(${step.fn})()`);
    case 'screenshot':
      await page.screenshot({path: step.path, fullPage: !!step.full_page, timeout});
      return step.path;
    default:
      throw new Error(`unknown step ${JSON.stringify(step)}`);
  }
}

const spec = await readStdin();
const timeout = spec.timeout_ms || 15000;
const out = {ok: true, results: [], console: [], page_errors: []};
let browser;
try {
  browser = await chromium.launch({
    executablePath: spec.executable || '/usr/bin/chromium', headless: true,
    args: [...FLAGS, ...(spec.args || [])],
    timeout,
  });
  const context = await browser.newContext({viewport: {width: 1200, height: 800}});
  const page = await context.newPage();
  page.on('console', (m) => out.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => out.page_errors.push(String(e)));
  for (const [i, step] of spec.steps.entries()) {
    try {
      out.results.push(await run(page, step, timeout) ?? null);
    } catch (err) {
      out.ok = false;
      out.failed_step = i;
      out.error = String(err && err.message || err).split('\n').slice(0, 6).join('\n');
      out.body_text = await page.locator('body').innerText({timeout: 1000}).catch(() => null);
      break;
    }
  }
} catch (err) {
  out.ok = false;
  out.error = `browser: ${err && err.message || err}`;
} finally {
  if (browser) await browser.close().catch(() => {});
}
process.stdout.write(JSON.stringify(out) + '\n');

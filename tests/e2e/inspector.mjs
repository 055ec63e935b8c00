#!/usr/bin/env node
// Headless-Chromium end-to-end test of the hookrelay inspector page.
//
//   node tests/e2e/inspector.mjs <base_url> <bin_id> <bin_key> [screenshot.png]
//
// or with HOOKRELAY_URL, HOOKRELAY_BIN, HOOKRELAY_KEY, SCREENSHOT in the environment.
// CHROMIUM overrides the browser path (default: /usr/bin/chromium, then chromium-browser).
// Needs a running hookrelay server that listens on loopback (replay targets on loopback
// are allowed then). Prints one line per step; exits 1 with a clear message on failure.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

const [argBase, argBin, argKey, argShot] = process.argv.slice(2);
const BASE = (argBase || process.env.HOOKRELAY_URL || '').replace(/\/+$/, '');
const BIN = argBin || process.env.HOOKRELAY_BIN || '';
const KEY = argKey || process.env.HOOKRELAY_KEY || '';
const SHOT = argShot || process.env.SCREENSHOT || 'target/inspector.png';
const STEP_TIMEOUT = 15000;
const TOTAL_TIMEOUT = 120000;

if (!BASE || !BIN || !KEY) {
  console.error('usage: node inspector.mjs <base_url> <bin_id> <bin_key> [screenshot.png]');
  process.exit(2);
}

const XSS_IMG = '<img src=x onerror="window.__xss=1">';
const XSS_SCRIPT = '<script>window.__xss=1</script>';
const PAYMENT = '{"event":"payment.success","orderId":"1312312","amount":738.05,"currency":"USD","timestamp":"1758613403"}';

let stepNo = 0;
const problems = []; // console errors, dialogs, CSP violations: checked after each step

function step(msg) {
  stepNo += 1;
  console.log(`[e2e] ${String(stepNo).padStart(2, '0')} ${msg}`);
}

class TestFailure extends Error {}
function fail(msg) {
  throw new TestFailure(msg);
}
function check(cond, msg) {
  if (!cond) fail(msg);
}

function findChromium() {
  const candidates = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(Boolean);
  for (const c of candidates) if (fs.existsSync(c)) return c;
  fail(`no Chromium found (tried ${candidates.join(', ')}); apt-get install chromium or set CHROMIUM`);
}

// A loopback HTTP server used as the replay target. It answers with XSS payloads in a
// header and the body, so the delivery view is checked too.
function startTarget() {
  const received = [];
  const srv = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const headers = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
      received.push({ method: req.method, url: req.url, headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(200, { 'Content-Type': 'text/html', 'X-Evil': XSS_SCRIPT });
      res.end(`ok ${XSS_IMG}`);
    });
  });
  return new Promise((resolve) => {
    srv.listen(0, '127.0.0.1', () => resolve({ srv, received, url: `http://127.0.0.1:${srv.address().port}/hook` }));
  });
}

async function send(pathAndQuery, { method = 'POST', headers = {}, body } = {}) {
  const res = await fetch(`${BASE}${pathAndQuery}`, { method, headers, body });
  await res.arrayBuffer();
  check(res.ok, `ingest ${method} ${pathAndQuery} answered ${res.status}`);
  const seq = Number(res.headers.get('x-hookrelay-seq'));
  check(Number.isInteger(seq) && seq > 0, `ingest response has no X-Hookrelay-Seq header (got ${res.headers.get('x-hookrelay-seq')})`);
  return seq;
}

function checkProblems(where) {
  if (problems.length) fail(`${where}: ${problems.join(' | ')}`);
}

async function noXss(page, where) {
  const r = await page.evaluate(() => ({
    xss: typeof window.__xss,
    imgs: document.querySelectorAll('img').length,
    handlers: document.querySelectorAll('[onerror],[onload],[onclick]').length,
    scripts: [...document.scripts].map((s) => s.getAttribute('src') || `inline:${s.textContent.slice(0, 40)}`),
    csp: window.__csp || [],
  }));
  check(r.xss === 'undefined', `${where}: window.__xss is set — injected script ran`);
  check(r.imgs === 0, `${where}: ${r.imgs} <img> element(s) in the DOM — capture data was parsed as HTML`);
  check(r.handlers === 0, `${where}: elements with inline event handler attributes exist`);
  const bad = r.scripts.filter((s) => !/^\/static\/[\w.-]+\.js$/.test(s));
  check(bad.length === 0, `${where}: unexpected script elements: ${bad.join(', ')}`);
  check(r.csp.length === 0, `${where}: CSP violations: ${r.csp.join(', ')}`);
}

// Wait for a locator; on timeout fail with `what` plus whatever the page is telling the user.
async function waitFor(page, locator, what) {
  try {
    await locator.waitFor();
  } catch {
    const toasts = await page.$$eval('.toast', (ts) => ts.map((t) => t.textContent)).catch(() => []);
    const status = await page.textContent('[data-testid=status]').catch(() => '?');
    fail(`${what} (status: ${JSON.stringify(status)}${toasts.length ? `; messages: ${toasts.map((t) => JSON.stringify(t)).join(', ')}` : ''})`);
  }
}

async function texts(page, selector) {
  return page.$$eval(selector, (els) => els.map((e) => e.textContent));
}

let currentPage = null; // for a screenshot when a step fails

async function main() {
  const exe = findChromium();
  const userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hookrelay-e2e-'));
  const target = await startTarget();
  let context;
  try {
    step(`launch ${exe}`);
    context = await chromium.launchPersistentContext(userDir, {
      executablePath: exe,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1440, height: 900 },
      timeout: 30000,
    });
    context.setDefaultTimeout(STEP_TIMEOUT);
    const origin = new URL(BASE).origin;
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
    await context.addInitScript(() => {
      window.__csp = [];
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`);
      });
    });
    const page = context.pages()[0] || await context.newPage();
    currentPage = page;
    page.on('dialog', async (d) => {
      problems.push(`unexpected ${d.type()} dialog: ${JSON.stringify(d.message())}`);
      await d.dismiss().catch(() => {});
    });
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));

    // ---------------------------------------------------------- open and go live
    step(`open ${BASE}/i/${BIN}#key=…`);
    const resp = await page.goto(`${BASE}/i/${encodeURIComponent(BIN)}#key=${encodeURIComponent(KEY)}`);
    check(resp && resp.ok(), `inspector page answered ${resp && resp.status()}`);
    const csp = resp.headers()['content-security-policy'] || '';
    check(csp.includes("script-src 'self'"), `inspector page has no strict CSP header (got ${JSON.stringify(csp)})`);

    step('wait for status "live"');
    await waitFor(page, page.locator('[data-testid=status]').filter({ hasText: 'live' }), 'status never became live');
    check(!page.url().includes('key='), `the key is still in the address bar: ${page.url()}`);
    const shownInbound = await page.textContent('[data-testid=inbound-url]');
    check(shownInbound === `${origin}/${BIN}`, `inbound URL shows ${JSON.stringify(shownInbound)}`);
    checkProblems('after load');

    // ---------------------------------------------------------- a live capture
    step('POST payment.success with X-Test-Case: Mixed');
    const seq = await send(`/${BIN}/stripe/events?a=1`, {
      headers: { 'Content-Type': 'application/json', 'X-Test-Case': 'Mixed' },
      body: PAYMENT,
    });

    step(`wait for row seq=${seq} to appear live`);
    const row = page.locator(`[data-testid=capture-list] [data-testid=capture-row][data-seq="${seq}"]`);
    await waitFor(page, row, `row for seq ${seq} did not appear in the live list`);
    const rowText = await row.textContent();
    check(rowText.includes('POST') && rowText.includes('/stripe/events'), `row text looks wrong: ${JSON.stringify(rowText)}`);
    const firstSeq = await page.getAttribute('[data-testid=capture-list] [data-testid=capture-row]', 'data-seq');
    check(Number(firstSeq) === seq, `newest capture is not on top (top row is seq ${firstSeq})`);

    step('select it and check the headers table');
    await row.click();
    await waitFor(page, page.locator('[data-testid=detail-headers]'), 'no headers table after selecting the row');
    const headerRows = await page.$$eval('[data-testid=detail-headers] tr', (trs) => trs.map((tr) => [tr.cells[0].textContent, tr.cells[1].textContent]));
    check(headerRows.some(([n, v]) => n === 'X-Test-Case' && v === 'Mixed'),
      `headers table has no "X-Test-Case: Mixed" row with that exact case: ${JSON.stringify(headerRows)}`);
    const queryRows = await texts(page, '[data-testid=detail-query] tr');
    check(queryRows.some((t) => t === 'a1'), `query table does not show a=1: ${JSON.stringify(queryRows)}`);

    step('check the body pane shows pretty JSON');
    const bodyText = await page.textContent('[data-testid=detail-body]');
    check(bodyText.includes('{\n  "event": "payment.success",\n  "orderId": "1312312",\n  "amount": 738.05,'),
      `body pane is not pretty JSON: ${JSON.stringify(bodyText.slice(0, 300))}`);
    await page.click('[data-testid=body-view-raw]');
    check((await page.textContent('[data-testid=detail-body]')).includes(PAYMENT), 'raw view does not show the exact body');
    await page.click('[data-testid=body-view-hex]');
    check((await page.textContent('[data-testid=detail-body]')).startsWith('00000000  7b 22 65 76'), 'hex view does not start with the body bytes');
    await page.click('[data-testid=body-view-pretty]');

    step('copy as cURL');
    await page.click('[data-testid=copy-curl]');
    const curlBox = page.locator('[data-testid=curl-box] textarea');
    await waitFor(page, curlBox, 'no cURL command shown after "Copy as cURL"');
    const curl = await curlBox.inputValue();
    check(/^curl /.test(curl) && curl.includes('stripe/events'), `cURL command looks wrong: ${JSON.stringify(curl.slice(0, 200))}`);
    const clip = await page.evaluate(() => navigator.clipboard.readText()).catch((e) => `unreadable: ${e.message}`);
    console.log(`[e2e]    clipboard ${clip === curl ? 'holds the command' : `check skipped (${clip.slice(0, 60)})`}`);

    step(`replay to ${target.url}`);
    await page.fill('[data-testid=replay-target]', target.url);
    await page.click('[data-testid=replay]');
    const result = page.locator('[data-testid=replay-result] [data-testid=delivery]');
    await waitFor(page, result, `no delivery shown after replay: ${JSON.stringify(await page.textContent('[data-testid=replay-result]'))}`);
    const resultText = await result.textContent();
    check(resultText.includes('200'), `replay result does not show status 200: ${JSON.stringify(resultText.slice(0, 300))}`);
    check(target.received.length >= 1, 'the replay target received nothing');
    const got = target.received[0];
    check(got.body === PAYMENT, `replayed body differs: ${JSON.stringify(got.body)}`);
    check(got.headers.some(([n, v]) => n.toLowerCase() === 'x-test-case' && v === 'Mixed'), 'replayed request lacks X-Test-Case');
    await waitFor(page, page.locator(`[data-testid=capture-list] [data-testid=capture-row][data-seq="${seq}"] .dl-ok`), 'the row has no delivery badge after the replay');
    const remembered = await page.evaluate((b) => localStorage.getItem(`hookrelay.replay.${b}`), BIN);
    check(remembered === target.url, 'replay target was not remembered for the bin');
    checkProblems('after replay');

    step(`screenshot ${SHOT}`);
    fs.mkdirSync(path.dirname(path.resolve(SHOT)), { recursive: true });
    await page.$eval('[data-testid=detail]', (d) => { d.scrollTop = 0; });
    await page.screenshot({ path: SHOT });

    // ---------------------------------------------------------- XSS pass
    step('POST a capture full of HTML/script payloads');
    const xssPath = `/${BIN}/${encodeURIComponent(XSS_SCRIPT)}/${encodeURIComponent(XSS_IMG)}`;
    const xssQuery = `?q=${encodeURIComponent(XSS_IMG)}&s=${encodeURIComponent(XSS_SCRIPT)}`;
    const xssBody = `${XSS_IMG}\n${XSS_SCRIPT}\n`;
    const xssSeq = await send(xssPath + xssQuery, {
      headers: { 'Content-Type': 'text/html', 'X-Evil-Img': XSS_IMG, 'X-Evil-Script': XSS_SCRIPT },
      body: xssBody,
    });
    const xssRow = page.locator(`[data-testid=capture-list] [data-testid=capture-row][data-seq="${xssSeq}"]`);
    await waitFor(page, xssRow, `row for XSS seq ${xssSeq} did not appear`);

    step('open its detail and check the payloads are shown as text');
    await xssRow.click();
    await waitFor(page, page.locator('[data-testid=detail] [data-testid=detail-headers]'), 'no headers table for the XSS capture');
    const xHeaders = await page.$$eval('[data-testid=detail-headers] tr', (trs) => trs.map((tr) => [tr.cells[0].textContent, tr.cells[1].textContent]));
    check(xHeaders.some(([n, v]) => n === 'X-Evil-Img' && v === XSS_IMG), `header value with <img> not shown verbatim: ${JSON.stringify(xHeaders)}`);
    check(xHeaders.some(([n, v]) => n === 'X-Evil-Script' && v === XSS_SCRIPT), 'header value with <script> not shown verbatim');
    const xQuery = await page.$$eval('[data-testid=detail-query] td', (tds) => tds.map((t) => t.textContent));
    check(xQuery.includes(XSS_IMG) && xQuery.includes(XSS_SCRIPT), `decoded query payloads not shown as text: ${JSON.stringify(xQuery)}`);
    const xBody = await page.textContent('[data-testid=detail-body]');
    check(xBody.includes(XSS_IMG) && xBody.includes(XSS_SCRIPT), `body payloads not shown as text: ${JSON.stringify(xBody.slice(0, 200))}`);
    const visible = await page.locator('[data-testid=detail-body]').innerText();
    check(visible.includes(XSS_SCRIPT), 'body payload is not visible (innerText)');
    const xRowText = await xssRow.textContent();
    check(xRowText.includes(encodeURIComponent(XSS_SCRIPT)), `row does not show the (percent-encoded) path: ${JSON.stringify(xRowText)}`);
    await noXss(page, 'XSS capture detail');

    step('replay it to a target that answers with payloads too');
    await page.click('[data-testid=replay]');
    const xResult = page.locator('[data-testid=replay-result] [data-testid=delivery]');
    await waitFor(page, xResult, 'no delivery shown after replaying the XSS capture');
    await xResult.locator('summary').click().catch(() => {});
    const xResultText = await xResult.textContent();
    check(xResultText.includes(XSS_IMG), `delivery response body not shown as text: ${JSON.stringify(xResultText.slice(0, 300))}`);
    await page.waitForTimeout(300);
    await noXss(page, 'XSS delivery');

    step('filter the list client-side');
    await page.fill('[data-testid=filter]', 'payment.success');
    await page.waitForTimeout(300);
    check(await page.isVisible(`[data-testid=capture-row][data-seq="${seq}"]`), 'filter hid the matching row');
    check(!(await page.isVisible(`[data-testid=capture-row][data-seq="${xssSeq}"]`)), 'filter did not hide the other row');
    await page.fill('[data-testid=filter]', '');
    await page.waitForTimeout(300);
    check(await page.isVisible(`[data-testid=capture-row][data-seq="${xssSeq}"]`), 'clearing the filter did not show the row again');

    step('extra screenshots (dark, narrow)');
    const ext = path.extname(SHOT) || '.png';
    const stem = SHOT.slice(0, SHOT.length - path.extname(SHOT).length);
    await page.click(`[data-testid=capture-row][data-seq="${seq}"]`);
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.screenshot({ path: `${stem}-dark${ext}` });
    await page.emulateMedia({ colorScheme: 'light' });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForTimeout(200);
    await page.screenshot({ path: `${stem}-narrow${ext}`, fullPage: true });

    await noXss(page, 'end');
    checkProblems('end');
    console.log(`[e2e] PASS — ${stepNo} steps; screenshots: ${SHOT}, ${stem}-dark${ext}, ${stem}-narrow${ext}`);
  } catch (e) {
    if (currentPage) {
      const ext = path.extname(SHOT) || '.png';
      const failShot = `${SHOT.slice(0, SHOT.length - path.extname(SHOT).length)}-failure${ext}`;
      try {
        fs.mkdirSync(path.dirname(path.resolve(failShot)), { recursive: true });
        await currentPage.screenshot({ path: failShot, timeout: 5000 });
        console.error(`[e2e] screenshot of the failure: ${failShot}`);
      } catch { /* the page may be gone */ }
    }
    throw e;
  } finally {
    if (context) await context.close().catch(() => {});
    target.srv.close();
    fs.rmSync(userDir, { recursive: true, force: true });
  }
}

const watchdog = setTimeout(() => {
  console.error(`[e2e] FAIL — timed out after ${TOTAL_TIMEOUT / 1000}s (step ${stepNo})`);
  process.exit(1);
}, TOTAL_TIMEOUT);

main().then(() => {
  clearTimeout(watchdog);
  process.exit(0);
}, (e) => {
  clearTimeout(watchdog);
  const msg = e instanceof TestFailure ? e.message : (e && e.stack) || String(e);
  console.error(`[e2e] FAIL at step ${stepNo}: ${msg}`);
  if (problems.length && !(e instanceof TestFailure && msg.includes(problems[0]))) {
    console.error(`[e2e] page problems: ${problems.join(' | ')}`);
  }
  process.exit(1);
});

// Object kinds that viewer_e2e.mjs does not open, in Debian's Chromium (run by
// test_qa_viewer_kinds.py, which starts `archivist serve` and stores the objects). It measures
// and reports; the pytest side decides. Input: one JSON argument
//   { baseUrl, artefacts, markers: [patient name as listed...],
//     open: [{name, studyUid, scroll?: n, load?: [{series, expect}]}] }
// Output (last line of stdout): { list: {marker: [cells]}, studies: [...], failedRequests,
// consoleErrors }.
import { chromium } from 'playwright-core';
import { join } from 'node:path';

const input = JSON.parse(process.argv[process.argv.length - 1]);
const base = input.baseUrl;
const out = { list: {}, studies: [], failedRequests: [], consoleErrors: [] };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--use-angle=swiftshader',
         '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
let current = 'list';
context.on('response', (resp) => {
  if (resp.status() >= 400 && resp.url().startsWith(base)) {
    out.failedRequests.push({ study: current, url: resp.url().replace(base, '').slice(0, 300),
                              status: resp.status() });
  }
});
page.on('console', (msg) => {
  if (msg.type() === 'error') out.consoleErrors.push({ study: current, text: msg.text().slice(0, 300) });
});
page.on('pageerror', (err) => out.consoleErrors.push({ study: current, text: 'pageerror: ' + String(err).slice(0, 300) }));

// Every visible viewport canvas: share of non-black pixels, grey levels, share of coloured
// pixels, and a checksum (to see a frame change).
const sample = () => page.evaluate(() => {
  const res = [];
  for (const c of document.querySelectorAll('canvas')) {
    const r = c.getBoundingClientRect();
    if (r.width < 64 || r.height < 64 || c.width < 64 || c.height < 64) continue;
    const s = document.createElement('canvas');
    s.width = c.width; s.height = c.height;
    const ctx = s.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(c, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let bright = 0, total = 0, colour = 0, sum = 0;
    const levels = new Set();
    const step = Math.max(1, Math.floor(Math.sqrt((c.width * c.height) / 40000)));
    for (let y = 0; y < c.height; y += step) {
      for (let x = 0; x < c.width; x += step) {
        const i = (y * c.width + x) * 4;
        const l = (d[i] + d[i + 1] + d[i + 2]) / 3;
        total++;
        if (l > 12) bright++;
        if (Math.abs(d[i] - d[i + 1]) > 30 || Math.abs(d[i + 1] - d[i + 2]) > 30) colour++;
        levels.add(Math.round(l));
        sum = (sum * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) % 1000000007;
      }
    }
    res.push({ nonBlack: bright / total, levels: levels.size, colour: colour / total, sum });
  }
  return res;
});
const shown = (s) => s.some((c) => c.nonBlack > 0.02 && c.levels >= 8);
const text = async () => (await page.evaluate(() => document.body.innerText)).replace(/\s+/g, ' ');
async function poll(fn, ok, ms) {
  const end = Date.now() + ms;
  let v = await fn();
  while (!ok(v) && Date.now() < end) { await sleep(300); v = await fn(); }
  return v;
}
async function dismiss() {  // OHIF's first-visit notices cover the page
  for (const name of ['Skip all', 'Confirm and hide']) {
    const b = page.getByRole('button', { name });
    if (await b.count() && await b.first().isVisible()) await b.first().click().catch(() => {});
  }
}

// 1. The study list: the row of each study, by its patient name as OHIF shows it.
await page.goto(base + '/', { waitUntil: 'domcontentloaded' });
out.list = await poll(() => page.evaluate((markers) => {
  const rows = {};
  for (const tr of document.querySelectorAll('tr')) {
    for (const m of markers) {
      if (tr.innerText.includes(m)) rows[m] = Array.from(tr.querySelectorAll('td'), (td) => td.innerText.trim());
    }
  }
  return rows;
}, input.markers), (rows) => Object.keys(rows).length === input.markers.length, 30000);
await dismiss();

// 2. Each study: an image on the canvas; scrolling changes the frame; series loaded on request.
for (const study of input.open) {
  current = study.name;
  const got = { name: study.name };
  await page.goto(`${base}/viewer?StudyInstanceUIDs=${study.studyUid}`, { waitUntil: 'domcontentloaded' });
  let samples = await poll(sample, shown, 30000);
  await sleep(500);
  samples = await sample();
  got.shown = shown(samples);
  got.samples = samples;
  await dismiss();
  if (study.scroll) {
    const el = await page.$('.cornerstone-viewport-element, [data-viewport-uid]');
    if (el) {
      const b = await el.boundingBox();
      await page.mouse.move(b.x + b.width / 2, b.y + b.height / 2);
    }
    const before = samples.map((c) => c.sum).join();
    for (let i = 0; i < study.scroll; i++) { await page.mouse.wheel(0, 120); await sleep(250); }
    const after = await poll(sample, (s) => s.map((c) => c.sum).join() !== before && shown(s), 5000);
    got.scrolled = { changed: after.map((c) => c.sum).join() !== before, shown: shown(after) };
  }
  got.loaded = [];
  for (const step of study.load || []) {
    await dismiss();
    await page.getByText(step.series, { exact: true }).first().dblclick({ timeout: 10000 })
      .catch((e) => got.loaded.push({ series: step.series, error: String(e).slice(0, 200) }));
    const yes = page.getByRole('button', { name: 'Yes' });
    await poll(async () => (await yes.count()) || (await text()).includes(step.expect || '\u0000'),
               Boolean, 5000);
    if (await yes.count()) await yes.first().click().catch(() => {});
    const state = await poll(async () => ({ text: await text(), samples: await sample() }),
                             (s) => (step.expect ? s.text.includes(step.expect)
                                     : s.samples.some((c) => c.colour > 0.002)), 20000);
    got.loaded.push({ series: step.series, expectSeen: step.expect ? state.text.includes(step.expect) : null,
                      colour: Math.max(0, ...state.samples.map((c) => c.colour)) });
    await page.screenshot({ path: join(input.artefacts, `qa-kinds-${study.name}-${got.loaded.length}.png`) });
  }
  await page.screenshot({ path: join(input.artefacts, `qa-kinds-${study.name}.png`) });
  out.studies.push(got);
}
await browser.close();
console.log(JSON.stringify(out));

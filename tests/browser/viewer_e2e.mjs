// End-to-end check of the OHIF viewer and the /archive/ page in Debian's Chromium.
//
// Run by tests/browser/test_browser_viewer.py, which starts `archivist serve`, stores the test
// objects, and then checks the JSON this script prints on its last line of stdout. The script
// measures and reports; the pytest side decides. Input: one JSON argument
//   { baseUrl, artefacts, studyList: {count, markers: [text...]},
//     open: [{name, studyUid, query?, minRendered?, selector?}],
//     upload: {file, studyUid}, drop: {file, name, studyUid} }
import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

const input = JSON.parse(process.argv[2]);
const base = input.baseUrl;
mkdirSync(input.artefacts, { recursive: true });
const results = { studyList: null, studies: [], upload: null, drop: null, failedRequests: [],
                  consoleErrors: [], crossOriginIsolated: null };

// Flags from the machine notes: headless, no sandbox (root), no background networking (the
// network is closed). WebGL through SwiftShader: no GPU on CI machines.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--use-angle=swiftshader',
         '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
});

function watch(page, context) {
  context.on('response', (resp) => {
    if (resp.status() >= 400) {
      results.failedRequests.push({ url: resp.url().replace(base, ''), status: resp.status(),
                                    method: resp.request().method() });
    }
  });
  context.on('requestfailed', (req) => {
    results.failedRequests.push({ url: req.url().replace(base, ''), status: 0,
                                  error: req.failure()?.errorText });
  });
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      const where = (msg.location() && msg.location().url || '').replace(base, '');
      results.consoleErrors.push(msg.text().slice(0, 300) + (where ? ' @ ' + where : ''));
    }
  });
  page.on('pageerror', (err) => results.consoleErrors.push('pageerror: ' + String(err).slice(0, 300)));
}

// Sample the pixels of every visible canvas larger than 64x64 (the viewport canvases), by
// drawing each onto a scratch 2D canvas. Returns, per canvas: size, fraction of pixels that are
// not near-black, and the number of distinct grey levels seen on a grid of samples.
async function sampleCanvases(page) {
  return page.evaluate(() => {
    const out = [];
    for (const c of document.querySelectorAll('canvas')) {
      const r = c.getBoundingClientRect();
      if (r.width < 64 || r.height < 64 || c.width < 64 || c.height < 64) continue;
      const scratch = document.createElement('canvas');
      scratch.width = c.width; scratch.height = c.height;
      const ctx = scratch.getContext('2d', { willReadFrequently: true });
      try { ctx.drawImage(c, 0, 0); } catch (e) { out.push({ error: String(e) }); continue; }
      const data = ctx.getImageData(0, 0, c.width, c.height).data;
      let bright = 0, total = 0;
      const levels = new Set();
      const step = Math.max(1, Math.floor(Math.sqrt((c.width * c.height) / 40000)));
      for (let y = 0; y < c.height; y += step) {
        for (let x = 0; x < c.width; x += step) {
          const i = (y * c.width + x) * 4;
          const lum = (data[i] + data[i + 1] + data[i + 2]) / 3;
          total++;
          if (lum > 12) bright++;
          levels.add(Math.round(lum));
        }
      }
      out.push({ width: c.width, height: c.height, className: String(c.className),
                 nonBlackFraction: bright / total, greyLevels: levels.size });
    }
    return out;
  });
}

// An image is on a canvas when a good part of it is not black and it has many grey levels; a
// study "rendered" when at least `n` canvases hold one (3 for an MPR layout).
function renderedCount(samples) {
  return samples.filter((s) => s.nonBlackFraction > 0.02 && s.greyLevels >= 8).length;
}

// Images in the study browser (thumbnails): how many are loaded and not black.
async function sampleThumbnails(page) {
  return page.evaluate(() => {
    const out = [];
    for (const img of document.querySelectorAll('img')) {
      const r = img.getBoundingClientRect();
      if (!img.complete || img.naturalWidth < 16 || r.width < 16) continue;
      if (!/^(blob:|data:|http)/.test(img.src) || img.src.includes('/assets/')) continue;
      const c = document.createElement('canvas');
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext('2d');
      ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      let bright = 0;
      for (let i = 0; i < d.length; i += 4) if ((d[i] + d[i + 1] + d[i + 2]) / 3 > 12) bright++;
      out.push({ src: img.src.slice(0, 60), width: c.width, nonBlackFraction: bright / (d.length / 4) });
    }
    return out;
  });
}

// Click a button of OHIF's first-visit notices if it is showing (they only cover the screenshots).
async function dismiss(page, label) {
  const button = page.getByRole('button', { name: label });
  if (await button.count() && await button.first().isVisible()) {
    await button.first().click().catch(() => {});
  }
}

async function poll(fn, ok, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last = await fn();
  while (!ok(last) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    last = await fn();
  }
  return last;
}

const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
watch(page, context);

// 1. The study list at "/" shows every study: OHIF's "1-N of N" counter says N, one row per
//    study (a line with a study date), and each expected marker (a description, a modality) shows.
{
  const t0 = Date.now();
  await page.goto(base + '/', { waitUntil: 'domcontentloaded' });
  const look = () => page.evaluate((markers) => {
    const text = document.body.innerText;
    const counter = text.match(/\b(\d+)-(\d+) of (\d+)\b/);
    const rows = text.split('\n').filter((l) => /\b\d{2}-[A-Z][a-z]{2}-\d{4}\b/.test(l));
    return { total: counter ? Number(counter[3]) : null, rows: rows.length,
             seen: markers.filter((m) => text.includes(m)) };
  }, input.studyList.markers);
  const state = await poll(look, (s) => s.total === input.studyList.count &&
                           s.seen.length === input.studyList.markers.length, 120000);
  results.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
  await dismiss(page, 'Confirm and hide');  // the "investigational use" notice, once per browser
  await page.screenshot({ path: join(input.artefacts, 'study-list.png') });
  results.studyList = { ...state, ms: Date.now() - t0 };
}

// 2. Each study opens and its viewport canvas gets real pixels.
for (const study of input.open) {
  const t0 = Date.now();
  const need = study.minRendered || 1;
  await page.goto(`${base}/viewer?StudyInstanceUIDs=${encodeURIComponent(study.studyUid)}` +
                  (study.query || ''), { waitUntil: 'domcontentloaded' });
  if (study.selector) {  // a document rather than an image: wait for the element showing it
    let found = null;
    try {
      await page.waitForSelector(study.selector, { timeout: 120000, state: 'attached' });
      found = await page.$eval(study.selector, async (e) => {
        const src = String(e.data || e.src || '');
        // The first bytes of what the element shows (a blob: URL made from the bulk data).
        let head = null;
        try {
          head = new TextDecoder().decode((await (await fetch(src)).arrayBuffer()).slice(0, 8));
        } catch (err) { head = 'unreadable: ' + err; }
        return { tag: e.tagName, type: e.type || null, src, head };
      });
    } catch (e) { /* reported as not shown */ }
    await dismiss(page, 'Skip all');
    await page.screenshot({ path: join(input.artefacts, `viewer-${study.name}.png`) });
    results.studies.push({ name: study.name, shown: found, ms: Date.now() - t0 });
    continue;
  }
  const samples = await poll(() => sampleCanvases(page), (s) => renderedCount(s) >= need, 120000);
  const ms = Date.now() - t0;
  // Let the study browser's thumbnails arrive before looking at them: until one is a real
  // image (what the test asserts; the first <img> complete may still be a blank one), or a
  // minute on a loaded machine.
  const thumbs = await poll(() => sampleThumbnails(page),
                            (t) => t.some((x) => x.nonBlackFraction > 0.05), 60000);
  await dismiss(page, 'Skip all');  // the first-visit tour
  await page.screenshot({ path: join(input.artefacts, `viewer-${study.name}.png`) });
  results.studies.push({ name: study.name, rendered: renderedCount(samples) >= need,
                         renderedCanvases: renderedCount(samples), ms, canvases: samples,
                         thumbnails: thumbs });
}

// 3. The archive page: upload one file with the file picker, one by dropping it.
async function waitForUpload(n) {
  await page.waitForFunction((k) => Number(document.body.dataset.uploadsDone || 0) >= k, n,
                             { timeout: 60000 });
}

async function resultRows() {
  return page.$$eval('#results tbody tr', (trs) => trs.map((tr) => ({
    cls: tr.className, cells: Array.from(tr.cells, (td) => td.textContent) })));
}

async function studyRows() {
  return page.$$eval('#recent tr[data-study]', (trs) => trs.map((tr) => tr.dataset.study));
}

{
  await page.goto(base + '/archive/', { waitUntil: 'load' });
  const before = await studyRows();
  await page.setInputFiles('#file-input', input.upload.file);
  let error = null;
  try { await waitForUpload(1); } catch (e) { error = String(e); }
  const after = await studyRows();
  const progress = await page.$eval('#progress-bar', (p) => p.value).catch(() => null);
  results.upload = { error, rows: await resultRows(), studyWasListed: before.includes(input.upload.studyUid),
                     studyListed: after.includes(input.upload.studyUid), progress,
                     progressText: await page.$eval('#progress-text', (e) => e.textContent).catch(() => null) };
  await page.screenshot({ path: join(input.artefacts, 'archive-upload.png'), fullPage: true });
}

{
  const bytes = [...readFileSync(input.drop.file)];
  await page.evaluate(({ bytes, name }) => {
    const file = new File([new Uint8Array(bytes)], name, { type: 'application/dicom' });
    const dt = new DataTransfer();
    dt.items.add(file);
    const zone = document.getElementById('dropzone');
    for (const type of ['dragenter', 'dragover', 'drop']) {
      zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
    }
  }, { bytes, name: input.drop.name });
  let error = null;
  try { await waitForUpload(2); } catch (e) { error = String(e); }
  results.drop = { error, rows: await resultRows(),
                   studyListed: (await studyRows()).includes(input.drop.studyUid) };
  await page.screenshot({ path: join(input.artefacts, 'archive-drop.png'), fullPage: true });
}

// 4. The validation findings of an instance, from the study's page.
{
  await page.goto(`${base}/archive/studies/${encodeURIComponent(input.upload.studyUid)}`,
                  { waitUntil: 'load' });
  await page.click('button.findings');
  const cell = 'tr.findings-row:not([hidden]) td';
  let error = null;
  try {
    await page.waitForFunction((sel) => {
      const td = document.querySelector(sel);
      return td && td.textContent && !td.textContent.startsWith('loading');
    }, cell, { timeout: 30000 });
  } catch (e) { error = String(e); }
  results.findings = { error, text: await page.$eval(cell, (td) => td.innerText).catch(() => null) };
  await page.screenshot({ path: join(input.artefacts, 'archive-findings.png'), fullPage: true });
}

await browser.close();
console.log(JSON.stringify(results));

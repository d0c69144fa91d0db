// What a person sees on a few pages that viewer_e2e.mjs does not look at, in Debian's Chromium.
//
// Run by tests/browser/test_qa_viewer_pages.py, which starts `archivist serve` and stores the
// objects. The script measures and reports; the pytest side decides. Input: one JSON argument
//   { baseUrl, artefacts,
//     studyList: {uid, marker},            the study list row of `marker` (a patient name)
//     stopped: {studyUid},                 a study OHIF 3.13.2 cannot display (pydicom's test-SR)
//     upload: {files: [path...]},          files given to the archive page's file picker at once
//     search: {patient},                   typed into the archive page's search form
//     studyPage: {studyUid} }
// Output (last line of stdout): JSON with one entry per part.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const input = JSON.parse(process.argv[2]);
const base = input.baseUrl;
mkdirSync(input.artefacts, { recursive: true });
const results = { failedRequests: [], pageErrors: [] };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--use-angle=swiftshader',
         '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
context.on('response', (resp) => {
  if (resp.status() >= 400) {
    results.failedRequests.push({ url: resp.url().replace(base, ''), status: resp.status(),
                                  method: resp.request().method() });
  }
});
page.on('pageerror', (err) => results.pageErrors.push(String(err).slice(0, 300)));

const text = () => page.evaluate(() => document.body.innerText);

async function until(fn, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value || Date.now() > deadline) return value;
    await new Promise((r) => setTimeout(r, 500));
  }
}

// 1. The study list row of one study: its cells as the viewer shows them.
{
  await page.goto(base + '/', { waitUntil: 'domcontentloaded' });
  const row = await until(() => page.evaluate((marker) => {
    for (const tr of document.querySelectorAll('tr')) {
      if (tr.innerText.includes(marker)) {
        return Array.from(tr.querySelectorAll('td'), (td) => td.innerText.trim());
      }
    }
    return null;
  }, input.studyList.marker), 60000);
  results.studyList = { row };
  await page.screenshot({ path: join(input.artefacts, 'qa-study-list.png') });
}

// 2. A study the viewer cannot display: what does the page show after the viewer gave up?
{
  await page.goto(`${base}/viewer?StudyInstanceUIDs=${encodeURIComponent(input.stopped.studyUid)}`,
                  { waitUntil: 'domcontentloaded' });
  const alert = await until(() => page.evaluate(() => {
    const box = document.querySelector('[role="alert"]');
    return box && box.getBoundingClientRect().width > 0 ? box.innerText : null;
  }), 60000);
  const links = await page.$$eval('[role="alert"] a', (as) => as.map((a) => a.getAttribute('href')))
    .catch(() => []);
  results.stopped = { alert, links, visibleText: (await text()).slice(0, 2000) };
  await page.screenshot({ path: join(input.artefacts, 'qa-viewer-stopped.png') });
}

// 3. Uploads with the file picker: one row per file, in the order given, each with its result.
{
  await page.goto(base + '/archive/', { waitUntil: 'load' });
  await page.setInputFiles('#file-input', input.upload.files);
  let error = null;
  try {
    await page.waitForFunction(() => Number(document.body.dataset.uploadsDone || 0) >= 1, null,
                               { timeout: 60000 });
  } catch (e) { error = String(e); }
  const rows = await page.$$eval('#results tbody tr', (trs) => trs.map((tr) => ({
    cls: tr.className, cells: Array.from(tr.cells, (td) => td.textContent) })));
  results.upload = { error, rows,
                     progressText: await page.$eval('#progress-text', (e) => e.textContent) };
  await page.screenshot({ path: join(input.artefacts, 'qa-archive-upload.png'), fullPage: true });
}

// 3b. The upload from the keyboard (QA s22): the drop zone opens the file chooser with Enter,
// and Tab goes on to the "files" input (visually hidden, not hidden from the keyboard), which
// opens it with Space.
{
  // A listener first: it turns on Playwright's file chooser interception, which the first
  // waitForEvent would otherwise only ask for while the key is pressed (lost under load).
  page.on('filechooser', () => {});
  await page.goto(base + '/archive/', { waitUntil: 'load' });
  await page.evaluate(() => 1);
  // Three tries: on a loaded machine a chooser can be missed; a page whose key does nothing
  // opens none in any of them.
  const chooser = async (press) => {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await Promise.all([page.waitForEvent('filechooser', { timeout: 5000 }), press()]);
        return true;
      } catch (e) { /* try again */ }
    }
    return false;
  };
  await page.focus('#dropzone');
  const zoneOpensChooser = await chooser(() => page.keyboard.press('Enter'));
  await page.focus('#dropzone');
  await page.keyboard.press('Tab');
  const tabReaches = await page.evaluate(() => document.activeElement && document.activeElement.id);
  const inputOpensChooser = await chooser(() => page.keyboard.press('Space'));
  results.keyboard = { zoneOpensChooser, tabReaches, inputOpensChooser,
                       zoneRole: await page.$eval('#dropzone', (z) => z.getAttribute('role')),
                       progressLive: await page.$eval('#progress-text', (e) => e.getAttribute('aria-live')) };
}

// 4. The archive page's search form.
{
  await page.goto(base + '/archive/', { waitUntil: 'load' });
  let found = null;
  const form = await page.$('#search form');
  if (form) {
    await page.fill('#search input[name="patient"]', input.search.patient);
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }),
                       page.click('#search button[type="submit"]')]);
    found = { url: page.url().replace(base, ''),
              studies: await page.$$eval('#recent tr[data-study]', (trs) => trs.map((tr) => tr.dataset.study)),
              heading: await page.$eval('#recent h2', (h) => h.innerText).catch(() => null) };
  }
  results.search = { form: Boolean(form), found };
  await page.screenshot({ path: join(input.artefacts, 'qa-archive-search.png'), fullPage: true });
}

// 5. A study's page: the validation column of its instances.
{
  await page.goto(`${base}/archive/studies/${encodeURIComponent(input.studyPage.studyUid)}`,
                  { waitUntil: 'load' });
  results.studyPage = {
    validation: await page.$$eval('#instances tr[data-sop] td:nth-child(6)',
                                  (tds) => tds.map((td) => td.textContent)),
  };
  // The Send form: the study to the configured peer, then the job's outcome.
  if (await page.$('form.send')) {
    await page.click('form.send button[type=submit]');
    await page.waitForFunction(
      () => /^(sent|not sent)/.test(document.querySelector('.send-status').textContent),
      null, { timeout: 30000 });
    results.studyPage.send = await page.$eval('.send-status', (n) => n.textContent);
  }
  // Delete: a confirmation, then the archive's home page without the study.
  if (input.studyPage.delete) {
    page.once('dialog', (dialog) => dialog.accept());
    await Promise.all([page.waitForURL(`${base}/archive/`), page.click('button.delete-study')]);
    results.studyPage.afterDelete = await page.$$eval('tr[data-study]',
                                                      (trs) => trs.map((tr) => tr.dataset.study));
  }
}

await browser.close();
console.log(JSON.stringify(results));

// Archivist archive page: drag-and-drop upload through STOW-RS, and validation findings.
// No framework, no build step. Each file is one STOW-RS request (PS3.18 10.5) so each gets
// its own result; two requests run at a time.
'use strict';

(function () {
  const STOW_URL = '/dicomweb/studies';
  const PARALLEL = 2;

  // fetch() refuses a URL holding a user name and password, and a relative one is resolved
  // against the page's, which holds them when the page was opened as http://user:pw@host/
  // (the browser keeps them for the origin and sends them anyway): always from the origin.
  function here(path) {
    return location.origin + path;
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function humanSize(n) {
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + ' ' + units[i];
  }

  // ---- collecting files (input, drop of files, drop of folders) ------------------------------

  function readEntries(reader) {
    return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
  }

  async function walkEntry(entry, prefix, out) {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({ file, name: prefix + file.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {  // readEntries answers in batches until it answers an empty one
        const batch = await readEntries(reader);
        if (!batch.length) break;
        for (const child of batch) await walkEntry(child, prefix + entry.name + '/', out);
      }
    }
  }

  async function filesFromDrop(dataTransfer) {
    const out = [];
    const entries = [];
    for (const item of dataTransfer.items || []) {
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) entries.push(entry);
    }
    if (entries.length) {
      for (const entry of entries) await walkEntry(entry, '', out);
    } else {
      for (const file of dataTransfer.files || []) out.push({ file, name: file.name });
    }
    return out;
  }

  // ---- STOW-RS -----------------------------------------------------------------------------

  function randomBoundary() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return 'archivist-' + Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('');
  }

  // The DICOM JSON answer of STOW-RS: ReferencedSOPSequence (00081199), FailedSOPSequence
  // (00081198) with FailureReason (00081197), WarningReason (00081196), and the server's
  // explanation in Error Comment (00000902) when it gives one.
  function describeStowAnswer(status, text) {
    let body = null;
    try { body = JSON.parse(text); } catch (e) { /* not JSON */ }
    if (Array.isArray(body)) body = body[0];
    const seq = (tag) => (body && body[tag] && body[tag].Value) || [];
    const val = (item, tag) => (item && item[tag] && item[tag].Value && item[tag].Value[0]);
    const hex = (n) => '0x' + Number(n).toString(16).toUpperCase().padStart(4, '0');
    const refs = seq('00081199');
    const failed = seq('00081198');
    if (status === 200 && refs.length && !failed.length) {
      const uid = val(refs[0], '00081155') || '';
      const warn = val(refs[0], '00081196');
      const comment = val(refs[0], '00000902');
      return { ok: true, uid,
               text: 'stored' + (warn !== undefined ? ' (warning ' + hex(warn) + ')' : '') +
                     (comment ? ': ' + comment : '') };
    }
    if (failed.length) {
      const reason = val(failed[0], '00081197');
      const comment = val(failed[0], '00000902');
      return {
        ok: false,
        text: 'refused' + (comment ? ': ' + comment : '') +
              (reason !== undefined ? ' (FailureReason ' + hex(reason) + ')' : ''),
      };
    }
    let detail = '';
    if (body && typeof body === 'object' && (body.detail || body.error)) detail = body.detail || body.error;
    else if (text) detail = text.slice(0, 200);
    return { ok: status >= 200 && status < 300, text: 'HTTP ' + status + (detail ? ': ' + detail : '') };
  }

  function stow(file, onProgress) {
    return new Promise((resolve) => {
      const boundary = randomBoundary();
      const head = '--' + boundary + '\r\nContent-Type: application/dicom\r\n\r\n';
      const tail = '\r\n--' + boundary + '--\r\n';
      const body = new Blob([head, file, tail]);
      const xhr = new XMLHttpRequest();
      xhr.open('POST', STOW_URL);
      xhr.setRequestHeader('Content-Type',
        'multipart/related; type="application/dicom"; boundary=' + boundary);
      xhr.setRequestHeader('Accept', 'application/dicom+json');
      xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) onProgress(ev.loaded, ev.total); };
      xhr.onload = () => resolve(describeStowAnswer(xhr.status, xhr.responseText));
      xhr.onerror = () => resolve({ ok: false, text: 'network error' });
      xhr.send(body);
    });
  }

  // ---- upload UI ---------------------------------------------------------------------------

  async function refreshSections() {
    // The page as it is (a search keeps its parameters), re-read for fresh counts and lists.
    const resp = await fetch(here(location.pathname + location.search), { headers: { Accept: 'text/html' } });
    if (!resp.ok) return;
    const doc = new DOMParser().parseFromString(await resp.text(), 'text/html');
    for (const id of ['summary', 'recent']) {
      const fresh = doc.getElementById(id);
      const old = document.getElementById(id);
      if (fresh && old) old.replaceWith(fresh);
    }
  }

  let busy = Promise.resolve();

  function upload(items) {
    if (!items.length) return;
    busy = busy.then(() => uploadNow(items));
  }

  async function uploadNow(items) {
    const results = document.getElementById('results');
    const tbody = results.querySelector('tbody');
    const bar = document.getElementById('progress-bar');
    const label = document.getElementById('progress-text');
    document.getElementById('progress').hidden = false;
    results.hidden = false;
    const total = items.reduce((s, it) => s + it.file.size, 0) || 1;
    const sent = new Array(items.length).fill(0);
    let done = 0, stored = 0;
    const show = () => {
      const bytes = sent.reduce((a, b) => a + b, 0);
      bar.value = bytes / total;
      label.textContent = `${done} of ${items.length} files, ${humanSize(bytes)} of ${humanSize(total)}`;
    };
    // The newest batch on top, its files in the order they were given.
    const first = tbody.firstChild;
    const rows = items.map((it) => {
      const tr = el('tr', { class: 'pending' });
      tr.append(el('td', {}, it.name), el('td', { class: 'n' }, humanSize(it.file.size)),
                el('td', { class: 'result' }, 'waiting'));
      tbody.insertBefore(tr, first);
      return tr;
    });
    let next = 0;
    async function worker() {
      while (next < items.length) {
        const i = next++;
        rows[i].querySelector('.result').textContent = 'sending';
        const answer = await stow(items[i].file, (loaded) => { sent[i] = loaded; show(); });
        sent[i] = items[i].file.size;
        done++;
        if (answer.ok) stored++;
        rows[i].className = answer.ok ? 'ok' : 'failed';
        rows[i].querySelector('.result').textContent = answer.text;
        show();
      }
    }
    show();
    await Promise.all(Array.from({ length: Math.min(PARALLEL, items.length) }, worker));
    label.textContent = `${stored} of ${items.length} files stored` +
      (stored < items.length ? `, ${items.length - stored} failed` : '');
    await refreshSections();
    // A marker for scripts driving the page: this batch is done and the lists are fresh.
    document.body.dataset.uploadsDone = String(Number(document.body.dataset.uploadsDone || 0) + 1);
  }

  function setUpUpload() {
    const zone = document.getElementById('dropzone');
    if (!zone) return;
    for (const id of ['file-input', 'folder-input']) {
      const input = document.getElementById(id);
      input.addEventListener('change', () => {
        const items = Array.from(input.files, (f) => ({ file: f, name: f.webkitRelativePath || f.name }));
        input.value = '';
        upload(items);
      });
    }
    // From the keyboard: the zone itself (Enter or Space) opens the file chooser; the two
    // inputs, visually hidden but focusable, are reached with Tab too.
    zone.addEventListener('keydown', (ev) => {
      if (ev.target !== zone || (ev.key !== 'Enter' && ev.key !== ' ')) return;
      ev.preventDefault();
      document.getElementById('file-input').click();
    });
    zone.addEventListener('dragover', (ev) => { ev.preventDefault(); zone.classList.add('over'); });
    zone.addEventListener('dragleave', () => zone.classList.remove('over'));
    zone.addEventListener('drop', async (ev) => {
      ev.preventDefault();
      zone.classList.remove('over');
      upload(await filesFromDrop(ev.dataTransfer));
    });
  }

  // ---- validation findings ------------------------------------------------------------------

  function renderFindings(cell, status, text) {
    cell.textContent = '';
    if (status === 404 || status === 405) {
      cell.append(el('p', { class: 'hint' }, 'This server does not report validation findings for this instance.'));
      return;
    }
    let body = null;
    try { body = JSON.parse(text); } catch (e) { /* not JSON */ }
    if (status !== 200 || body === null) {
      cell.append(el('p', { class: 'failed' }, 'HTTP ' + status + ': ' + (text || '').slice(0, 300)));
      return;
    }
    // GET /api/instances/{sop}/validation: {validated, errors, warnings, findings: [{severity,
    // rule_id, path, module, iod, message, reference}]}
    const findings = Array.isArray(body) ? body : (body.findings || []);
    if (body.validated === false) {
      cell.append(el('p', { class: 'hint' }, 'Not validated: stored while validation was off.'));
    } else if (body.errors !== undefined) {
      cell.append(el('p', { class: 'summary' },
        `${body.errors} error${body.errors === 1 ? '' : 's'}, ${body.warnings || 0} warning${body.warnings === 1 ? '' : 's'}`));
    }
    if (!findings.length) {
      cell.append(el('p', {}, 'No findings.'));
    } else {
      const table = el('table', { class: 'findings-table' });
      const head = el('tr');
      for (const h of ['Severity', 'Rule', 'Where', 'Message']) head.append(el('th', {}, h));
      table.append(head);
      for (const f of findings) {
        const tr = el('tr', { class: String(f.severity || '').toLowerCase() });
        const where = [f.path, f.module].filter(Boolean).join(' · ');
        tr.append(el('td', {}, String(f.severity || '')),
                  el('td', {}, String(f.rule_id || f.rule || '')),
                  el('td', {}, where),
                  el('td', {}, String(f.message || '') + (f.reference ? ' (' + f.reference + ')' : '')));
        table.append(tr);
      }
      cell.append(table);
    }
    const raw = el('details');
    raw.append(el('summary', {}, 'raw answer'), el('pre', {}, JSON.stringify(body, null, 2)));
    cell.append(raw);
  }

  function setUpFindings() {
    document.addEventListener('click', async (ev) => {
      const button = ev.target.closest('button.findings');
      if (!button) return;
      const sop = button.dataset.sop;
      const row = document.querySelector(`tr.findings-row[data-for="${CSS.escape(sop)}"]`);
      if (!row) return;
      if (!row.hidden) { row.hidden = true; button.setAttribute('aria-expanded', 'false'); return; }
      row.hidden = false;
      button.setAttribute('aria-expanded', 'true');
      const cell = row.querySelector('td');
      cell.textContent = 'loading...';
      try {
        const resp = await fetch(here('/api/instances/' + encodeURIComponent(sop) + '/validation'),
                                 { headers: { Accept: 'application/json' } });
        renderFindings(cell, resp.status, await resp.text());
      } catch (e) {
        cell.textContent = 'network error';
      }
    });
  }

  // ---- send to a configured peer (POST /api/studies/{uid}/send?to=AET, then its job) --------

  function setUpSend() {
    const form = document.querySelector('form.send');
    if (!form) return;
    const out = form.querySelector('.send-status');
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const to = form.querySelector('select').value;
      out.textContent = 'queueing...';
      try {
        const resp = await fetch(here(form.dataset.url + '?to=' + encodeURIComponent(to)),
                                 { method: 'POST', headers: { Accept: 'application/json' } });
        const body = await resp.json();
        if (resp.status !== 202) { out.textContent = body.detail || body.error || resp.status; return; }
        for (;;) {
          await new Promise((r) => setTimeout(r, 1000));
          const poll = await fetch(here(body.status), { headers: { Accept: 'application/json' } });
          const job = await poll.json();
          if (!poll.ok) { out.textContent = job.detail || job.error || poll.status; return; }
          const failed = (job.failed || []).length;
          if (job.state === 'done') {
            out.textContent = job.error ? 'not sent: ' + job.error
              : `sent ${job.sent} of ${job.total} to ${to}` + (failed ? `, ${failed} refused` : '');
            return;
          }
          out.textContent = job.state === 'running'
            ? `sending to ${to}: ${job.sent || 0} of ${job.total || body.instances}` : 'queued';
        }
      } catch (e) {
        out.textContent = 'network error';
      }
    });
  }

  // ---- delete the study (DELETE /api/studies/{uid}; it leaves tombstones) -------------------

  function setUpDelete() {
    const button = document.querySelector('button.delete-study');
    if (!button) return;
    button.addEventListener('click', async () => {
      if (!window.confirm('Delete this study and its files from the archive? This cannot be undone.')) return;
      button.disabled = true;
      try {
        const resp = await fetch(here(button.dataset.url), { method: 'DELETE' });
        if (resp.ok) { window.location.assign('/archive/'); return; }
        const body = await resp.json().catch(() => ({}));
        button.textContent = 'Not deleted: ' + (body.detail || body.error || resp.status);
      } catch (e) {
        button.textContent = 'Not deleted: network error';
      }
    });
  }

  setUpUpload();
  setUpFindings();
  setUpSend();
  setUpDelete();
})();

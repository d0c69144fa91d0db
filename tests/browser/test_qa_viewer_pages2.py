"""The viewer's study list lists a study whose objects carry no Modality, in a real browser.

OHIF 3.13.2 reads ``ModalitiesInStudy.Value.length`` for each study of its list; one study
answered with ModalitiesInStudy present and empty (``{"vr": "CS"}``: a Secondary Capture
without Modality, as pydicom's test files folder of the README's tour holds) made the whole
list fail ("Data Source Connection Error") and show no study at all.

The same run then opens ``/archive/``, where a study whose Patient Name, Patient ID and Study
Description are 64 characters without a space made the table of recent studies wider than the
window: such a word is now cut short (the cell's title holds it whole).

One real ``archivist serve`` with the real OHIF build, one C-STORE association (DCMTK
``storescu``), the study list and the archive page in Debian's Chromium, driven by
playwright-core. As in test_browser_viewer.py nothing skips: without the OHIF build, Chromium or
Node.js the test fails and says what is missing. Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from test_browser_viewer import ARTEFACTS, CHROMIUM, HERE, _node_modules, _tool, _viewer_dir

from archivist.testing.datasets import make_instance
from archivist.testing.server import ServerProcess

#: Opens the study list once and waits for every marker (a patient name as OHIF shows it) to
#: be in a row, or for the time to run out; prints what it saw as one JSON line.
_STUDY_LIST = r"""
import { chromium } from 'playwright-core';
const input = JSON.parse(process.argv[process.argv.length - 1]);
const results = { rows: {}, pageErrors: [], failedRequests: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (err) => results.pageErrors.push(String(err).slice(0, 300)));
  context.on('response', (resp) => {
    if (resp.status() >= 400) results.failedRequests.push({ url: resp.url(), status: resp.status() });
  });
  await page.goto(input.baseUrl + '/', { waitUntil: 'domcontentloaded' });
  const seen = () => page.evaluate((markers) => {
    const rows = {};
    for (const tr of document.querySelectorAll('tr')) {
      for (const m of markers) {
        if (tr.innerText.includes(m)) {
          rows[m] = Array.from(tr.querySelectorAll('td'), (td) => td.innerText.trim());
        }
      }
    }
    const failed = document.body.innerText.includes('Data Source Connection Error');
    return { rows, failed };
  }, input.markers);
  const deadline = Date.now() + 60000;
  let state = await seen();
  while (!state.failed && Object.keys(state.rows).length < input.markers.length
         && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    state = await seen();
  }
  results.rows = state.rows;
  results.text = (await page.evaluate(() => document.body.innerText)).slice(0, 2000);
  await page.screenshot({ path: input.screenshot });

  // The archive page's table of recent studies, with a study whose values are long words.
  await page.goto(input.baseUrl + '/archive/', { waitUntil: 'load' });
  results.archive = await page.evaluate((uid) => {
    const row = document.querySelector(`#recent tr[data-study="${uid}"]`);
    return {
      pageWidth: document.documentElement.scrollWidth, viewportWidth: window.innerWidth,
      cells: row ? Array.from(row.cells, (td) => ({
        title: td.title, right: td.getBoundingClientRect().right,
        clipped: td.scrollWidth > td.clientWidth })) : null,
    };
  }, input.longStudy);
  await page.screenshot({ path: input.archiveScreenshot, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
"""


@pytest.mark.timeout(600)
def test_study_list_shows_a_study_without_modality(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is required (apt-get install chromium; .ci/run does it)")
    viewer_dir = _viewer_dir()
    _node_modules()
    storescu = _tool("storescu")

    ct = tmp_path / "ct.dcm"
    make_instance(ct, modality="CT", patient_name="LISTED^CT", patient_id="QA-LIST-CT",
                  study_description="With a modality")
    sc = tmp_path / "sc.dcm"
    make_instance(sc, modality="OT", patient_name="LISTED^NOMODALITY", patient_id="QA-LIST-SC",
                  study_description="Without a modality")
    ds = pydicom.dcmread(sc)
    del ds.Modality  # Type 1 in the SC Equipment Module, yet found in the wild (pydicom's files)
    ds.save_as(sc, enforce_file_format=True)
    # Patient Name, ID and Study Description of legal lengths (64 characters) without a space.
    long = tmp_path / "long.dcm"
    long_ds = make_instance(long, modality="CT", patient_name="L" * 31 + "^" + "N" * 32,
                            patient_id="I" * 64, study_description="D" * 64)

    server = ServerProcess(tmp_path / "data", env={"ARCHIVIST_VIEWER_DIR": str(viewer_dir)})
    server.start()
    try:
        done = subprocess.run([storescu, "-aec", server.aet, "127.0.0.1", str(server.dicom_port),
                               str(ct), str(sc), str(long)], check=False, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr

        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        markers = ["LISTED, CT", "LISTED, NOMODALITY"]
        spec = {"baseUrl": server.url, "markers": markers,
                "screenshot": str(ARTEFACTS / "qa-study-list-no-modality.png"),
                "longStudy": str(long_ds.StudyInstanceUID),
                "archiveScreenshot": str(ARTEFACTS / "qa-archive-long-values.png")}
        run = subprocess.run([_tool("node"), "--input-type=module", "-", json.dumps(spec)],
                             input=_STUDY_LIST, cwd=HERE, check=False, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "CHROMIUM": CHROMIUM})
        assert run.returncode == 0, f"the study list script failed:\n{run.stderr[-4000:]}"
        results = json.loads(run.stdout.strip().splitlines()[-1])

        assert "Data Source Connection Error" not in results["text"], results["text"]
        assert set(results["rows"]) == set(markers), results
        assert "CT" in results["rows"]["LISTED, CT"], results["rows"]
        no_modality = results["rows"]["LISTED, NOMODALITY"]
        assert "Without a modality" in no_modality, no_modality
        assert not [cell for cell in no_modality if cell in ("CT", "OT", "SC")], no_modality

        # On /archive/ the long words are cut short in their cells, the whole value in the
        # cell's title, and the table keeps to the 1400 px window (no sideways scrolling).
        archive = results["archive"]
        assert archive["cells"], archive
        titles = [cell["title"] for cell in archive["cells"]]
        assert "L" * 31 + " " + "N" * 32 in titles and "I" * 64 in titles, titles
        assert "D" * 64 in titles, titles
        assert archive["pageWidth"] <= archive["viewportWidth"], archive
        assert max(cell["right"] for cell in archive["cells"]) <= archive["viewportWidth"], archive
        assert results["pageErrors"] == [], results["pageErrors"]
        assert results["failedRequests"] == [], results["failedRequests"]
    finally:
        server.stop()

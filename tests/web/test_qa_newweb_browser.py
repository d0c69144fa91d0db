"""The study page of ``/archive/`` under HTTP Basic authentication, in Debian's Chromium, opened
as ``http://user:password@host/...`` (how a bookmark or a script hands a browser the password).

fetch() refuses a URL holding credentials, and resolved a relative URL against the page's,
which held them: the Send form and the Delete button said "network error" and did nothing,
and the upload's refresh of the page threw. The page's requests now go to the origin (the
browser sends the password it was given). Also checked: the confirm dialog (dismissed: nothing
deleted), the send reaching a DICOM node, the delete going back to the home page.

Needs Chromium, Node.js with tests/browser's playwright-core, and DCMTK's storescp; skips
without them (tests/browser installs them for its own tests).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from archivist.core.passwords import hash_password
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess, free_port

HERE = Path(__file__).resolve().parent
PLAYWRIGHT = HERE.parent / "browser" / "node_modules" / "playwright-core" / "index.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PASSWORD = "pässwörd 密码"

SCRIPT = r"""
import { chromium } from %(playwright)s;
const [root, study] = process.argv.slice(2);
const out = { errors: [], dialogs: [] };
const browser = await chromium.launch({ executablePath: %(chromium)s, headless: true,
                                        args: ['--no-sandbox'] });
const page = await (await browser.newContext()).newPage();
page.on('pageerror', (e) => out.errors.push(String(e).slice(0, 300)));
let accept = false;
page.on('dialog', async (d) => { out.dialogs.push(d.message()); accept ? d.accept() : d.dismiss(); });
const status = () => page.evaluate(() => document.querySelector('.send-status').textContent);
try {
  await page.goto(root + '/archive/studies/' + study, { waitUntil: 'load' });
  await page.click('form.send button');
  const end = Date.now() + 20000;
  while (Date.now() < end && !/^(sent|not sent|network)/.test(await status())) {
    await page.waitForTimeout(200);
  }
  out.send = await status();
  await page.click('button.delete-study');
  await page.waitForTimeout(500);
  out.afterDismiss = new URL(page.url()).pathname;
  accept = true;
  await Promise.all([page.waitForURL('**/archive/', { timeout: 10000 }).catch(() => {}),
                     page.click('button.delete-study')]);
  out.afterAccept = new URL(page.url()).pathname;
  out.button = await page.evaluate(() => document.querySelector('button.delete-study')?.textContent || null);
} catch (e) { out.exception = String(e).slice(0, 300); }
console.log(JSON.stringify(out));
await browser.close();
"""


def _storescp() -> str | None:
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and os.path.abspath(d) != venv_bin)
    return shutil.which("storescp", path=path)


@pytest.fixture
def setting(tmp_path: Path) -> Iterator[tuple[ServerProcess, str, Path]]:
    storescp = _storescp()
    missing = [what for what, ok in (("Chromium", Path(CHROMIUM).exists()),
                                     ("node", shutil.which("node") is not None),
                                     ("tests/browser/node_modules (npm ci)", PLAYWRIGHT.exists()),
                                     ("DCMTK's storescp", storescp is not None)) if not ok]
    if missing:
        pytest.skip("needs " + ", ".join(missing))
    assert storescp is not None
    received = tmp_path / "received"
    received.mkdir()
    port = free_port()
    receiver = subprocess.Popen([storescp, "-aet", "STORESCP", "-od", str(received), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = ServerProcess(tmp_path / "data", extra_args=["--workers", "1", "--peer",
                                                          f"STORESCP=127.0.0.1:{port}"],
                           env={"ARCHIVIST_HTTP_USERS": f"alice={hash_password(PASSWORD)}",
                                "ARCHIVIST_VIEWER_DIR": str(tmp_path / "no-viewer")})
    try:
        server.start()
        study = new_uid()
        path = tmp_path / "one.dcm"
        make_instance(path, study_uid=study)
        body = (b"--XX\r\nContent-Type: application/dicom\r\n\r\n" + path.read_bytes()
                + b"\r\n--XX--\r\n")
        resp = requests.post(f"{server.url}/dicomweb/studies", data=body, timeout=30,
                             auth=(b"alice", PASSWORD.encode()), headers={
                                 "Content-Type":
                                 'multipart/related; type="application/dicom"; boundary=XX'})
        assert resp.status_code == 200, resp.text
        yield server, study, received
    finally:
        server.stop()
        receiver.kill()
        receiver.wait(10)


@pytest.mark.timeout(120)
def test_send_and_delete_with_credentials_in_the_url(
        setting: tuple[ServerProcess, str, Path], tmp_path: Path) -> None:
    server, study, received = setting
    script = tmp_path / "page.mjs"
    script.write_text(SCRIPT % {"playwright": json.dumps(str(PLAYWRIGHT)),
                                "chromium": json.dumps(CHROMIUM)})
    root = server.url.replace("http://", f"http://alice:{quote(PASSWORD, safe='')}@")
    done = subprocess.run(["node", str(script), root, study], capture_output=True, text=True,
                          timeout=100, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.get("exception") is None, out
    assert out["errors"] == [], out
    assert out["send"] == "sent 1 of 1 to STORESCP", out
    assert len(list(received.iterdir())) == 1
    assert len(out["dialogs"]) == 2 and "cannot be undone" in out["dialogs"][0]
    assert out["afterDismiss"] == f"/archive/studies/{study}", out
    assert out["afterAccept"] == "/archive/", out
    gone = requests.get(f"{server.url}/api/studies/{study}/archive", timeout=20,
                        auth=(b"alice", PASSWORD.encode()))
    assert gone.status_code == 404

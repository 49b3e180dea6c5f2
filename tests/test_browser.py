"""What a person sees, in a real browser: JupyterLab on 127.0.0.1 (with a token) opens the lab notebook in headless
Chromium, runs every cell through the UI's own command, and the page is queried for rendered widgets and plotly figures;
then a run's report.html opens from disk with no network and its figures are drawn. Screenshots go to the test's tmp
folder. Every process the test starts (JupyterLab, its kernel, Chromium) is stopped and checked gone at the end.

Chromium is Debian's `chromium`; `make test-heavy` installs it when missing (tools/ensure_chromium.sh). The browser is
driven over the Chrome DevTools protocol (a websocket), so no driver binary has to match the browser's version."""
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN, REPO, run_cli

pytestmark = pytest.mark.heavy

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:  # install it (Debian's package) as `make test-heavy` does
        r = subprocess.run(["bash", str(REPO / "tools" / "ensure_chromium.sh")], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"chromium is missing and could not be installed:\n{r.stderr[-2000:]}"
        exe = r.stdout.strip().splitlines()[-1]
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, fn, timeout: float, every: float = 0.5):
    "Poll `fn` until it returns something truthy; fail naming `what` after `timeout` seconds."
    t0, last = time.time(), None
    while time.time() - t0 < timeout:
        try:
            last = fn()
            if last: return last
        except Exception as e:  # not up yet
            last = e
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Page:
    "One Chromium tab over the DevTools protocol: evaluate JavaScript, navigate, take screenshots."
    def __init__(self, ws_url: str):
        import websocket  # websocket-client
        self.ws = websocket.create_connection(ws_url, timeout=120, suppress_origin=True)
        self.n = 0

    def call(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg: raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expr: str):
        "The value of a JavaScript expression in the page (promises awaited); a thrown exception is raised here."
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r: raise RuntimeError(r["exceptionDetails"].get("exception", {}).get("description") or r["exceptionDetails"])
        return r["result"].get("value")

    def goto(self, url: str): self.call("Page.navigate", url=url)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self):
        try: self.ws.close()
        except Exception: pass


def _stop_group(p: subprocess.Popen, grace: float = 10):
    "Stop a process started in its own session, with every process of its group: SIGTERM, then SIGKILL."
    if p is None: return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try: os.killpg(p.pid, sig)
        except ProcessLookupError: return
        try: p.wait(timeout=grace); return
        except subprocess.TimeoutExpired: continue


def _ours(marker: str, groups: set[int]) -> list[int]:
    "Pids of live processes whose command line names `marker` (this test's tmp folder) or that belong to process `groups`."
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid(): continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (d / "stat").read_text().rsplit(")", 1)[1].split()   # state, ppid, pgrp, ...
        except OSError: continue
        if stat[0] != "Z" and (marker in cmd or int(stat[2]) in groups): pids.append(int(d.name))
    return pids


def _lab_settings(settings: Path):
    "JupyterLab user settings for the test: every cell kept in the DOM (no windowing), no news or update pop-ups."
    for rel, value in [("@jupyterlab/notebook-extension/tracker.jupyterlab-settings", {"windowingMode": "none"}),
                       ("@jupyterlab/apputils-extension/notification.jupyterlab-settings", {"fetchNews": "false", "checkForUpdates": False})]:
        p = settings / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(value))


NOTEBOOK_PANEL = """(window.jupyterapp ? Array.from(window.jupyterapp.shell.widgets('main')) : [])
  .find(w => w.content && w.sessionContext && w.context && w.context.path === '31_lab.ipynb')"""

NOTEBOOK_STATE = """(() => {
  const panel = %s;
  if (!panel) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  for (const c of cells) for (const o of c.model.outputs.toJSON())
    if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue + '\\n' + (o.traceback || []).join('\\n'));
  return {kernel: kernel ? kernel.status : null, ready: panel.context.isReady, n: cells.length,
          done: cells.filter(c => c.model.executionCount !== null).length, errors: errors};
})()""" % NOTEBOOK_PANEL

DOM_COUNTS = """(() => ({
  widgets: document.querySelectorAll('.jp-OutputArea .jupyter-widgets').length,
  sliders: document.querySelectorAll('.jp-OutputArea .widget-slider').length,
  plots: document.querySelectorAll('.jp-OutputArea .js-plotly-plot').length,
  drawn: Array.from(document.querySelectorAll('.jp-OutputArea .js-plotly-plot')).filter(p => p.querySelector('.main-svg')).length,
  bars: document.querySelectorAll('.jp-OutputArea .js-plotly-plot .bars .point').length,
  tokens: document.querySelectorAll('.jp-OutputArea .medllm-tok').length,
  widget_errors: Array.from(document.querySelectorAll('.jp-OutputArea .jupyter-widgets'))
                      .filter(e => /Error displaying widget|model not found/i.test(e.textContent)).length,
}))()"""

IN_VIEW = """(() => {
  const slider = document.querySelector('.jp-OutputArea .widget-slider');
  const cell = slider.closest('.jp-Cell');
  cell.scrollIntoView({block: 'start'});
  const inView = e => { const r = e.getBoundingClientRect(); return r.width > 0 && r.top >= 0 && r.bottom <= window.innerHeight; };
  const plot = cell.querySelector('.js-plotly-plot');
  return {slider: inView(slider), plot: !!plot && inView(plot), drawn: !!(plot && plot.querySelector('.main-svg'))};
})()"""


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    "A small training run evaluated on the demo quiz, with its report (made by the CLIs, as a user would)."
    d = tmp_path_factory.mktemp("report")
    tok = d / "bpe1k.json"
    assert run_cli("medllm-tokenizer", "train", "--datasets", "sample", "--vocab_size", 1024, "--output", tok).returncode == 0
    r = run_cli("medllm-train", "--model", "nano", "--tokenizer", tok, "--datasets", "sample", "--seq_len", 64, "--batch_size", 4,
                "--max_steps", 8, "--eval_every", 4, "--eval_batches", 1, "--val_fraction", 0.1, "--log_every", 2, "--warmup_steps", 2,
                "--output", d / "run", "--no_progress", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("medllm-evaluate", "--checkpoint", d / "run" / "checkpoint_000008.pt", "--benchmarks", "demo", "--mode", "letter",
                "--output", d / "run" / "eval")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("medllm-report", d / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    return d / "run"


def test_lab_notebook_and_report_render_in_chromium(tmp_path, report_run):
    exe = _chromium()
    lab_root, settings, profile = tmp_path / "lab", tmp_path / "lab-settings", tmp_path / "chromium-profile"
    lab_root.mkdir()
    shutil.copy(REPO / "nbs" / "31_lab.ipynb", lab_root / "31_lab.ipynb")   # a copy: autosave must not touch nbs/
    _lab_settings(settings)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    lab = browser = page = None
    lab_log = open(tmp_path / "jupyterlab.log", "w")
    try:
        lab = subprocess.Popen([str(BIN / "jupyter-lab"), "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
                                "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={lab_root}",
                                "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={settings}",
                                f"--LabApp.workspaces_dir={tmp_path / 'lab-workspaces'}", *(["--allow-root"] if os.geteuid() == 0 else [])],
                               stdout=lab_log, stderr=subprocess.STDOUT, env=env, cwd=lab_root, start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        def lab_up():
            if lab.poll() is not None: pytest.fail(f"JupyterLab exited ({lab.returncode}):\n{(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
            return urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).status == 200
        _wait("JupyterLab's API", lab_up, 90)
        with pytest.raises(urllib.error.HTTPError):   # the token is required
            urllib.request.urlopen(f"{base}/api/contents", timeout=5)

        browser = subprocess.Popen([exe, *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                    "--window-size=1400,1000", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        devtools_port = _wait("Chromium's DevTools port", lambda: (profile / "DevToolsActivePort").read_text().split()[0], 30)
        targets = _wait("a Chromium tab", lambda: [t for t in json.load(urllib.request.urlopen(
            f"http://127.0.0.1:{devtools_port}/json/list", timeout=2)) if t["type"] == "page"], 30)
        page = Page(targets[0]["webSocketDebuggerUrl"])
        page.call("Emulation.setFocusEmulationEnabled", enabled=True)   # a headless tab has no window focus: pretend it has

        # 1. the lab notebook, every cell run through JupyterLab's own "Run All Cells" command
        t_start = time.time()
        page.goto(f"{base}/lab/tree/31_lab.ipynb?token={token}")
        _wait("the notebook open with an idle kernel", lambda: (lambda s: s and s["ready"] and s["kernel"] == "idle" and s["n"] > 10)(
            page.js(NOTEBOOK_STATE)), 120)
        page.js(f"(() => {{ const p = {NOTEBOOK_PANEL}; window.jupyterapp.shell.activateById(p.id); return p.id; }})()")
        # Run > Run All Cells (not awaited: its promise resolves only when the last cell has run)
        page.js("(window.jupyterapp.commands.execute('notebook:run-all-cells'), 'started')")

        def finished():
            s = page.js(NOTEBOOK_STATE)
            if s["errors"]: pytest.fail("a cell failed in the browser:\n" + "\n".join(s["errors"])[-3000:])
            return s["done"] == s["n"] and s["kernel"] == "idle" and s
        state = _wait("every cell to run", finished, 300, every=1.0)
        counts = _wait("widgets and plotly figures drawn", lambda: (lambda c: c["drawn"] >= 4 and c["sliders"] and c["tokens"] and c)(
            page.js(DOM_COUNTS)), 60)
        assert counts["widget_errors"] == 0, counts
        assert counts["widgets"] >= 5 and counts["sliders"] >= 2 and counts["bars"] >= 2, counts   # bars: drawn data, not an empty frame
        t_run = time.time() - t_start
        assert counts["drawn"] == counts["plots"], counts                                        # every plotly figure drew its SVG
        view = page.js(IN_VIEW)
        time.sleep(1.0)  # let the scroll settle before the picture
        shot = page.screenshot(tmp_path / "lab_notebook.png")
        assert view == {"slider": True, "plot": True, "drawn": True}, view                    # the screenshot shows both
        assert shot.stat().st_size > 20_000
        print(f"\nlab notebook: {state['n']} code cells run in {t_run:.0f} s (page load included); {counts}; screenshot {shot}")

        # 2. a run's report.html from disk: plotly is inline, so its figures draw with no network
        page.goto((report_run / "report.html").as_uri())
        n_div = _wait("the report's figures", lambda: (lambda c: c["ready"] == "complete" and c["drawn"] == c["divs"] > 0 and c)(page.js(
            "({ready: document.readyState, divs: document.querySelectorAll('.plotly-graph-div').length,"
            " drawn: Array.from(document.querySelectorAll('.js-plotly-plot')).filter(p => p.querySelector('.main-svg')).length,"
            " plotly: typeof Plotly})")), 30)
        assert n_div["divs"] == 2 and n_div["plotly"] == "object", n_div                      # curves + evaluation chart
        headings = page.js("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
        assert headings == ["Run", "Configuration", "Data mix", "Curves", "Throughput and MFU", "Sample generations", "Evaluation", "Cost"]
        page.js("document.querySelector('.js-plotly-plot').scrollIntoView({block: 'start'})")
        report_shot = page.screenshot(tmp_path / "report.png")
        print(f"report: {n_div}; screenshot {report_shot}")
    finally:
        if page: page.close()
        _stop_group(browser)
        if lab is not None:
            try:  # JupyterLab shuts its kernels down on this request, then exits
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api/shutdown?token={token}", method="POST"), timeout=10)
                lab.wait(timeout=30)
            except Exception: pass
            _stop_group(lab)
        lab_log.close()
        left = _ours(str(tmp_path), {p.pid for p in (lab, browser) if p is not None})
        for pid in left:  # a process we started that outlived its parent (a kernel): stop it, then fail below
            try: os.kill(pid, signal.SIGKILL)
            except ProcessLookupError: pass
    assert left == [], f"processes left running after the test: {left}"

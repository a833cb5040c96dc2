"""The XAI tab in a real TensorBoard process (Rust data server) and in a real headless Chromium.

TensorBoard finds the plugin through the ``tensorboard_plugins`` entry point. When the installed package does not
declare it (an editable install made before the entry point was added), the server gets it from a test-local
``.dist-info`` on its ``PYTHONPATH`` holding exactly the entry point of ``pyproject.toml``, so these tests exercise
TensorBoard's own plugin discovery either way.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from conftest import get, get_json
from test_xai_tab import EPOCHS, NUM_PROBE, shared_runs

from lightning_xai.tensorboard.format import PLUGIN_NAME, side_dir

PREFIX = f"/data/plugin/{PLUGIN_NAME}"
ENTRY_POINT = "lightning_xai = lightning_xai.tensorboard.plugin:XaiTabLoader"


def entry_point_installed() -> bool:
    return any(ep.name == PLUGIN_NAME for ep in metadata.entry_points(group="tensorboard_plugins"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def plugin_path(folder: Path) -> dict[str, str]:
    """The environment of a process that sees the entry point (a ``.dist-info`` in ``folder`` unless installed)."""
    env = dict(os.environ)
    if not entry_point_installed():
        info = folder / "lightning_xai_tab_entry_point-0.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lightning-xai-tab-entry-point\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[tensorboard_plugins]\n{ENTRY_POINT}\n")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH")) if p)
    return env


def start_tensorboard(log_dir: Path, folder: Path) -> tuple[subprocess.Popen, str]:
    """``tensorboard --logdir log_dir`` on a free loopback port, once it lists the four runs of the tab."""
    port = free_port()
    flags = ["--logdir", str(log_dir), "--host", "127.0.0.1", "--port", str(port), "--load_fast", "true"]
    flags += ["--reload_interval", "1"]
    command = [sys.executable, "-m", "tensorboard.main", *flags]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=plugin_path(folder))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if len(get_json(base, f"{PREFIX}/runs")) == 4:
                return process, base
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.terminate()
            raise RuntimeError(f"tensorboard did not serve the tab: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_dir, _, _ = shared_runs(tmp_path_factory)
    process, base = start_tensorboard(log_dir, tmp_path_factory.mktemp("entry_point"))
    try:
        yield base, log_dir
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_a_real_server_lists_the_tab_and_serves_a_runs_data(server):
    base, log_dir = server
    tab = get_json(base, "/data/plugins_listing")[PLUGIN_NAME]
    assert tab["enabled"] and tab["tab_name"] == "XAI" and tab["loading_mechanism"]["type"] == "IFRAME"
    runs = get_json(base, f"{PREFIX}/runs")
    found = {r["run"]: r["evaluations"] for r in runs}
    assert found == {"images/version_0": EPOCHS, "several/version_0": 1, "table/version_0": 2, "tokens/version_0": 1}
    records = get_json(base, f"{PREFIX}/evaluations", run="images/version_0")
    assert [r["evaluation"] for r in records] == list(range(EPOCHS))
    data = get(base, f"{PREFIX}/data", run="images/version_0", file=records[1]["file"])
    assert data == (log_dir / "images" / "version_0" / "plugins" / PLUGIN_NAME / records[1]["file"]).read_bytes()
    assert b"export async function render" in get(base, f"{PREFIX}/index.js")


def chromium_driver():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip("the browser test needs Debian's chromium and chromium-driver (apt-get install chromium-driver)")
    reason = "the browser test needs selenium: pip install selenium"
    webdriver = pytest.importorskip("selenium.webdriver", reason=reason)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    arguments = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    arguments.append("--window-size=1500,1300")
    for argument in arguments:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)


def wait_for(driver, script: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for: {script}")
        time.sleep(0.05)


def select_run(driver, run: str) -> None:
    driver.execute_script(
        "const s = document.getElementById('run'); s.value = arguments[0]; delete document.body.dataset.drawn;"
        "s.dispatchEvent(new Event('change'));",
        run,
    )
    wait_for(driver, "return document.body.dataset.drawn !== undefined")


HEATMAP = "return document.querySelector('canvas.heatmap[data-tag=\"ig\"]').toDataURL()"
# the selected sample's deletion and insertion curves: per chart, its kind, axis labels and lines
CURVES = (
    "return [...document.querySelectorAll('#sample-curve-charts svg')].map(s => ({kind: s.dataset.kind,"
    " labels: [...s.querySelectorAll('.axis-label')].map(t => t.textContent),"
    " legend: [...s.querySelectorAll('.legend')].map(t => t.textContent),"
    " lines: [...s.querySelectorAll('polyline.curve')].map(p => [p.dataset.tag, p.dataset.evaluation,"
    " p.getAttribute('stroke-dasharray'), p.getAttribute('points')])}))"
)


@pytest.mark.slow
def test_the_tab_in_headless_chromium(server, tmp_path):
    base, log_dir = server
    driver = chromium_driver()
    try:
        driver.get(f"{base}/#{PLUGIN_NAME}")
        frame = wait_for(driver, "return document.querySelector('iframe[src*=\"plugin_entry\"]')")
        tabs = driver.execute_script("return document.body.innerText")
        assert "XAI" in tabs
        driver.switch_to.frame(frame)
        wait_for(driver, "return document.body.dataset.drawn")
        assert driver.execute_script("return document.querySelectorAll('#grid .thumb').length") == NUM_PROBE
        assert driver.execute_script("return document.getElementById('evaluation').max") == str(EPOCHS - 1)
        last = driver.execute_script(HEATMAP)
        driver.execute_script(
            "const s = document.getElementById('evaluation'); s.value = '0';"
            "s.dispatchEvent(new Event('input', {bubbles: true}));"
        )
        wait_for(driver, "return document.body.dataset.drawn === '0'")
        first = driver.execute_script(HEATMAP)
        assert first != last  # the slider changed the heatmap's pixels
        assert "every one kept" in driver.execute_script("return document.getElementById('notice').textContent")
        # this sample's scores over evaluations, the slider's position marked; the baselines dashed in the means
        wait_for(driver, "return document.body.dataset.complete === '0'")
        charts = driver.execute_script(
            "return [...document.querySelectorAll('#sample-score-charts svg')].map(s => [s.dataset.metric,"
            " s.querySelectorAll('polyline').length, s.querySelectorAll('line.marker').length])"
        )
        assert sorted(c[0] for c in charts) == ["deletion_auc", "insertion_auc", "sparseness", "stability"], charts
        assert all(lines == 3 and marks == 1 for _, lines, marks in charts), charts
        # beside them, this sample's curves at the shown evaluation: a line per explainer, labelled axes, a legend
        curves = driver.execute_script(CURVES)
        assert [c["kind"] for c in curves] == ["deletion", "insertion"], curves
        for chart in curves:
            verb = {"deletion": "removed", "insertion": "inserted"}[chart["kind"]]
            assert chart["labels"] == [f"fraction of features {verb}", "model score (target p)"], chart
            assert [line[:3] for line in chart["lines"]] == [[t, "0", None] for t in ("ig", "saliency", "gradcam")]
            assert all(len(line[3].split()) == 9 for line in chart["lines"])  # steps=8: 9 points each
            assert [text.split(" · ")[0] for text in chart["legend"]] == ["ig", "saliency", "gradcam"], chart
        dashed = driver.execute_script(
            "return [...document.querySelectorAll('#score-charts svg[data-metric=deletion_auc] polyline.baseline')]"
            ".map(p => p.dataset.name)"
        )
        assert dashed == ["baseline_edges", "baseline_random"], dashed
        driver.execute_script(
            "const s = document.getElementById('evaluation'); s.value = String(s.max);"
            "s.dispatchEvent(new Event('input', {bubbles: true}));"
        )
        wait_for(driver, f"return document.body.dataset.complete === '{EPOCHS - 1}'")
        moved = driver.execute_script(CURVES)  # the slider redrew the curves: the last evaluation's, other points
        for before, after in zip(curves, moved, strict=True):
            assert [line[:2] for line in after["lines"]] == [
                [t, str(EPOCHS - 1)] for t in ("ig", "saliency", "gradcam")
            ]
            assert [line[3] for line in after["lines"]] != [line[3] for line in before["lines"]], after
        # compare one explainer at two evaluations: both maps and their difference; both evaluations' curves
        driver.execute_script(
            "const m = document.getElementById('compare-mode'); m.value = 'evaluations';"
            "m.dispatchEvent(new Event('change'));"
        )
        wait_for(driver, "return document.querySelectorAll('#compare-view figure').length === 3")
        wait_for(driver, "return document.querySelectorAll('#sample-curve-charts polyline.curve').length === 12")
        for before, after, both in zip(curves, moved, driver.execute_script(CURVES), strict=True):
            assert [line[:3] for line in both["lines"]] == [
                *([t, str(EPOCHS - 1), None] for t in ("ig", "saliency", "gradcam")),
                *([t, "0", "5 3"] for t in ("ig", "saliency", "gradcam")),  # the compared evaluation, dashed
            ], both
            assert [line[3] for line in both["lines"]] == [line[3] for line in after["lines"] + before["lines"]]
            assert both["legend"][0].startswith(f"ig · eval {EPOCHS} · AUC ") and both["legend"][3].startswith(
                "ig · eval 1 · AUC "
            ), both
        select_run(driver, "table/version_0")
        assert driver.execute_script("return document.querySelectorAll('#explainers svg.bars').length") == 1
        wait_for(driver, "return document.querySelectorAll('#importance-charts polyline').length === 5")
        # an evaluation whose data file is gone: the tab says so
        first = side_dir(log_dir / "table" / "version_0") / "eval_000000.f16"
        first.rename(first.with_suffix(".gone"))
        try:
            select_run(driver, "table/version_0")
            notice = driver.execute_script("return document.getElementById('notice').textContent")
        finally:
            first.with_suffix(".gone").rename(first)
        assert notice.startswith("1 of 2 evaluations of this run have no data"), notice
        select_run(driver, "tokens/version_0")
        assert driver.execute_script("return document.querySelectorAll('#explainers .token').length") == 8
        select_run(driver, "several/version_0")  # an image and a table: a message, not an error
        notice = driver.execute_script("return document.getElementById('notice').textContent")
        assert "takes 2 inputs (input_0 [4, 1, 8, 8], input_1 [4, 3])" in notice, notice
        select_run(driver, "images/version_0")
        # the screenshot shows a misclassified sample when there is one
        chosen = "(document.querySelector('#grid .thumb.wrong') || document.querySelector('#grid .thumb'))"
        driver.execute_script(f"delete document.body.dataset.drawn; {chosen}.click()")
        wait_for(driver, "return document.body.dataset.drawn !== undefined")
        driver.switch_to.default_content()
        screenshot = tmp_path / "xai_tab.png"
        driver.save_screenshot(str(screenshot))
        assert screenshot.stat().st_size > 10_000
        # XAI_TAB_SCREENSHOT=docs/xai_tab.png keeps a copy (the README's picture); so does an existing /tmp/notes
        for copy in (os.environ.get("XAI_TAB_SCREENSHOT"), "/tmp/notes/xai_tab.png"):
            if copy and Path(copy).parent.is_dir():
                shutil.copy(screenshot, copy)
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()

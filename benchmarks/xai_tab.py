"""The XAI tab: what writing its data costs the monitor, and how fast it opens and redraws in headless Chromium.

Fits the demo SmallCNN on synthetic 1x32x32 images for 50 epochs with AttributionMonitor (4 explainers: IG with 16
steps, saliency, Input x Gradient, Grad-CAM; DeletionAUC and Sparseness; 16 probe samples; an evaluation per epoch);
the monitor calls the tab's writer at each evaluation. Reports:
  * the writer's seconds per evaluation against the monitor's ``xai/time_s`` (median of the ratios, and of sums),
    without and with the probe's forward for the predictions, which the heatmap captions share;
  * bytes per evaluation on disk (maps, each sample's deletion curves, index line) and the probe file written once;
  * in headless Chromium on a real TensorBoard, the tab opened ``--repeats`` times in two ways: by navigating to
    ``/#lightning_xai`` (TensorBoard's whole page loads first) and by clicking the XAI tab in a TensorBoard already
    open on the scalars. Each is split into the time until TensorBoard creates the tab's iframe and the tab's own
    time, from its iframe's start to the probe grid and the first sample's maps drawn (measured on the iframe's own
    clock, ``performance.timeOrigin``), with the requests the tab made. For the navigation, TensorBoard's own page
    is split too: its bundle received, its ``/data/plugins_listing`` request sent and answered (the tab can only be
    created after it), and the main thread's long tasks (> 50 ms, ``PerformanceObserver``) before the iframe;
  * the time the evaluations slider takes to redraw the heatmaps (and everything: the sample's curves at the
    evaluation and every score chart): a jump to an evaluation not fetched yet (fetch, decode, draw), a step to the
    next one (which the tab prefetches), a revisit.

    python benchmarks/xai_tab.py [--epochs 50] [--repeats 5] [--logdir DIR] [--out results.json]

``--logdir``: keep the run there, and reuse it (no fit) when it is there. Needs Debian's chromium and
chromium-driver and ``pip install selenium`` for the browser part (skipped without).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import GradCAM, InputXGradient, IntegratedGradients, Saliency
from lightning_xai.callbacks._xai_tab import TabWriter
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule
from lightning_xai.metrics import DeletionAUC, Sparseness
from lightning_xai.tensorboard.format import INDEX, PLUGIN_NAME, side_dir

NUM_PROBE = 16
LAUNCHER = """
import sys
from tensorboard import default, program
from lightning_xai.tensorboard.plugin import XaiTabLoader
board = program.TensorBoard(plugins=[*(p for p in default.get_plugins() if p is not XaiTabLoader), XaiTabLoader])
board.configure(argv=["tensorboard", *sys.argv[1:]])
sys.exit(board.main())
"""


class Seconds(Callback):
    """Each evaluation's ``xai/time_s`` (runs after the monitor, which logs it in the same hook)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking and "xai/time_s" in trainer.callback_metrics:
            self.values.append(float(trainer.callback_metrics["xai/time_s"]))


def fit(log_dir: Path, epochs: int) -> tuple[list[float], list[float], list[float]]:
    """Train with the monitor, which calls the tab's writer; returns xai/time_s, the writer's seconds and the
    seconds of the probe's forward for the predictions (shared with the heatmap captions, which would pay it
    without the tab: the writer happens to ask first)."""
    writer_seconds: list[float] = []
    forward_seconds: list[float] = []
    original_tab = TabWriter.write

    def timed(self, trainer, result, explained, *args, **kwargs):
        start = time.perf_counter()
        explained.predictions  # noqa: B018 (a cached property: computed once per evaluation, here)
        middle = time.perf_counter()
        original_tab(self, trainer, result, explained, *args, **kwargs)
        forward_seconds.append(middle - start)
        writer_seconds.append(time.perf_counter() - middle)

    TabWriter.write = timed
    try:
        pl.seed_everything(0, verbose=False)
        data = SyntheticPatternsDataModule(num_train=256, num_val=64, image_size=32, batch_size=64)
        explainers = {
            "ig": IntegratedGradients(steps=16),
            "saliency": Saliency(),
            "ixg": InputXGradient(),
            "gradcam": GradCAM(layer="features.3"),
        }
        monitor = AttributionMonitor(explainers, metrics=[DeletionAUC(steps=8), Sparseness()], num_probe=NUM_PROBE)
        seconds = Seconds()
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            logger=TensorBoardLogger(log_dir, name="bench", version=0),
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[monitor, seconds],
        )
        trainer.fit(SmallCNN(num_classes=4, width=8), datamodule=data)
    finally:
        TabWriter.write = original_tab
    return seconds.values, writer_seconds, forward_seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(log_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    installed = any(ep.name == PLUGIN_NAME for ep in metadata.entry_points(group="tensorboard_plugins"))
    launch = [sys.executable, "-m", "tensorboard.main"] if installed else [sys.executable, "-c", LAUNCHER]
    flags = ["--logdir", str(log_dir), "--host", "127.0.0.1", "--port", str(port), "--load_fast", "true"]
    process = subprocess.Popen([*launch, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/data/plugin/{PLUGIN_NAME}/runs", timeout=5) as response:
                if json.loads(response.read()):
                    return process, base
        except OSError:
            pass
        time.sleep(0.3)
    process.terminate()
    raise RuntimeError("tensorboard did not start")


MOVE = """
const [k, done] = arguments;
const slider = document.getElementById('evaluation');
const start = performance.now();
let drawn = null;
slider.value = String(k);
slider.dispatchEvent(new Event('input', {bubbles: true}));
(function poll() {
  if (drawn === null && document.body.dataset.drawn === String(k)) drawn = performance.now() - start;
  if (document.body.dataset.complete === String(k)) done([drawn === null ? performance.now() - start : drawn,
                                                       performance.now() - start]);
  else setTimeout(poll, 0);
})();
"""

#: In the tab's iframe, once drawn: its own clock (ms since the iframe's navigation started) and what it fetched.
INNER = """
const body = document.body.dataset;
return {origin: performance.timeOrigin, module: Number(body.moduleStartMs), drawn: Number(body.firstDrawnMs),
        resources: performance.getEntriesByType('resource').map(e => [e.name, e.startTime, e.responseEnd,
                                                                      e.transferSize || e.encodedBodySize])};
"""


#: Run in every page before its own scripts: the top page's long tasks (TensorBoard's bundle, its rendering).
LONG_TASKS = """
if (window.top === window) {
  window.longTasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.longTasks.push([e.startTime, e.duration]);
  }).observe({type: 'longtask', buffered: true});
}
"""

#: In TensorBoard's page, after a navigation: when its bundle and its plugins listing arrived, and its long tasks.
TOP = """
const find = (path) => performance.getEntriesByType('resource').find(e => new URL(e.name).pathname === path);
const bundle = find('/index.js'), listing = find('/data/plugins_listing');
return {bundle_end: bundle ? bundle.responseEnd : null, listing: listing ? [listing.startTime, listing.responseEnd,
        listing.responseStart - listing.requestStart] : null, long_tasks: window.longTasks || []};
"""


def _open_tab(driver, url: str | None, click: bool) -> dict:
    """Navigate to ``url`` (or click the XAI tab of the page shown) and wait until the tab has drawn; timings."""
    driver.switch_to.default_content()
    if click:
        start = driver.execute_script(
            f"const tab = document.querySelector('[data-plugin-id={PLUGIN_NAME}]');"
            "if (!tab) return null; const now = performance.now(); tab.click(); return now;"
        )
        if start is None:
            raise RuntimeError("no XAI tab to click in TensorBoard's header")
    else:
        driver.get(url)
        start = 0.0
    top_origin = driver.execute_script("return performance.timeOrigin")
    top = None
    deadline = time.monotonic() + 60
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("the XAI tab did not draw within 60 s")
        frames = driver.find_elements("css selector", 'iframe[src*="plugin_entry"]')
        if frames:
            if top is None and not click:
                top = driver.execute_script(TOP)
            driver.switch_to.frame(frames[0])
            if driver.execute_script("return document.body && document.body.dataset.firstDrawnMs"):
                inner = driver.execute_script(INNER)
                break
            driver.switch_to.default_content()
        time.sleep(0.01)
    offset = inner["origin"] - top_origin  # the iframe's start on the page's clock
    page = {}
    if top is not None and top["listing"] and top["bundle_end"]:
        busy = sum(min(begin + length, offset) - begin for begin, length in top["long_tasks"] if begin < offset)
        page = {
            "bundle_end_s": top["bundle_end"] / 1000,
            "listing_sent_s": top["listing"][0] / 1000,
            "listing_answered_s": top["listing"][1] / 1000,
            "listing_server_ms": top["listing"][2],
            "long_tasks_before_iframe_s": busy / 1000,
        }
    return page | {
        "whole_s": (offset + inner["drawn"] - start) / 1000,
        "before_iframe_s": (offset - start) / 1000,
        "tab_s": inner["drawn"] / 1000,
        "module_start_s": inner["module"] / 1000,
        "resources": inner["resources"],
    }


PAGE_KEYS = ("bundle_end_s", "listing_sent_s", "listing_answered_s", "listing_server_ms", "long_tasks_before_iframe_s")


def browser(base: str, evaluations: int, repeats: int = 5) -> dict[str, float]:
    """Open the tab ``repeats`` times by navigation and by clicking it in the header; move the slider."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1500,1300")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": LONG_TASKS})
    results: dict[str, float] = {}
    try:
        navigated, clicked = [], []
        for _ in range(repeats):
            driver.switch_to.default_content()
            driver.get("about:blank")
            navigated.append(_open_tab(driver, f"{base}/#{PLUGIN_NAME}", click=False))
            driver.switch_to.default_content()
            driver.get("about:blank")  # a fresh page: a hash change alone would keep the tab's old iframe
            driver.get(f"{base}/#scalars")  # TensorBoard on another tab, then the user selects XAI
            deadline = time.monotonic() + 30
            while not driver.execute_script(f"return document.querySelector('[data-plugin-id={PLUGIN_NAME}]')"):
                if time.monotonic() > deadline:
                    raise RuntimeError("TensorBoard's header never showed the XAI tab")
                time.sleep(0.05)
            time.sleep(1.0)  # let the scalars dashboard settle
            clicked.append(_open_tab(driver, None, click=True))
        for key in ("whole_s", "before_iframe_s", "listing_sent_s", "long_tasks_before_iframe_s"):  # the first is cold
            results[f"navigate_{key}_each"] = [round(r[key], 3) if key in r else None for r in navigated]
        for name, runs in (("navigate", navigated), ("click", clicked)):
            for key in ("whole_s", "before_iframe_s", "tab_s", "module_start_s", *PAGE_KEYS):
                values = [r[key] for r in runs if key in r]
                if not values:
                    continue
                results[f"{name}_{key}_median"] = statistics.median(values)
                results[f"{name}_{key}_max"] = max(values)
        last = navigated[-1]["resources"]
        results["tab_requests"] = len(last)
        results["tab_bytes"] = sum(r[3] for r in last)
        for name, begin, end, size in last:
            print(f"  {name.split('/plugin/')[-1][:70]:70s} {begin:7.1f} → {end:7.1f} ms  {size} B")
        driver.set_script_timeout(30)
        # the tab fetches the 4 evaluations on each side of the shown one: jumps of 9 land on evaluations not fetched
        jumps = list(range(0, evaluations - 9, 9))
        cold = [driver.execute_async_script(MOVE, k) for k in jumps]
        steps = [driver.execute_async_script(MOVE, k) for k in range(jumps[-1] + 1, jumps[-1] + 6)]
        warm = [driver.execute_async_script(MOVE, k) for k in jumps]
        for name, values in (("jump_to_unfetched", cold), ("next_evaluation", steps), ("revisit", warm)):
            results[f"slider_{name}_heatmap_ms_median"] = statistics.median(v[0] for v in values)
            results[f"slider_{name}_heatmap_ms_max"] = max(v[0] for v in values)
            results[f"slider_{name}_everything_ms_median"] = statistics.median(v[1] for v in values)
    finally:
        driver.quit()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5, help="times the tab is opened in each way")
    parser.add_argument("--logdir", type=Path, default=None, help="keep the run here; reuse it if it is there")
    args = parser.parse_args()
    log_dir = args.logdir or Path(tempfile.mkdtemp(prefix="xai_tab_bench_"))
    folder = side_dir(log_dir / "bench" / "version_0")
    results: dict[str, float] = {}
    if not (folder / INDEX).exists():
        start = time.perf_counter()
        time_s, writer, forward = fit(log_dir, args.epochs)
        ratios = [w / t for w, t in zip(writer, time_s, strict=True)]
        with_forward = [(w + f) / t for w, f, t in zip(writer, forward, time_s, strict=True)]
        results = {
            "fit_s": time.perf_counter() - start,
            "xai_time_s_median": statistics.median(time_s),
            "writer_ms_median": 1000 * statistics.median(writer),
            "writer_ms_max": 1000 * max(writer),
            "writer_over_xai_time_median_pct": 100 * statistics.median(ratios),
            "writer_over_xai_time_total_pct": 100 * sum(writer) / sum(time_s),
            "predictions_forward_ms_median": 1000 * statistics.median(forward),
            "writer_and_forward_over_xai_time_median_pct": 100 * statistics.median(with_forward),
        }
    maps = sorted(folder.glob("eval_*.f16"))
    lines = (folder / INDEX).read_text().splitlines()
    curves = [
        sum(2 * c["shape"][0] * c["shape"][1] for c in json.loads(line).get("sample_curves", [])) for line in lines
    ]
    results |= {
        "evaluations": len(maps),
        "bytes_maps_per_evaluation": statistics.mean(p.stat().st_size for p in maps) - statistics.mean(curves),
        "bytes_sample_curves_per_evaluation": statistics.mean(curves),
        "bytes_index_line_per_evaluation": statistics.mean(len(line) + 1 for line in lines),
        "bytes_probe_once": sum(p.stat().st_size for p in folder.glob("probe_*.u8")),
    }
    if shutil.which("chromium") and shutil.which("chromedriver"):
        process, base = serve(log_dir)
        try:
            results.update(browser(base, len(maps), args.repeats))
        finally:
            process.terminate()
            process.wait(timeout=30)
    else:
        print("chromium/chromedriver not found: browser timings skipped")
    for key, value in results.items():
        print(f"{key:40s} {value:.4g}" if isinstance(value, float) else f"{key:40s} {value}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    if args.logdir is None:
        shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

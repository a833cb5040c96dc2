"""The XAI tab: what writing its data costs the monitor, and how fast it opens and redraws in headless Chromium.

Fits the demo SmallCNN on synthetic 1x32x32 images for 50 epochs with AttributionMonitor (4 explainers: IG with 16
steps, saliency, Input x Gradient, Grad-CAM; DeletionAUC and Sparseness; 16 probe samples; an evaluation per epoch),
the tab's writer called from the monitor's picture step (wired in here if the monitor does not call it yet). Reports:
  * the writer's seconds per evaluation against the monitor's ``xai/time_s`` (median of the ratios, and of sums);
  * bytes per evaluation on disk (maps, index line) and the probe file written once;
  * in headless Chromium on a real TensorBoard: the time from navigation to the tab's first drawn sample, split into
    TensorBoard's own page until it creates the tab's iframe and the tab from its iframe's start to its first drawing;
    and the time the evaluations slider takes to redraw: a jump to an evaluation not fetched yet (fetch, decode,
    draw), a step to the next one (which the tab prefetches), and a revisit.

    python benchmarks/xai_tab.py [--epochs 50] [--out results.json]

Needs Debian's chromium and chromium-driver and ``pip install selenium`` for the browser part (skipped without).
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
from lightning_xai.callbacks import _pictures
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


def fit(log_dir: Path, epochs: int) -> tuple[list[float], list[float]]:
    """Train with the tab's writer wired into ``Presenter.write``; returns xai/time_s and the writer's seconds."""
    writer_seconds: list[float] = []
    original, original_tab = _pictures.Presenter.write, TabWriter.write

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        original_tab(self, *args, **kwargs)
        writer_seconds.append(time.perf_counter() - start)

    def write(self, trainer, result, explained, paths, tags):  # until the monitor calls the writer itself
        original(self, trainer, result, explained, paths, tags)
        if not hasattr(self, "tab"):
            self.tab = TabWriter(self.on_error)
        monitor = next(c for c in trainer.callbacks if isinstance(c, AttributionMonitor))
        self.tab.write(trainer, result, explained, monitor.probe.labels, self.view)

    TabWriter.write = timed
    if not hasattr(_pictures, "TabWriter"):
        _pictures.Presenter.write = write
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
        _pictures.Presenter.write, TabWriter.write = original, original_tab
    return seconds.values, writer_seconds


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
slider.value = String(k);
slider.dispatchEvent(new Event('input', {bubbles: true}));
(function poll() {
  if (document.body.dataset.drawn === String(k)) done(performance.now() - start);
  else requestAnimationFrame(poll);
})();
"""


def browser(base: str, evaluations: int) -> dict[str, float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1500,1300")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    results: dict[str, float] = {}
    try:
        opens, inner, host = [], [], []
        for _ in range(3):
            driver.switch_to.default_content()
            driver.get("about:blank")
            start = time.perf_counter()
            driver.get(f"{base}/#{PLUGIN_NAME}")
            framed = None
            while True:
                frames = driver.find_elements("css selector", 'iframe[src*="plugin_entry"]')
                if frames:
                    framed = framed or time.perf_counter()
                    driver.switch_to.frame(frames[0])
                    if driver.execute_script("return document.body && document.body.dataset.drawn"):
                        break
                    driver.switch_to.default_content()
                time.sleep(0.01)
            opens.append(time.perf_counter() - start)
            host.append(framed - start)
            inner.append(driver.execute_script("return performance.now()") / 1000)
        results["open_s_median"] = statistics.median(opens)
        results["open_s_max"] = max(opens)
        results["tensorboard_page_to_iframe_s_median"] = statistics.median(host)
        results["iframe_start_to_drawn_s_median"] = statistics.median(inner)
        driver.set_script_timeout(30)
        # the tab fetches the 4 evaluations on each side of the shown one: jumps of 9 land on evaluations not fetched
        jumps = list(range(0, evaluations - 9, 9))
        cold = [driver.execute_async_script(MOVE, k) for k in jumps]
        steps = [driver.execute_async_script(MOVE, k) for k in range(jumps[-1] + 1, jumps[-1] + 6)]
        warm = [driver.execute_async_script(MOVE, k) for k in jumps]
        for name, values in (("jump_to_unfetched", cold), ("next_evaluation", steps), ("revisit", warm)):
            results[f"slider_{name}_ms_median"] = statistics.median(values)
            results[f"slider_{name}_ms_max"] = max(values)
    finally:
        driver.quit()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="xai_tab_bench_"))
    start = time.perf_counter()
    time_s, writer = fit(log_dir, args.epochs)
    folder = side_dir(log_dir / "bench" / "version_0")
    maps = sorted(folder.glob("eval_*.f16"))
    lines = (folder / INDEX).read_text().splitlines()
    ratios = [w / t for w, t in zip(writer, time_s, strict=True)]
    results: dict[str, float] = {
        "evaluations": len(maps),
        "fit_s": time.perf_counter() - start,
        "xai_time_s_median": statistics.median(time_s),
        "writer_ms_median": 1000 * statistics.median(writer),
        "writer_ms_max": 1000 * max(writer),
        "writer_over_xai_time_median_pct": 100 * statistics.median(ratios),
        "writer_over_xai_time_total_pct": 100 * sum(writer) / sum(time_s),
        "bytes_maps_per_evaluation": statistics.mean(p.stat().st_size for p in maps),
        "bytes_index_line_per_evaluation": statistics.mean(len(line) + 1 for line in lines),
        "bytes_probe_once": sum(p.stat().st_size for p in folder.glob("probe_*.u8")),
    }
    if shutil.which("chromium") and shutil.which("chromedriver"):
        process, base = serve(log_dir)
        try:
            results.update(browser(base, len(maps)))
        finally:
            process.terminate()
            process.wait(timeout=30)
    else:
        print("chromium/chromedriver not found: browser timings skipped")
    for key, value in results.items():
        print(f"{key:40s} {value:.4g}" if isinstance(value, float) else f"{key:40s} {value}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

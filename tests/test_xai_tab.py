"""The XAI tab: its side files written by a real fit, the plugin's routes in process and in a real server."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from conftest import quick_trainer
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import GradCAM, IntegratedGradients, Saliency
from lightning_xai.callbacks import _pictures
from lightning_xai.callbacks._xai_tab import TabWriter, downsample, per_sample_scale, shown_inputs
from lightning_xai.demo import (
    DigitsDataModule,
    SmallCNN,
    SyntheticPatternsDataModule,
    SyntheticTokensDataModule,
    TabularMLP,
    TokenTransformer,
)
from lightning_xai.demo.tabular import SyntheticTabularDataModule
from lightning_xai.metrics import DeletionAUC, InsertionAUC, Sparseness
from lightning_xai.tensorboard.format import PLUGIN_NAME, SUMMARY_TAG, read_index, side_dir

NUM_PROBE = 6
EPOCHS = 3


def wire_tab(monkeypatch: pytest.MonkeyPatch) -> list[TabWriter]:
    """Call a TabWriter from ``Presenter.write`` (unless the monitor already does); returns the writers used."""
    writers: list[TabWriter] = []
    if hasattr(_pictures, "TabWriter"):  # wired in: collect the presenters' writers
        original_init = _pictures.Presenter.__init__

        def init(self, *args, **kwargs):
            original_init(self, *args, **kwargs)
            writers.append(self.tab)

        monkeypatch.setattr(_pictures.Presenter, "__init__", init)
        return writers
    original = _pictures.Presenter.write

    def write(self, trainer, result, explained, paths, tags):
        original(self, trainer, result, explained, paths, tags)
        if not hasattr(self, "tab"):
            self.tab = TabWriter(self.on_error)
            writers.append(self.tab)
        monitor = next(c for c in trainer.callbacks if isinstance(c, AttributionMonitor))
        self.tab.write(trainer, result, explained, monitor.probe.labels, self.view)

    monkeypatch.setattr(_pictures.Presenter, "write", write)
    return writers


def fit_runs(log_dir: Path) -> dict[str, float]:
    """An image run (3 explainers, 3 evaluations) and a table run; returns the monitors' mean xai/time_s."""
    pl.seed_everything(0)
    images = DigitsDataModule(image_size=16, batch_size=32)
    monitor = AttributionMonitor(
        {"ig": IntegratedGradients(steps=8), "saliency": Saliency(), "gradcam": GradCAM(layer="features.3")},
        metrics=[DeletionAUC(steps=8), InsertionAUC(steps=8), Sparseness()],
        num_probe=NUM_PROBE,
        strict=True,
        baselines=True,
    )
    logger = TensorBoardLogger(log_dir, name="images", version=0)
    trainer = quick_trainer(log_dir, [monitor], EPOCHS, logger, limit_train_batches=8, limit_val_batches=1)
    trainer.fit(SmallCNN(num_classes=10, width=8), datamodule=images)
    times = {"images": float(trainer.callback_metrics["xai/time_s"])}
    pl.seed_everything(0)
    table = SyntheticTabularDataModule(num_features=5, informative=(0,), num_train=64, num_val=32)
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=8)}, num_probe=4, strict=True)
    logger = TensorBoardLogger(log_dir, name="table", version=0)
    trainer = quick_trainer(log_dir, [monitor], max_epochs=2, logger=logger)
    trainer.fit(TabularMLP(num_features=5), datamodule=table)
    times["table"] = float(trainer.callback_metrics["xai/time_s"])
    pl.seed_everything(0)
    tokens = SyntheticTokensDataModule(num_classes=3, seq_len=8, vocab_size=24, num_train=64, num_val=16)
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4, layer="embedding")}, num_probe=4, strict=True)
    logger = TensorBoardLogger(log_dir, name="tokens", version=0)
    trainer = quick_trainer(log_dir, [monitor], max_epochs=1, logger=logger)
    trainer.fit(TokenTransformer(vocab_size=24, num_classes=3, dim=16, depth=1, heads=2), datamodule=tokens)
    pl.seed_everything(0)
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, num_probe=4, input_key=[0, 1], target_key=2)
    logger = TensorBoardLogger(log_dir, name="several", version=0)
    trainer = quick_trainer(log_dir, [monitor], max_epochs=1, logger=logger)
    trainer.fit(ImageAndTable(), *image_and_table_loaders())
    return times


class ImageAndTable(pl.LightningModule):
    """``forward(image, table)``: two inputs of different kinds (the tab shows a message for them)."""

    def __init__(self) -> None:
        super().__init__()
        self.image, self.table = torch.nn.Linear(64, 2), torch.nn.Linear(3, 2)

    def forward(self, image, table):
        return self.image(image.flatten(1)) + self.table(table)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self(batch[0], batch[1]), batch[2])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.nn.functional.cross_entropy(self(batch[0], batch[1]), batch[2]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def image_and_table_loaders():
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(0)
    images, tables = torch.randn(32, 1, 8, 8, generator=gen), torch.randn(32, 3, generator=gen)
    data = TensorDataset(images, tables, (tables[:, 0] > 0).long())
    return DataLoader(data, batch_size=16), DataLoader(data, batch_size=16)


_RUNS: dict[str, tuple] = {}


def shared_runs(tmp_path_factory) -> tuple[Path, list[TabWriter], dict[str, float]]:
    """The runs of :func:`fit_runs`, trained once per session (the server and browser tests use them too)."""
    if "runs" not in _RUNS:
        log_dir = tmp_path_factory.mktemp("xai_tab_logs")
        with pytest.MonkeyPatch.context() as patch:
            writers = wire_tab(patch)
            times = fit_runs(log_dir)
        _RUNS["runs"] = (log_dir, writers, times)
    return _RUNS["runs"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return shared_runs(tmp_path_factory)


def tensorboard_client(log_dir: Path):
    """TensorBoard's WSGI app with every default plugin and the XAI tab, behind werkzeug's test client."""
    from tensorboard import default, program
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from werkzeug.test import Client

    from lightning_xai.tensorboard.plugin import XaiTabLoader

    plugins = [*(p for p in default.get_plugins() if p is not XaiTabLoader), XaiTabLoader]
    board = program.TensorBoard(plugins=plugins)
    board.configure(logdir=str(log_dir))
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(log_dir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(log_dir))
    app = application.TensorBoardWSGIApp(board.flags, plugins, provider, None, multiplexer)
    return Client(app)


@pytest.fixture(scope="module")
def client(runs):
    return tensorboard_client(runs[0])


PREFIX = f"/data/plugin/{PLUGIN_NAME}"


def test_the_tab_is_listed_and_its_runs_are_the_ones_with_data(client):
    listing = client.get("/data/plugins_listing").get_json()
    tab = listing[PLUGIN_NAME]
    assert tab["enabled"] and tab["tab_name"] == "XAI", tab
    assert tab["loading_mechanism"] == {"type": "IFRAME", "module_path": f"{PREFIX}/index.js"}
    runs = client.get(f"{PREFIX}/runs").get_json()
    assert runs == [
        {"run": "images/version_0", "evaluations": EPOCHS},
        {"run": "several/version_0", "evaluations": 1},
        {"run": "table/version_0", "evaluations": 2},
        {"run": "tokens/version_0", "evaluations": 1},
    ]


def test_routes_serve_a_real_runs_evaluations_and_their_files(client, runs):
    log_dir = runs[0]
    response = client.get(f"{PREFIX}/evaluations", query_string={"run": "images/version_0"})
    records = response.get_json()
    assert records == read_index(side_dir(log_dir / "images" / "version_0"))
    maps = client.get(f"{PREFIX}/data", query_string={"run": "images/version_0", "file": records[-1]["file"]})
    written = side_dir(log_dir / "images" / "version_0") / records[-1]["file"]
    assert maps.status_code == 200 and maps.data == written.read_bytes()
    probe = client.get(f"{PREFIX}/data", query_string={"run": "images/version_0", "file": records[0]["probe"]["file"]})
    assert len(probe.data) == NUM_PROBE * 16 * 16 * 3


def test_routes_refuse_unknown_runs_and_files(client):
    for query in ({"run": "nope", "file": "eval_000000.f16"}, {"run": "images/version_0", "file": "../index.jsonl"},
                  {"run": "images/version_0", "file": "eval_999999.f16"}):  # fmt: skip
        assert client.get(f"{PREFIX}/data", query_string=query).status_code == 404
    assert client.get(f"{PREFIX}/evaluations", query_string={"run": "../.."}).status_code == 404
    assert client.get(f"{PREFIX}/static/../plugin.py").status_code == 404


def test_the_frontend_is_served_as_es_modules_from_the_package(client):
    entry = client.get("/data/plugin_entry.html", query_string={"name": PLUGIN_NAME})
    assert entry.status_code == 200 and "m.render()" in entry.get_data(as_text=True)
    index = client.get(f"{PREFIX}/index.js")
    assert index.status_code == 200 and index.mimetype == "text/javascript"
    assert "export async function render" in index.get_data(as_text=True)
    texts = {"index.js": index.get_data(as_text=True)}
    for name in ("colormap.js", "charts.js", "scores.js", "style.css"):
        response = client.get(f"{PREFIX}/static/{name}")
        assert response.status_code == 200 and response.mimetype in ("text/javascript", "text/css"), name
        texts[name] = response.get_data(as_text=True)
    for name, text in texts.items():  # nothing from the network (the SVG namespace is a name, not a fetch)
        assert "https://" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", ""), name
        assert all(
            line.split(" from ")[-1].startswith(('"./', "'./"))
            for line in text.splitlines()
            if line.startswith("import ")
        ), name
        # dynamic imports: only the package's own modules, by a relative path
        assert all(m.startswith('"./static/') for m in re.findall(r"\bimport\(([^)]*)\)", text)), name
    helpers = ['"./static/colormap.js"', '"./static/charts.js"', '"./static/scores.js"']
    assert re.findall(r"\bimport\(([^)]*)\)", texts["index.js"]) == helpers


def test_the_overview_route_opens_the_tab_in_one_request(client, runs):
    overview = client.get(f"{PREFIX}/overview").get_json()
    listed = client.get(f"{PREFIX}/runs").get_json()
    assert overview["runs"] == listed and overview["run"] == listed[0]["run"]
    assert overview["records"] == client.get(f"{PREFIX}/evaluations", query_string={"run": listed[0]["run"]}).get_json()
    chosen = client.get(f"{PREFIX}/overview", query_string={"run": "table/version_0"}).get_json()
    assert chosen["run"] == "table/version_0" and len(chosen["records"]) == 2
    assert client.get(f"{PREFIX}/overview", query_string={"run": "nope"}).get_json()["run"] == listed[0]["run"]


def test_the_routes_see_new_and_missing_evaluations_despite_their_cache(runs, tmp_path):
    shutil.copytree(runs[0] / "images", tmp_path / "images")
    client = tensorboard_client(tmp_path)
    folder = side_dir(tmp_path / "images" / "version_0")
    query = {"run": "images/version_0"}
    records = client.get(f"{PREFIX}/evaluations", query_string=query).get_json()
    assert len(records) == EPOCHS and client.get(f"{PREFIX}/evaluations", query_string=query).get_json() == records
    extra = {**records[-1], "evaluation": EPOCHS, "file": f"eval_{EPOCHS:06d}.f16"}  # an evaluation appended
    shutil.copy(folder / records[-1]["file"], folder / extra["file"])
    with open(folder / "index.jsonl", "a") as index:
        index.write(json.dumps(extra) + "\n")
    assert len(client.get(f"{PREFIX}/overview").get_json()["records"]) == EPOCHS + 1
    (folder / records[0]["file"]).unlink()  # a data file gone: its evaluation is no longer served
    served = client.get(f"{PREFIX}/evaluations", query_string=query).get_json()
    assert [r["evaluation"] for r in served] == list(range(1, EPOCHS + 1))


def test_every_evaluation_is_written_with_its_probe_and_maps(runs):
    log_dir, writers, _ = runs
    folder = side_dir(log_dir / "images" / "version_0")
    index = read_index(folder)
    assert [r["evaluation"] for r in index] == list(range(EPOCHS))
    steps = [r["step"] for r in index]
    assert steps == sorted(steps) and len(set(steps)) == EPOCHS
    first = index[0]
    assert first["kind"] == "image" and [m["tag"] for m in first["maps"]] == ["ig", "saliency", "gradcam"]
    assert [m["signed"] for m in first["maps"]] == [True, False, False]
    probe = first["probe"]
    assert probe["size"] == NUM_PROBE and probe["shape"] == [NUM_PROBE, 16, 16, 3]
    assert len(probe["classes"]) == NUM_PROBE and probe["labels"][0].startswith("label ")
    assert len(first["predictions"]) == NUM_PROBE and all(0 <= p <= 1 for p in first["confidence"])
    # the probe's inputs are written once; every evaluation has its own maps
    assert len(list(folder.glob("probe_*.u8"))) == 1 and len(list(folder.glob("eval_*.f16"))) == EPOCHS
    pixels = (folder / probe["file"]).read_bytes()
    assert len(pixels) == NUM_PROBE * 16 * 16 * 3
    assert {"deletion_auc", "sparseness"} <= set(first["scores"]["ig"]) and "deletion" in first["curves"]["ig"]
    # after the maps, each sample's deletion and insertion curves (9 points of DeletionAUC(steps=8)), per explainer
    curves = [(c["tag"], c["kind"], c["shape"], c["offset"]) for c in first["sample_curves"]]
    maps_bytes = 3 * NUM_PROBE * 16 * 16 * 2
    order = [(tag, kind) for tag in ("ig", "saliency", "gradcam") for kind in ("deletion", "insertion")]
    assert curves == [(t, c, [NUM_PROBE, 9], maps_bytes + NUM_PROBE * 9 * 2 * k) for k, (t, c) in enumerate(order)]
    for record in index:
        data = (folder / record["file"]).read_bytes()
        assert len(data) == record["bytes"] == maps_bytes + 6 * NUM_PROBE * 9 * 2
    # the maps change over training, and a stored map times its scale is the attribution the monitor computed
    ig = [np.frombuffer((folder / r["file"]).read_bytes(), "<f2", NUM_PROBE * 256) for r in index]
    assert not np.array_equal(ig[0], ig[-1])
    assert writers and writers[0].seconds > 0


def test_stored_maps_are_the_monitors_attributions(tmp_path, monkeypatch):
    captured = {}
    original = TabWriter.write

    def spy(self, trainer, result, *args):
        captured["ig"] = result.attributions["ig"].detach().clone()
        original(self, trainer, result, *args)

    monkeypatch.setattr(TabWriter, "write", spy)
    wire_tab(monkeypatch)
    data = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=48, num_val=12)
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, num_probe=3, strict=True)
    quick_trainer(tmp_path, [monitor], max_epochs=1).fit(SmallCNN(num_classes=3, width=4), datamodule=data)
    folder = side_dir(tmp_path / "run" / "version_0")
    (record,) = read_index(folder)
    stored = np.frombuffer((folder / record["file"]).read_bytes(), "<f2").astype(np.float32).reshape(3, 16, 16)
    scale = np.asarray(record["maps"][0]["scale"], dtype=np.float32)[:, None, None]
    expected = captured["ig"].sum(dim=1).numpy()  # signed maps: summed over channels
    np.testing.assert_allclose(stored * scale, expected, rtol=2e-3, atol=2e-3 * float(np.abs(expected).max()))


def test_table_runs_keep_feature_names_and_per_feature_maps(runs):
    log_dir, _, _ = runs
    index = read_index(side_dir(log_dir / "table" / "version_0"))
    assert len(index) == 2 and index[0]["kind"] == "table"
    assert index[0]["probe"]["features"] == ["signal_0", "noise_1", "noise_2", "noise_3", "noise_4"]
    assert index[0]["maps"][0]["shape"] == [4, 5] and index[0]["probe"]["file"] is None
    assert index[0]["sample_curves"] == []  # no DeletionAUC or InsertionAUC: no curves, no bytes for them
    assert all(r["bytes"] == 2 * 4 * 5 for r in index)


def test_training_is_bit_identical_with_the_writer(tmp_path, monkeypatch):
    def weights(wired: bool) -> list[torch.Tensor]:
        with pytest.MonkeyPatch.context() as patch:
            if wired:
                wire_tab(patch)
            else:  # also when the monitor calls the writer itself
                patch.setattr(TabWriter, "write", lambda self, *args, **kwargs: None)
            pl.seed_everything(0)
            data = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=64, num_val=16)
            monitor = AttributionMonitor({"saliency": Saliency()}, num_probe=3, strict=True)
            model = SmallCNN(num_classes=3, width=4, dropout=0.5)
            logger = TensorBoardLogger(tmp_path, name=f"wired_{wired}", version=0)
            quick_trainer(tmp_path, [monitor], max_epochs=2, logger=logger).fit(model, datamodule=data)
        return [p.detach().clone() for p in model.state_dict().values()]

    plain, wired = weights(False), weights(True)
    assert len(read_index(side_dir(tmp_path / "wired_True" / "version_0"))) == 2
    assert all(torch.equal(a, b) for a, b in zip(plain, wired, strict=True))


def test_the_tab_is_inactive_without_data(tmp_path):
    (tmp_path / "empty").mkdir()
    client = tensorboard_client(tmp_path)
    assert not client.get("/data/plugins_listing").get_json()[PLUGIN_NAME]["enabled"]
    assert client.get(f"{PREFIX}/runs").get_json() == []


def test_token_runs_keep_the_words(runs):
    log_dir, _, _ = runs
    (record,) = read_index(side_dir(log_dir / "tokens" / "version_0"))
    assert record["kind"] == "tokens" and record["maps"][0]["shape"] == [4, 8]
    words = record["probe"]["tokens"]
    assert len(words) == 4 and len(words[0]) == 8 and not all(w.isdigit() for w in words[0])


def test_the_frontend_decodes_float16_as_numpy_does():
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs node to run the frontend's module")
    values = np.array([0.0, -0.0, 1.0, -2.5, 65504.0, 6e-8, -3e-5, 0.1, np.inf, -np.inf, 1 / 3], dtype="<f2")
    module = (Path(__file__).parents[1] / "lightning_xai" / "tensorboard" / "static" / "colormap.js").as_uri()
    script = (
        f"import {{ decodeHalf, lutIndex }} from '{module}';"
        f"const bytes = Uint8Array.from({list(values.tobytes())});"
        f"const half = decodeHalf(bytes.buffer, 0, {values.size});"
        "const out = Array.from(half, (v) => (Number.isFinite(v) ? v : String(v)));"
        "const lut = [lutIndex(-1, true), lutIndex(0, true), lutIndex(1, true), lutIndex(2, false)];"
        "console.log(JSON.stringify([out, lut]));"
    )
    result = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, check=True)
    decoded, indices = json.loads(result.stdout)
    expected = [float(v) if np.isfinite(v) else ("Infinity" if v > 0 else "-Infinity") for v in values]
    assert decoded == expected
    assert indices == [0, 128, 255, 255]


def test_downsampling_caps_each_side_and_keeps_the_mean():
    maps = torch.rand(2, 300, 257)
    small = downsample(maps)
    assert max(small.shape[1:]) <= 128
    assert torch.allclose(small.mean(dim=(1, 2)), maps.mean(dim=(1, 2)), atol=0.02)
    assert per_sample_scale(torch.tensor([[0.0, -3.0]]), signed=False).tolist() == [0.0]  # magnitudes: clamped
    assert per_sample_scale(torch.tensor([[0.0, -3.0]]), signed=True).tolist() == [3.0]
    # kinds: several tables are one table, float sequences are shown per position, the rest gets a message
    kinds = [torch.zeros(2, 1, 4, 4), torch.zeros(2, 5), torch.zeros(2, 5).long(), torch.zeros(2, 4, 8)]
    assert [shown_inputs(x).kind for x in kinds] == ["image", "table", "tokens", "tokens"]
    assert shown_inputs(torch.zeros(2, 4, 8)).names == [["0", "1", "2", "3"]] * 2
    assert shown_inputs((torch.zeros(2, 3), torch.zeros(2, 3))).kind == "table"
    several = shown_inputs((torch.zeros(2, 1, 4, 4), torch.zeros(2, 3)))
    assert several.kind == "unsupported" and "input_0 [2, 1, 4, 4], input_1 [2, 3]" in several.message
    assert shown_inputs(torch.zeros(2, 1, 2, 4, 4)).kind == "unsupported"


def test_the_writer_skips_other_ranks_and_reports_failures(tmp_path):
    class Trainer:
        is_global_zero = False

    TabWriter().write(Trainer(), None, None, None)  # not rank zero: nothing is touched
    failures = []
    broken = TabWriter(on_error=lambda what, err: failures.append(what))
    trainer = quick_trainer(tmp_path, [], max_epochs=1)
    broken.write(trainer, object(), None, None)
    assert failures == ["writing the XAI tab's data"]


def test_marker_summaries_let_the_data_provider_find_the_runs(runs):
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

    log_dir, _, _ = runs
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(log_dir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(log_dir))
    found = provider.list_tensors(context.RequestContext(), experiment_id="", plugin_name=PLUGIN_NAME)
    assert set(found) == {"images/version_0", "several/version_0", "table/version_0", "tokens/version_0"}
    assert found["images/version_0"][SUMMARY_TAG].max_step > 0
    content = json.loads(found["images/version_0"][SUMMARY_TAG].plugin_content)
    assert content["format"] == 1 and content["file"].startswith("eval_")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))

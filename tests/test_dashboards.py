"""What a person sees in TensorBoard's stock dashboards: captioned, readable pictures (issue 11, part B)."""

from __future__ import annotations

import io

import pytorch_lightning as pl
import torch
from conftest import quick_trainer, read_events
from PIL import Image

from lightning_xai import AttributionMonitor
from lightning_xai.attribution import IntegratedGradients, OutputAdapter
from lightning_xai.callbacks._explained import Explained
from lightning_xai.callbacks._pictures import prediction_captions
from lightning_xai.demo import SmallCNN, SyntheticPatternsDataModule


def test_captions_give_label_prediction_and_confidence_and_mark_wrong_ones():
    model = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    inputs = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    captions, wrong = prediction_captions(Explained(model, inputs, {}), torch.tensor([0, 1]))
    p = torch.softmax(inputs, dim=1).max(dim=1).values
    assert captions == [f"label 0 · pred 0 ({p[0]:.2f})", f"label 1 · pred 2 ({p[1]:.2f})"] and wrong == [False, True]
    logit = torch.nn.Linear(3, 1)
    binary = OutputAdapter(logit, task="binary")
    with torch.no_grad():
        z = logit(inputs).flatten()
    captions, wrong = prediction_captions(Explained(binary, inputs, {}, task="binary"), torch.tensor([1.0, 0.0]))
    expected = [int(v > 0) for v in z]
    assert [c.split(" · ")[1].split(" ")[1] for c in captions] == [str(e) for e in expected]
    assert wrong == [expected[0] != 1, expected[1] != 0]
    captions, wrong = prediction_captions(Explained(model, inputs, {}, task="regression"), None)
    assert captions is None and wrong is None


def test_heatmap_grids_in_tensorboard_have_large_cells_and_a_caption_column(tmp_path):
    pl.seed_everything(0)
    data = SyntheticPatternsDataModule(num_classes=3, image_size=16, pattern_size=6, num_train=96, num_val=24)
    monitor = AttributionMonitor({"ig": IntegratedGradients(steps=4)}, num_probe=4)
    quick_trainer(tmp_path, [monitor], max_epochs=1).fit(SmallCNN(in_channels=1, num_classes=3, width=4), data)
    event = read_events(tmp_path / "run").Images("xai/ig/heatmaps")[-1]
    width, height = Image.open(io.BytesIO(event.encoded_image_string)).size
    cell = 16 * 6 + 2 * 2  # 16-px inputs enlarged 6x to >= 96 px, plus padding
    assert height > 4 * cell and width > 3 * cell + 60  # four rows, a caption column beside them


def test_feature_bars_diverge_by_sign_with_a_legend_and_an_uncut_title():
    from lightning_xai.render import importance_figure

    names = [f"a_rather_long_feature_name_{i}" for i in range(6)]
    mean_abs = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    mean = torch.tensor([5.0, -4.0, 3.0, -2.0, 1.0, -0.5])
    figure = importance_figure(names, mean_abs, mean, "integrated_gradients_with_a_long_name", top_k=6)
    axes = figure.axes[0]
    widths = [bar.get_width() for bar in axes.patches]
    assert any(w < 0 for w in widths) and any(w > 0 for w in widths)  # bars go both ways
    assert len(axes.get_legend().get_texts()) == 3
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = figure.bbox
    for text in [axes.title, *axes.get_yticklabels()]:
        extent = text.get_window_extent(renderer)
        assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, text.get_text()  # nothing is cut
        assert text.get_fontsize() >= 10

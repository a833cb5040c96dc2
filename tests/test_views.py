"""Views: one per kind of input, chosen once, each turning attributions into that kind's pictures and texts."""

from __future__ import annotations

import pytest
import torch

from lightning_xai.render import attribution_grid, token_markdown
from lightning_xai.render.tokens import token_strips
from lightning_xai.render.views import (
    ImageView,
    MultiView,
    NoView,
    TableView,
    TokenView,
    choose_view,
    format_label,
    input_kind,
)


@pytest.mark.parametrize(
    ("inputs", "kind", "view"),
    [
        (torch.zeros(2, 3, 8, 8), "image", ImageView),
        (torch.zeros(2, 5), "table", TableView),
        (torch.zeros(2, 5, dtype=torch.long), "tokens", TokenView),
        (torch.zeros(2, 5, 4), "sequence", TokenView),
        ((torch.zeros(2, 1, 4, 4), torch.zeros(2, 3)), "several", MultiView),
        (torch.zeros(2, 2, 2, 2, 2), "other", NoView),
    ],
)
def test_the_kind_of_input_chooses_the_view(inputs, kind, view):
    assert input_kind(inputs) == kind
    assert type(choose_view(inputs)) is view


def test_images_give_the_heatmap_grid_and_patch_maps_fit():
    images, attr = torch.rand(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    view = choose_view(images)
    assert view.fits(attr) and view.fits(torch.rand(2, 1, 2, 2))  # a patch grid is upsampled
    assert not view.fits(torch.rand(2, 16)) and not view.fits(torch.rand(3, 1, 8, 8))
    rendered = view.render(attr, signed=True, title="ig")
    torch.testing.assert_close(rendered.images["heatmaps"], attribution_grid(images, attr, signed=True, title="ig"))
    view.set_captions(["label 0", "label 1"], [False, True])
    captioned = view.render(attr, signed=True, title="ig").images["heatmaps"]
    expected = attribution_grid(images, attr, signed=True, title="ig", captions=["label 0", "label 1"], wrong=[0, 1])
    torch.testing.assert_close(captioned, expected)
    assert not rendered.figures and not rendered.texts


def test_tables_give_per_feature_scalars_a_chart_and_a_table():
    view = choose_view(torch.zeros(2, 3), feature_names=lambda count: ["a", "b", "c"][:count], top_k=2)
    attr = torch.tensor([[1.0, -2.0, 0.0], [3.0, 2.0, 0.5]])
    summaries = view.summaries(attr)
    assert list(summaries) == ["importance/a", "importance/b", "importance/c"]
    assert [float(v) for v in summaries.values()] == [2.0, 2.0, 0.25]
    rendered = view.render(attr, signed=True, title="ig")
    assert set(rendered.figures) == {"importance"}
    assert rendered.texts["top_features"].splitlines()[2] == "| 1 | a | 2 | 2 |"
    assert choose_view(torch.zeros(1, 2)).names == ["feature_0", "feature_1"]


def test_tokens_leave_padding_out_of_strips_and_panels():
    ids = torch.tensor([[1, 7, 2, 0, 0], [1, 8, 9, 5, 2]])
    valid = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    vocabulary = ["[PAD]", "[CLS]", "[SEP]", "-", "-", "great", "-", "awful", "the", "film"]
    view = choose_view(ids, decode=lambda x: [[vocabulary[i] for i in row] for row in x.tolist()], valid=valid)
    view.top_tokens = 1
    scores = torch.tensor([[0.1, 0.5, 0.2, 9.0, 9.0], [0.0, 0.1, 0.3, 2.0, -1.0]])
    rendered = view.render(scores[..., None].expand(2, 5, 4), signed=True, title="ig")  # summed over the embedding
    lines = rendered.texts["top_tokens"].splitlines()
    assert lines == [
        "1. [CLS] **awful** [SEP] — top: awful (2)",
        "2. [CLS] the film **great** [SEP] — top: great (8)",
    ]
    strips = rendered.images["tokens"]
    # padding is not drawn: the strips are those of the real tokens alone
    real = [["[CLS]", "awful", "[SEP]"], ["[CLS]", "the", "film", "great", "[SEP]"]]
    cut = torch.zeros(2, 5)
    cut[0, :3], cut[1] = scores[0, :3] * 4, scores[1] * 4
    expected = token_strips([r + [""] * (5 - len(r)) for r in real], cut, True, "ig", valid=valid)
    torch.testing.assert_close(strips, expected)
    assert not rendered.figures
    assert not view.fits(torch.zeros(2, 4))


def test_tokens_without_padding_are_rendered_as_before():
    view = choose_view(torch.tensor([[3, 4]]), captions=["label 1"])
    text = view.render(torch.tensor([[0.5, 1.0]]), signed=True, title="ig").texts["top_tokens"]
    assert text == token_markdown([["3", "4"]], torch.tensor([[0.5, 1.0]]), 3, ["label 1"])


def test_float_sequences_are_strips_over_positions():
    view = choose_view(torch.zeros(1, 3, 4))
    assert view.texts == [["0", "1", "2"]] and view.fits(torch.zeros(1, 3, 4))


def test_several_inputs_get_one_view_each_under_their_names():
    image, table = torch.rand(2, 1, 8, 8), torch.rand(2, 3)
    view = choose_view((image, table), part_names=["image", "tabular"])
    attr = (torch.randn(2, 1, 8, 8), torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert view.fits(attr) and not view.fits(attr[0]) and not view.fits(attr[:1])
    assert view.summaries(attr)["tabular/importance/feature_0"] == 1.0
    rendered = view.render(attr, signed=True, title="ig")
    assert set(rendered.images) == {"image/heatmaps"}
    assert set(rendered.figures) == {"tabular/importance"} and set(rendered.texts) == {"tabular/top_features"}
    assert set(choose_view((image, table)).parts) == {"input_0", "input_1"}


def test_inputs_of_other_kinds_show_nothing():
    assert choose_view(torch.zeros(2, 2, 2, 2, 2)).render(torch.zeros(2, 2, 2, 2, 2), True, "x").images == {}


def test_label_captions():
    assert format_label(torch.tensor(2)) == "label 2"
    assert format_label(torch.tensor([1.0])) == "label 1"
    assert format_label(torch.tensor(0.7312)) == "label 0.731"
    assert format_label(torch.tensor([0.0, 1.0, 1.0])) == "labels [1, 2]"

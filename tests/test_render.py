"""Heatmaps: normalisation rule, colour maps, and the grid layout, checked pixel by pixel."""

import matplotlib
import pytest
import torch

from lightning_xai.render import attribution_grid, colorize, input_to_rgb, reduce_channels, robust_normalize
from lightning_xai.render.grid import attribution_cells


def test_an_outlier_does_not_wash_out_the_map():
    maps = torch.arange(100.0).view(1, 10, 10) / 99
    maps[0, 9, 9] = 1e6
    normalised = robust_normalize(maps, signed=False)
    assert normalised[0, 9, 9] == 1.0
    assert normalised.flatten()[:99].max() > 0.95  # a plain max-scaling would leave them below 1e-6
    spot = torch.ones(1, 4, 4)
    spot[0, 1, 2] = 5.0  # one spot above a flat floor: the percentile is 0, the maximum scales it
    assert robust_normalize(spot, signed=False).flatten().tolist() == [0.0] * 6 + [1.0] + [0.0] * 9


def test_signed_normalisation_keeps_zero_and_sign_per_sample():
    maps = torch.tensor([[[-4.0, 0.0, 2.0, 4.0]], [[0.5, -0.25, 0.0, 0.0]]])
    normalised = robust_normalize(maps, signed=True, percentile=100)
    torch.testing.assert_close(normalised, torch.tensor([[[-1.0, 0.0, 0.5, 1.0]], [[1.0, -0.5, 0.0, 0.0]]]))


def test_unsigned_normalisation_clamps_negatives_and_zero_maps_stay_zero():
    normalised = robust_normalize(torch.tensor([[[-1.0, 2.0]], [[0.0, 0.0]]]), signed=False, percentile=100)
    torch.testing.assert_close(normalised, torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]]]))
    assert torch.isfinite(robust_normalize(torch.zeros(2, 3, 3), signed=True)).all()


def test_unsigned_maps_with_a_large_floor_are_shown_above_it():
    rollout = torch.tensor([[[10.0, 10.0, 10.5, 11.0]], [[3.0, 3.0, 3.0, 3.0]]])  # a baseline share everywhere
    normalised = robust_normalize(rollout, signed=False, percentile=100)
    torch.testing.assert_close(normalised, torch.tensor([[[0.0, 0.0, 0.5, 1.0]], [[0.0, 0.0, 0.0, 0.0]]]))


def test_normalisation_is_the_same_rule_at_every_scale():
    maps = torch.randn(3, 8, 8)
    torch.testing.assert_close(robust_normalize(maps, True), robust_normalize(maps * 1000, True))


def test_colour_maps():
    diverging = torch.tensor(matplotlib.colormaps["RdBu_r"]([0.0, 0.5, 1.0])[:, :3], dtype=torch.float32)
    rgb = colorize(torch.tensor([[[-1.0, 0.0, 1.0]]]), signed=True)
    assert rgb.shape == (1, 3, 1, 3)
    torch.testing.assert_close(rgb[0, :, 0, 0], diverging[0])
    torch.testing.assert_close(rgb[0, :, 0, 2], diverging[2])
    assert (rgb[0, :, 0, 1] > 0.9).all()  # zero is near white
    inferno = torch.tensor(matplotlib.colormaps["inferno"]([0.0, 1.0])[:, :3], dtype=torch.float32)
    torch.testing.assert_close(colorize(torch.tensor([[[0.0, 1.0]]]), signed=False)[0, :, 0].T, inferno)
    with pytest.raises(ValueError, match="unknown colour map 'nope'"):
        colorize(torch.zeros(1, 1, 1), signed=True, cmap="nope")


def test_reduce_channels():
    attr = torch.tensor([[[[1.0]], [[-3.0]]]])
    assert reduce_channels(attr, signed=True).item() == -2.0
    assert reduce_channels(attr, signed=False).item() == 4.0
    with pytest.raises(ValueError, match=r"\[B, C, H, W\] or \[B, H, W\]; got shape \[2\]"):
        reduce_channels(torch.zeros(2), signed=True)


def test_grid_layout_cell_by_cell():
    inputs = torch.rand(3, 1, 8, 8)
    attr = torch.randn(3, 1, 8, 8)
    grid = attribution_cells(inputs, attr, signed=True, min_cell_size=16, padding=1)
    cell = 16 + 2
    assert grid.shape == (3, 3 * cell, 3 * cell)
    assert grid.min() >= 0 and grid.max() <= 1
    expected_input = input_to_rgb(inputs)[1].repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    torch.testing.assert_close(grid[:, cell + 1 : cell + 17, 1:17], expected_input)
    heat = colorize(robust_normalize(attr[:, 0], signed=True), signed=True)[2]
    torch.testing.assert_close(grid[:, 2 * cell + 1 : 2 * cell + 17 : 2, cell + 1 : cell + 17 : 2], heat)
    assert (grid[:, 0, :] == 1.0).all()  # white padding
    torch.testing.assert_close(attribution_grid(inputs, attr, signed=True), attribution_grid(inputs, attr, signed=True))


def test_the_grid_has_headers_captions_and_a_colour_bar_around_the_cells():
    inputs, attr = torch.rand(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    cells = attribution_cells(inputs, attr, signed=True)
    plain = attribution_grid(inputs, attr, signed=True, title="ig")
    captioned = attribution_grid(inputs, attr, signed=True, title="ig", captions=["label 1", "label 0 · pred 1"],
                                 wrong=[False, True])  # fmt: skip
    rows = cells.shape[1]
    header = next(top for top in range(64) if torch.allclose(plain[:, top : top + rows], cells, atol=1 / 255))
    assert header >= 13  # a header line of text above the cells, which are unchanged
    assert plain.shape[2] == cells.shape[2] and captioned.shape[2] > cells.shape[2]  # captions get a column
    assert (plain[:, :header] < 0.5).any()  # header text is drawn
    left = captioned.shape[2] - cells.shape[2]
    rows = captioned[:, header : header + cells.shape[1], :left]
    second = rows[:, cells.shape[1] // 2 :]
    assert (second[0] > 0.6).logical_and(second[1] < 0.4).any()  # the wrong prediction's caption is red
    assert not (rows[:, : cells.shape[1] // 2][0] - rows[:, : cells.shape[1] // 2][1] > 0.3).any()  # the other black
    bar = plain[:, header + cells.shape[1] :, cells.shape[2] // 3 : 2 * cells.shape[2] // 3]
    assert (bar[2] - bar[0] > 0.3).any() and (bar[0] - bar[2] > 0.3).any()  # blue and red in the colour bar
    with pytest.raises(ValueError, match=r"captions must have one entry per sample \(2\); got 1"):
        attribution_grid(inputs, attr, signed=True, captions=["one"])


def test_overlays_stay_readable_on_black_inputs():
    cells = attribution_cells(torch.zeros(1, 1, 8, 8), -torch.ones(1, 1, 8, 8), signed=True, min_cell_size=8)
    overlay_cell = cells[:, 2:10, 2 * 12 + 2 : 2 * 12 + 10]  # negative evidence over a black image
    assert overlay_cell[2].min() > 0.3 and (overlay_cell[2] - overlay_cell[0]).min() > 0.1  # visibly blue


def test_layer_maps_are_resized_for_display():
    grid = attribution_cells(torch.rand(2, 3, 16, 16), torch.rand(2, 1, 4, 4), signed=False)
    assert grid.shape == (3, 2 * 100, 3 * 100)
    with pytest.raises(ValueError, match="maps of another spatial size must have one channel"):
        attribution_grid(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 4, 4), signed=False)
    with pytest.raises(ValueError, match=r"image inputs must be \[B, C, H, W\]; got shape \[2, 16\]"):
        attribution_grid(torch.rand(2, 16), torch.rand(2, 16), signed=False)


def test_attention_grids_of_short_sequences_get_token_axes():
    from lightning_xai.render.attention import MAX_AXIS_TOKENS, attention_grid

    tokens = ["[CLS]", "the", "movie", "was", "awful", "[SEP]"]
    maps = [torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    plain, axes = attention_grid(maps), attention_grid(maps, tokens=tokens)
    # the tiles are the same pixels, moved right and with a band of key labels below them
    band_w = axes.shape[2] - plain.shape[2]
    assert band_w > 20 and axes.shape[1] - plain.shape[1] == band_w
    tiles = plain[:, 20 : plain.shape[1] - 20, 64:]
    torch.testing.assert_close(axes[:, 20 : 20 + tiles.shape[1], 64 + band_w :], tiles)
    side = tiles.shape[1] // 2  # one tile with padding; each token's cell is at least 14 px
    assert (side - 4) // 6 >= 14
    ink = axes.mean(dim=0) < 0.5  # dark text pixels
    cell = (side - 4) // 6
    for q in range(6):  # a query label beside every token row of both layer rows, none beside the padding
        for layer in range(2):
            top = 20 + layer * side + 2 + q * cell
            assert ink[top : top + cell, 64 : 64 + band_w].any(), (layer, q)
    below = 20 + tiles.shape[1]
    for head in range(2):
        for k in range(6):  # a key label under every token column of both heads
            left = 64 + band_w + head * side + 2 + k * cell
            assert ink[below : below + band_w, left : left + cell].any(), (head, k)
    # long sequences, cross attention or a token count that does not match: no axes
    long = [torch.rand(1, MAX_AXIS_TOKENS + 1, MAX_AXIS_TOKENS + 1)]
    assert attention_grid(long, tokens=["a"] * (MAX_AXIS_TOKENS + 1)).shape == attention_grid(long).shape
    assert attention_grid(maps, tokens=tokens[:5]).shape == plain.shape


def test_the_monitor_gives_the_attention_grid_the_first_samples_real_tokens():
    from lightning_xai.callbacks._explained import Explained
    from lightning_xai.callbacks._pictures import _first_tokens
    from lightning_xai.render import TokenView

    view = TokenView([["a", "b", "<pad>"], ["c", "d", "e"]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    assert _first_tokens(view, Explained(torch.nn.Identity(), torch.zeros(2, 3).long(), {}, valid=valid)) == ["a", "b"]
    assert _first_tokens(view, Explained(torch.nn.Identity(), torch.zeros(2, 3).long(), {})) == ["a", "b", "<pad>"]

"""Heatmaps: normalisation rule, colour maps, and the grid layout, checked pixel by pixel."""

import matplotlib
import pytest
import torch

from lightning_xai.render import attribution_grid, colorize, input_to_rgb, reduce_channels, robust_normalize


def test_an_outlier_does_not_wash_out_the_map():
    maps = torch.ones(1, 10, 10)
    maps[0, 0, 0] = 1e6
    normalised = robust_normalize(maps, signed=False)
    assert normalised[0, 0, 0] == 1.0
    assert torch.allclose(normalised.flatten()[1:], torch.ones(99))  # a plain max-scaling would give 1e-6


def test_signed_normalisation_keeps_zero_and_sign_per_sample():
    maps = torch.tensor([[[-4.0, 0.0, 2.0, 4.0]], [[0.5, -0.25, 0.0, 0.0]]])
    normalised = robust_normalize(maps, signed=True, percentile=100)
    torch.testing.assert_close(normalised, torch.tensor([[[-1.0, 0.0, 0.5, 1.0]], [[1.0, -0.5, 0.0, 0.0]]]))


def test_unsigned_normalisation_clamps_negatives_and_zero_maps_stay_zero():
    normalised = robust_normalize(torch.tensor([[[-1.0, 2.0]], [[0.0, 0.0]]]), signed=False, percentile=100)
    torch.testing.assert_close(normalised, torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]]]))
    assert torch.isfinite(robust_normalize(torch.zeros(2, 3, 3), signed=True)).all()


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
    grid = attribution_grid(inputs, attr, signed=True, min_cell_size=16, padding=1)
    cell = 16 + 2
    assert grid.shape == (3, 3 * cell, 3 * cell)
    assert grid.min() >= 0 and grid.max() <= 1
    expected_input = input_to_rgb(inputs)[1].repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    torch.testing.assert_close(grid[:, cell + 1 : cell + 17, 1:17], expected_input)
    heat = colorize(robust_normalize(attr[:, 0], signed=True), signed=True)[2]
    torch.testing.assert_close(grid[:, 2 * cell + 1 : 2 * cell + 17 : 2, cell + 1 : cell + 17 : 2], heat)
    assert (grid[:, 0, :] == 1.0).all()  # white padding
    torch.testing.assert_close(attribution_grid(inputs, attr, signed=True), attribution_grid(inputs, attr, signed=True))


def test_layer_maps_are_resized_for_display():
    grid = attribution_grid(torch.rand(2, 3, 16, 16), torch.rand(2, 1, 4, 4), signed=False)
    assert grid.shape == (3, 2 * 68, 3 * 68)
    with pytest.raises(ValueError, match="maps of another spatial size must have one channel"):
        attribution_grid(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 4, 4), signed=False)
    with pytest.raises(ValueError, match=r"image inputs must be \[B, C, H, W\]; got shape \[2, 16\]"):
        attribution_grid(torch.rand(2, 16), torch.rand(2, 16), signed=False)

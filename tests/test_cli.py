"""The command line and the example, run for real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_events

from lightning_xai.cli import main

ROOT = Path(__file__).resolve().parents[1]


def small_run(tmp_path: Path, config: str) -> list[str]:
    return [
        "fit",
        "--config",
        str(ROOT / "configs" / config),
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]


@pytest.mark.slow
def test_fit_from_the_synthetic_config(tmp_path):
    main([*small_run(tmp_path, "synthetic.yaml"), "--data.init_args.num_train=128", "--data.init_args.num_val=32"])
    events = read_events(tmp_path / "runs" / "synthetic")
    assert {"xai/ig/heatmaps", "xai/saliency/heatmaps", "xai/gradcam/heatmaps"} <= set(events.Tags()["images"])
    assert {"xai/ig/completeness", "xai/time_s", "val_loss"} <= set(events.Tags()["scalars"])


@pytest.mark.slow
def test_fit_from_the_digits_config(tmp_path):
    main(small_run(tmp_path, "digits.yaml"))
    events = read_events(tmp_path / "runs" / "digits")
    assert len(events.Images("xai/gradcam/heatmaps")) == 1


def test_config_mistakes_are_reported_with_the_valid_choices(tmp_path, capsys):
    args = [*small_run(tmp_path, "digits.yaml"), "--print_config"]
    wrong = "trainer: {callbacks: [{class_path: lightning_xai.AttributionMonitor, init_args: {explainers: {ig: {class_path: lightning_xai.attribution.IntegratedGradients, init_args: {method: simpson}}}}}]}"  # noqa: E501
    config = tmp_path / "wrong.yaml"
    config.write_text(wrong)
    with pytest.raises(SystemExit):
        main([*args, "--config", str(config)])
    err = capsys.readouterr().err
    assert "method" in err and "simpson" in err and "gausslegendre" in err


def test_the_installed_command_prints_a_checked_config():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_xai",
            "fit",
            "--config",
            str(ROOT / "configs" / "digits.yaml"),
            "--print_config",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert "class_path: lightning_xai.attribution.GradCAM" in result.stdout
    assert "layer: features.3" in result.stdout


@pytest.mark.slow
def test_quickstart_example_runs(tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import quickstart
    finally:
        sys.path.remove(str(ROOT / "examples"))
    trainer = quickstart.main(max_epochs=1, save_dir=str(tmp_path))
    assert trainer.callback_metrics["val_acc"] > 0.5
    assert len(read_events(tmp_path / "quickstart").Images("xai/ig/heatmaps")) == 1

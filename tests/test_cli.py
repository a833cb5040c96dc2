"""The command line and the example, run for real."""

from __future__ import annotations

import re
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


def test_fit_from_the_breast_cancer_config(tmp_path):
    main([*small_run(tmp_path, "breast_cancer.yaml"), "--trainer.max_epochs=2"])  # the monitor runs every 2nd epoch
    events = read_events(tmp_path / "runs" / "breast_cancer")
    scalars = set(events.Tags()["scalars"])
    for explainer in ("ig", "kernel_shap", "lime", "permutation"):
        assert f"xai/{explainer}/importance/worst_concave_points" in scalars
        assert f"xai/{explainer}/importance" in events.Tags()["images"]
        assert f"xai/{explainer}/top_features/text_summary" in events.Tags()["tensors"]
    assert "xai/ig/faithfulness_correlation" in scalars


def test_fit_from_the_tokens_config(tmp_path):
    main([*small_run(tmp_path, "tokens.yaml"), "--data.init_args.num_train=256", "--data.init_args.num_val=32"])
    events = read_events(tmp_path / "runs" / "tokens")
    for explainer in ("ig", "ixg", "rollout"):
        assert f"xai/{explainer}/pointing_game" in events.Tags()["scalars"]
        assert f"xai/{explainer}/tokens" in events.Tags()["images"]
        assert f"xai/{explainer}/top_tokens/text_summary" in events.Tags()["tensors"]


@pytest.mark.slow
def test_fit_from_the_vit_config(tmp_path):
    small = ["--data.init_args.num_train=128", "--data.init_args.num_val=32", "--trainer.max_epochs=2"]
    main([*small_run(tmp_path, "vit.yaml"), *small])
    events = read_events(tmp_path / "runs" / "vit")
    assert {"xai/rollout/heatmaps", "xai/rollout/attention_maps", "xai/ig/heatmaps"} <= set(events.Tags()["images"])
    assert {"xai/rollout/pointing_game", "xai/ig/relevance_mass_accuracy"} <= set(events.Tags()["scalars"])


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


ALL_EXPLAINERS = """
trainer:
  callbacks:
    - class_path: lightning_xai.AttributionMonitor
      init_args:
        num_probe: 4
        explainers:
          saliency: {class_path: lightning_xai.attribution.Saliency}
          ixg: {class_path: lightning_xai.attribution.InputXGradient}
          ig: {class_path: lightning_xai.attribution.IntegratedGradients, init_args: {steps: 4, method: riemann_middle}}
          gradcam: {class_path: lightning_xai.attribution.GradCAM, init_args: {layer: features.3, upsample: nearest}}
          smoothgrad:
            class_path: lightning_xai.attribution.SmoothGrad
            init_args:
              samples: 2
              variant: vargrad
              base: {class_path: lightning_xai.attribution.InputXGradient}
          gradient_shap: {class_path: lightning_xai.attribution.GradientShap, init_args: {samples: 2, baselines: 0.5}}
          occlusion: {class_path: lightning_xai.attribution.Occlusion, init_args: {window: [8, 8], stride: [4, 4]}}
          ablation: {class_path: lightning_xai.attribution.FeatureAblation, init_args: {feature_mask: 8}}
          kernel_shap: {class_path: lightning_xai.attribution.KernelShap, init_args: {samples: 8, feature_mask: [8,16]}}
          lime: {class_path: lightning_xai.attribution.Lime, init_args: {samples: 8, feature_mask: 8, alpha: 0.5}}
          gradcam_pp: {class_path: lightning_xai.attribution.GradCAMPlusPlus, init_args: {layer: features.3}}
          xgradcam: {class_path: lightning_xai.attribution.XGradCAM, init_args: {layer: features.3}}
          layercam: {class_path: lightning_xai.attribution.LayerCAM, init_args: {layer: features.3}}
          hirescam: {class_path: lightning_xai.attribution.HiResCAM, init_args: {layer: features.3}}
          eigencam: {class_path: lightning_xai.attribution.EigenCAM, init_args: {layer: features.3}}
          scorecam: {class_path: lightning_xai.attribution.ScoreCAM, init_args: {layer: features.3}}
          ablationcam: {class_path: lightning_xai.attribution.AblationCAM, init_args: {layer: features.3}}
          deeplift: {class_path: lightning_xai.attribution.DeepLift, init_args: {baseline: 0.0}}
          guided: {class_path: lightning_xai.attribution.GuidedBackprop}
          deconv: {class_path: lightning_xai.attribution.Deconvolution}
          guided_gradcam: {class_path: lightning_xai.attribution.GuidedGradCAM, init_args: {layer: features.3}}
          rise: {class_path: lightning_xai.attribution.RISE, init_args: {masks: 16, cell: 4}}
"""
# Registered explainers the YAML above cannot show on an image CNN, and why.
NOT_IN_YAML = {
    "attention_rollout": "needs attention layers",
    "deeplift_shap": "takes a tensor of reference samples, built in Python",
    "layer_conductance": "attributes a layer, not the input; configured through decision_paths",
    "permutation_importance": "permutes table columns across samples",
}


def test_every_registered_explainer_is_built_from_yaml_or_named_as_impossible():
    from lightning_xai.attribution.registry import EXPLAINERS

    built = set(re.findall(r"lightning_xai\.attribution\.(\w+)", ALL_EXPLAINERS))
    registered = {cls.__name__ for name, cls in EXPLAINERS.items() if name not in NOT_IN_YAML}
    assert registered - built == set()


@pytest.mark.slow
def test_every_explainer_is_configurable_from_yaml(tmp_path):
    config = tmp_path / "all.yaml"
    config.write_text(ALL_EXPLAINERS)
    main(
        [
            *small_run(tmp_path, "synthetic.yaml"),
            "--config",
            str(config),
            "--data.init_args.num_train=64",
            "--data.init_args.num_val=16",
        ]
    )
    images = set(read_events(tmp_path / "runs" / "synthetic").Tags()["images"])
    names = re.findall(r"^ {10}(\w+):", ALL_EXPLAINERS, flags=re.M)
    assert len(names) == 22 and {f"xai/{name}/heatmaps" for name in names} <= images


@pytest.mark.slow
def test_the_cams_config_scores_every_method_beside_the_baselines(tmp_path):
    text = (ROOT / "configs" / "cams.yaml").read_text()
    config = tmp_path / "cams.yaml"  # the shipped config on a smaller probe, with fewer RISE masks
    config.write_text(text.replace("num_probe: 16", "num_probe: 4").replace("masks: 500", "masks: 32"))
    args = [*small_run(tmp_path, "cams.yaml"), "--data.init_args.num_train=64", "--data.init_args.num_val=16"]
    main([arg if not arg.endswith("cams.yaml") else str(config) for arg in args])
    events = read_events(tmp_path / "runs" / "cams")
    scalars = set(events.Tags()["scalars"])
    methods = re.findall(r"^ {10}(\w+): \{class_path", text, flags=re.M)
    assert len(methods) == 12
    for name in [*methods, "baseline_random", "baseline_edges"]:
        assert {f"xai/{name}/deletion_auc", f"xai/{name}/pointing_game"} <= scalars, name
    assert not any("randomization" in t for t in scalars)  # every 2nd epoch: not in this one-epoch run


@pytest.mark.slow
def test_the_noisy_digits_config_ranks_training_samples_by_self_influence(tmp_path):
    main(small_run(tmp_path, "noisy_digits.yaml"))
    events = read_events(tmp_path / "runs" / "noisy_digits")
    assert {"xai/influence/self_top_mass", "xai/influence/steps"} <= set(events.Tags()["scalars"])
    assert events.Scalars("xai/influence/steps")[-1].value > 0
    assert "xai/influence/suspects" in events.Tags()["images"]
    rows = next((tmp_path / "runs" / "noisy_digits").rglob("influence.csv")).read_text().splitlines()
    assert rows[0].startswith("index,label,steps,self_influence") and len(rows) > 1000  # one row per sample seen


@pytest.mark.slow
def test_the_gated_config_runs(tmp_path):
    main([*small_run(tmp_path, "gated.yaml"), "--data.init_args.num_train=128", "--data.init_args.num_val=32"])
    events = read_events(tmp_path / "runs" / "gated")
    assert {"xai/gate/passed", "xai/ig/deletion_auc", "xai/gradcam/pointing_game"} <= set(events.Tags()["scalars"])
    assert "xai/ig/curves" in events.Tags()["images"]


def test_explain_a_saved_checkpoint_writes_a_new_version_with_the_training_probe(tmp_path):
    fit_args = [*small_run(tmp_path, "synthetic.yaml"), "--data.init_args.num_train=128", "--data.init_args.num_val=32"]
    main(fit_args)
    checkpoint = next((tmp_path / "runs" / "synthetic" / "version_0" / "checkpoints").glob("*.ckpt"))
    main(["explain", *fit_args[1:], f"--ckpt_path={checkpoint}"])
    version = tmp_path / "runs" / "synthetic" / "version_1"
    events = read_events(version)
    assert {"xai/ig/heatmaps", "xai/saliency/heatmaps", "xai/gradcam/heatmaps"} <= set(events.Tags()["images"])
    assert {"xai/ig/completeness", "val_acc"} <= set(events.Tags()["scalars"])
    assert (version / "projector_config.pbtxt").is_file()
    # The monitor's probe came back from the checkpoint: the same samples as in training, in the same order.
    trained = read_events(tmp_path / "runs" / "synthetic" / "version_0").Images("xai/ig/heatmaps")[-1]
    explained = events.Images("xai/ig/heatmaps")[-1]
    assert trained.encoded_image_string == explained.encoded_image_string


def test_explain_names_what_is_missing(tmp_path, capsys):
    args = [*small_run(tmp_path, "digits.yaml")[1:], f"--ckpt_path={tmp_path / 'missing.ckpt'}"]
    with pytest.raises(FileNotFoundError, match="missing.ckpt' does not exist"):
        main(["explain", *args])
    with pytest.raises(ValueError, match="trainer.callbacks has no AttributionMonitor"):
        main(["explain", *args, "--trainer.callbacks=[]"])

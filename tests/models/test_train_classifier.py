"""Baseline classifier training: learns the blob task, saves loadable artefacts, hooks apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medxgan.cohort.reader import Cohort
from medxgan.classifiers import load_classifier
from medxgan.classifiers.train import auroc, train_classifier
from medxgan.config.models import ClassifierTrainConfig
from medxgan.storage import Store


def test_auroc_matches_hand_counts():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert auroc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5
    assert np.isnan(auroc(np.array([0.2, 0.3]), np.array([1, 1])))


def test_trains_saves_and_reloads(blob_cohort, tmp_path):
    out = str(tmp_path / "clf")
    cfg = ClassifierTrainConfig(epochs=6, batch=16, max_lr=1e-2, seed=0, device="cpu")
    epochs = []
    metrics = train_classifier(blob_cohort, out, cfg, progress=lambda e, m: epochs.append(e))
    assert epochs == list(range(1, 7))
    assert metrics["test"]["auroc"] >= 0.9 and metrics["test"]["n"] > 0
    store = Store(out)
    for key in ("classifier.pt", "classifier.ts", "metrics.json", "spec.yaml",
                "spec_torchscript.yaml"):
        assert store.exists(key), key
    f = load_classifier(f"{out}/spec.yaml")
    f_ts = load_classifier(f"{out}/spec_torchscript.yaml")
    assert f.sha256 == metrics["sha256"] and f.spec.input_size == 32
    batch = next(Cohort(blob_cohort).iter_batches(1000, split="test"))
    p = f.prob(batch.images)
    torch.testing.assert_close(p, f_ts.prob(batch.images), atol=1e-6, rtol=0)
    acc = float(((p >= f.threshold).long() == batch.labels).float().mean())
    assert acc == pytest.approx(metrics["test"]["accuracy"])          # same model, same numbers
    assert auroc(p.numpy(), batch.labels.numpy()) == pytest.approx(metrics["test"]["auroc"])


def test_image_transform_hook_is_applied(blob_cohort, tmp_path):
    cfg = ClassifierTrainConfig(epochs=1, batch=16, seed=0, device="cpu")
    metrics = train_classifier(blob_cohort, str(tmp_path / "c"), cfg,
                               image_transform=lambda x: torch.full_like(x, 0.5))
    assert metrics["test_transformed"]["auroc"] == 0.5                # constant input: no signal
    with pytest.raises(ValueError, match="either"):
        train_classifier(blob_cohort, str(tmp_path / "d"),
                         cfg.model_copy(update={"remove_tag": True}),
                         image_transform=lambda x: x)


def test_remove_tag_option_uses_the_phantom_helper(blob_cohort, tmp_path):
    cfg = ClassifierTrainConfig(epochs=1, batch=16, seed=0, device="cpu", remove_tag=True)
    metrics = train_classifier(blob_cohort, str(tmp_path / "c"), cfg)
    assert metrics["config"]["remove_tag"] is True and "test_transformed" in metrics


def test_training_runs_channels_last_on_the_cpu_and_saves_the_usual_layout(blob_cohort, tmp_path):
    """``medxgan.cpu.fast_training``: the second convolution (the first with several input
    channels) sees channels-last activations while training on the CPU (NCHW with the setting off); the saved weights are contiguous either
    way, and both settings learn the task."""
    from medxgan.classifiers import small_cnn
    from medxgan.cpu import cpu_execution

    seen, hooks = [], []
    real = small_cnn.build_model

    def recording(*a, **k):
        m = real(*a, **k)
        conv = next(c for c in m.modules()
                    if isinstance(c, torch.nn.Conv2d) and c.in_channels > 1)
        hooks.append(conv.register_forward_hook(                      # channels innermost?
            lambda mod, inp, out: seen.append(mod.training and inp[0].stride(1) == 1)))
        return m

    def drop_hooks(epoch, _metrics):            # TorchScript does not script Python hooks
        while hooks:
            hooks.pop().remove()

    cfg = ClassifierTrainConfig(epochs=2, batch=16, max_lr=1e-2, seed=0, device="cpu")
    import medxgan.classifiers.train as train_mod
    train_mod.build_model, results = recording, {}
    try:
        for on in (True, False):
            seen.clear()
            with cpu_execution(channels_last=on):
                results[on] = train_classifier(blob_cohort, str(tmp_path / f"c{on}"), cfg,
                                               progress=drop_hooks)
            assert any(seen) is on                                    # NHWC input when on
    finally:
        train_mod.build_model = real
    for on in (True, False):
        state = torch.load(str(tmp_path / f"c{on}" / "classifier.pt"), weights_only=True)
        assert all(t.is_contiguous() for t in state.values())
        assert results[on]["val"]["auroc"] >= 0.9

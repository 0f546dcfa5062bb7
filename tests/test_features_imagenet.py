"""`extractor: imagenet` (issue 27): an ImageNet-trained backbone's pooled features for selection, the matcher,
check-overlap and the audit, from the installed weights packages (`retinaug[imagenet]`), offline, checked up front."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from conftest import make_dataset
from pipeline_helpers import TINY
from safetensors.torch import load_file
from test_checks import _text
from test_imagenet_weights import empty_hub_cache  # noqa: F401 (autouse: only the installed packages serve weights)
from typer.testing import CliRunner

from retinaug.cache import image_cache
from retinaug.classify.imagenet import SOURCES, WeightsPackage, imagenet_weights
from retinaug.cli import app
from retinaug.errors import RetinaugError
from retinaug.features import ImageNetExtractor, get_extractor
from retinaug.manifest import save_manifest
from retinaug.quality import AuditConfig, audit
from retinaug.select import SelectConfig, select

LITE0, LITE1 = "tf_efficientnet_lite0", "tf_efficientnet_lite1"
EXTRA = 'pip install "retinaug[imagenet]"'


@pytest.fixture(scope="module")
def few(tmp_path_factory) -> pd.DataFrame:
    """6 small images (3 per class): the extractor upsamples them to its 224 px."""
    return make_dataset(
        tmp_path_factory.mktemp("few") / "data", classes=("G", "C"), patients_per_class=2, size=16
    ).iloc[:6]


def test_features_are_lite0s_pooled_penultimate_layer(few):
    ext = get_extractor("imagenet")
    assert isinstance(ext, ImageNetExtractor) and ext.name == f"imagenet:{LITE0}" and ext.size == 224
    feats = ext(few)
    assert feats.shape == (len(few), 1280) and feats.dtype == np.float32 and np.isfinite(feats).all()
    np.testing.assert_array_equal(ext(few), feats)  # deterministic
    # by hand: timm's lite0 without its classifier, the converted package weights, [-1, 1] inputs (its TF training's)
    model = timm.create_model(LITE0, num_classes=0).eval()
    state = load_file(imagenet_weights(LITE0))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")}, strict=True)
    x = torch.from_numpy(image_cache(few, 224).rows(few).copy()).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        expected = model((x - 0.5) / 0.5).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(feats).max() > 0.1  # not a zero map


def test_other_backbones_need_their_weights(few, monkeypatch):
    if SOURCES[LITE1].installed():
        ext = get_extractor(f"imagenet:{LITE1}")
        assert ext.name == f"imagenet:{LITE1}" and ext.size == 240  # lite1's own input size
        assert ext(few.iloc[:2]).shape == (2, 1280)
    monkeypatch.setattr(WeightsPackage, "installed", lambda self: False)
    with pytest.raises(
        RetinaugError, match=rf"imagenet:{LITE1} has no ImageNet weights.*not installed: {re.escape(EXTRA)}"
    ):
        get_extractor(f"imagenet:{LITE1}")
    with pytest.raises(
        RetinaugError,
        match=rf"imagenet:resnet10t has no ImageNet weights.*exist for {LITE0}, {LITE1}, tf_efficientnet_lite2",
    ):
        get_extractor("imagenet:resnet10t")  # a timm model, but no local source of its ImageNet weights
    with pytest.raises(RetinaugError, match="'nonexistent_net' is not a timm model name; use imagenet"):
        get_extractor("imagenet:nonexistent_net")


@pytest.mark.parametrize(
    "setting,said",
    [
        ("quality.extractor=imagenet", None),
        (f"selection.extractor=imagenet:{LITE0}", None),
        (
            "quality.extractor=imagenet:nonexistent_net",
            "quality: extractor imagenet:nonexistent_net: 'nonexistent_net' is not a timm model name",
        ),
        (
            "selection.extractor=imagenet:resnet10t",
            "selection: extractor imagenet:resnet10t has no ImageNet weights on this machine",
        ),
    ],
)
def test_up_front_checks(tmp_path, setting, said):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    res = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "run"), "--dry-run", "--set", setting])
    if said is None:
        assert res.exit_code == 0, res.output
    else:
        assert res.exit_code == 1 and said in _text(res.output) and "Traceback" not in res.output, res.output


def test_audit_and_select_record_the_extractor(tmp_path):
    data = make_dataset(tmp_path / "data", classes=("G", "C"), patients_per_class=4, size=16)
    rows = []
    for i, (path, label) in enumerate(
        data.loc[data["split"] == "train", ["path", "label"]].iloc[::2].itertuples(index=False)
    ):
        copy = tmp_path / "synthetic" / f"copy{i}.png"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy)
        rows.append(
            dict(
                path=str(copy),
                label=label,
                patient_id=f"syn{i}",
                eye="unknown",
                split="train",
                origin="synthetic",
                source="copy",
            )
        )
    save_manifest(pd.DataFrame(rows), tmp_path / "synthetic")
    cfg = AuditConfig(extractor="imagenet", kid_subset_size=2, kid_subsets=2, min_test=1, ssim_size=16, cas=False)
    report = audit(tmp_path / "synthetic", data, cfg, tmp_path / "quality")
    assert report["extractor"] == f"imagenet:{LITE0}" and report["overall"]["fid"] is not None
    assert json.loads((tmp_path / "quality" / "audit.json").read_text())["extractor"] == f"imagenet:{LITE0}"

    select(data, SelectConfig(classes=["G"], keep=2, extractor="imagenet"), tmp_path / "selection")
    summary = json.loads((tmp_path / "selection" / "summary.json").read_text())
    assert summary["extractor"] == f"imagenet:{LITE0}" and summary["classes"]["G"]["kept"] == 2

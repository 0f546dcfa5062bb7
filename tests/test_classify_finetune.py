"""Fine-tuning knobs for pretrained backbones (issue 27): a slower backbone than head (`backbone_lr`), a frozen
backbone for the first epochs (`freeze_epochs`), the input statistics the weights expect, and hashes of runs made
before the knobs existed left unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_dataset
from safetensors.torch import load_file, save_file

from retinaug.classify import TrainConfig, fit
from retinaug.classify.models import create_model
from retinaug.classify.train import param_groups
from retinaug.stages import config_hash

TINY = dict(task="G,C,A", backbone="resnet10t", size=16, epochs=1, batch_size=8, augment=False, mixed_precision="no")


def _data(tmp_path):
    df = make_dataset(tmp_path / "data", classes=("G", "C", "A"), patients_per_class=4, size=16)
    return df[df["split"] == "train"], df[df["split"] == "val"]


def test_param_groups_split_backbone_and_head_once():
    cfg = TrainConfig(**TINY, backbone_lr=0.1, lr=1e-3)
    model = create_model(cfg, 3)
    groups = param_groups(model, cfg)
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])
    head = {id(p) for p in model.get_classifier().parameters()}
    assert {id(p) for p in groups[1]["params"]} == head
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert len(param_groups(model, TrainConfig(**TINY))) == 1  # the default: one group, as before


def test_frozen_epochs_leave_the_backbone_and_its_statistics_untouched(tmp_path):
    train, val = _data(tmp_path)
    start = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in create_model(TrainConfig(**TINY), 3).state_dict().items()}, str(start))
    fit(train, val, TrainConfig(**TINY, pretrained=str(start), freeze_epochs=1, lr=0.05), tmp_path / "frozen")
    fit(train, val, TrainConfig(**TINY, pretrained=str(start), lr=0.05), tmp_path / "free")
    before, frozen, free = (
        load_file(str(p)) for p in (start, tmp_path / "frozen/model.safetensors", tmp_path / "free/model.safetensors")
    )
    head = "fc."
    backbone = [k for k in before if not k.startswith(head) and "num_batches_tracked" not in k]
    assert all(torch.equal(frozen[k], before[k]) for k in backbone)  # weights and batch-norm running stats
    assert not all(torch.equal(free[k], before[k]) for k in backbone)
    assert not torch.equal(frozen["fc.weight"], before["fc.weight"])


def test_input_statistics_follow_the_backbone(tmp_path):
    train, val = _data(tmp_path)
    meta = fit(train, val, TrainConfig(**{**TINY, "backbone": "tf_efficientnet_lite0"}), tmp_path / "lite")
    assert meta["mean"] == meta["std"] == [0.5, 0.5, 0.5]  # its weights were trained on [-1, 1] pixels
    saved = json.loads((tmp_path / "lite" / "model.json").read_text())
    assert saved["mean"] == [0.5, 0.5, 0.5]
    meta = fit(train, val, TrainConfig(**TINY), tmp_path / "r10t")
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])


def test_new_settings_at_their_defaults_keep_earlier_hashes():
    dump = TrainConfig(**TINY).model_dump(mode="json")
    before = {
        k: v for k, v in dump.items() if k not in ("backbone_lr", "freeze_epochs")
    }  # what an earlier retinaug hashed
    assert config_hash(dump) == config_hash(before)
    assert config_hash(TrainConfig(**TINY, backbone_lr=0.1)) != config_hash(before)
    assert config_hash(TrainConfig(**TINY, freeze_epochs=2)) != config_hash(before)

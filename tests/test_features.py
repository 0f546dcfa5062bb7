"""Feature extractors: pixels (values, transforms), a CLIP model from a local folder, the labeler, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retinaug.cache import image_cache
from retinaug.errors import RetinaugError
from retinaug.features import (
    CLIPExtractor,
    LabelerExtractor,
    PixelExtractor,
    extract_features,
    get_extractor,
    l2_normalise,
)


def test_pixels_are_the_cached_images_scaled(tiny_data):
    feats = extract_features(tiny_data, "pixels", size=8)
    assert feats.shape == (len(tiny_data), 8 * 8 * 3) and feats.dtype == np.float32
    expected = image_cache(tiny_data, 8).rows(tiny_data).reshape(len(tiny_data), -1) / 255.0
    np.testing.assert_allclose(feats, expected, atol=1e-6)


def test_pixels_apply_the_rows_transform(tiny_data):
    rows = tiny_data.iloc[:2].assign(transform=["hflip", None])
    feats = PixelExtractor(8)(rows).reshape(2, 8, 8, 3)
    plain = PixelExtractor(8)(tiny_data.iloc[:1]).reshape(8, 8, 3)
    np.testing.assert_allclose(feats[0], plain[:, ::-1])


def test_l2_normalise_gives_unit_rows():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalise(x), [[0.6, 0.8], [0.0, 0.0]])


@pytest.fixture
def tiny_clip(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
        projection_dim=12,
    )
    folder = tmp_path / "tiny-clip"
    CLIPModel(config).save_pretrained(folder)
    return folder


def test_clip_folder_extractor_matches_the_model(tiny_data, tiny_clip):
    from transformers import CLIPModel
    from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    ext = get_extractor(str(tiny_clip))
    assert isinstance(ext, CLIPExtractor) and ext.size == 32
    feats = ext(tiny_data)
    assert feats.shape == (len(tiny_data), 12)
    np.testing.assert_allclose(ext(tiny_data), feats)  # deterministic
    # one image by hand: same normalisation, same projection output
    model = CLIPModel.from_pretrained(tiny_clip, local_files_only=True).eval()
    img = torch.from_numpy(image_cache(tiny_data, 32).rows(tiny_data.iloc[:1]).copy()).permute(0, 3, 1, 2).float() / 255
    x = (img - torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=x)
    expected = (out if isinstance(out, torch.Tensor) else out.pooler_output).numpy()
    np.testing.assert_allclose(feats[:1], expected, rtol=1e-4, atol=1e-5)


def test_labeler_extractor_uses_the_penultimate_layer(tiny_data, tmp_path):
    from retinaug.classify import TrainConfig, embed, fit, load_classifier

    train, val = tiny_data[tiny_data["split"] == "train"], tiny_data[tiny_data["split"] == "val"]
    cfg = TrainConfig(backbone="resnet10t", size=32, epochs=1, batch_size=16, task="G,C,A", augment=False)
    fit(train, val, cfg, tmp_path / "labeler")
    ext = get_extractor("auto", labeler=tmp_path / "labeler")
    assert isinstance(ext, LabelerExtractor)
    feats = ext(tiny_data)
    assert feats.shape[0] == len(tiny_data) and feats.ndim == 2
    np.testing.assert_allclose(feats, embed(load_classifier(tmp_path / "labeler"), tiny_data), rtol=1e-5)
    assert isinstance(get_extractor(tmp_path / "labeler"), LabelerExtractor)  # a labeler folder as PATH


def test_extractor_errors_say_what_to_do(tmp_path):
    with pytest.raises(RetinaugError, match="--labeler"):
        get_extractor("labeler")
    with pytest.raises(RetinaugError, match="unknown feature extractor"):
        get_extractor("inception")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(RetinaugError, match="neither a labeler folder"):
        get_extractor(tmp_path)
    assert get_extractor("auto").name == "pixels16"

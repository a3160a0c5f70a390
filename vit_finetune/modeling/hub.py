"""One loading path for hub ids and local folders, and saving in HF-native form where possible.

A hub id is first resolved to a local snapshot (`huggingface_hub.snapshot_download`); from there
on a hub model and a `save_pretrained` folder take the same path: `config.json` -> `ClassifierConfig`,
weights read with safetensors (pickles only through `torch.load(weights_only=True)`), strict
conversion, strict loading. Folders in the project's own format (`"format": "vit_finetune"` in
`config.json`, our keys in `model.safetensors`) load through the same function.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub import snapshot_download
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .checkpoint_check import check_config_fits_weights
from .config import COMPOSITE_MODEL_TYPES, ClassifierConfig, Pooling, default_labels
from .convert import HF_CLASSES, CheckpointError, hf_to_ours, ours_to_hf
from .model import ImageClassifier, build_uninitialised_classifier, param_group
from .positions import resize_pos_embed

logger = logging.getLogger(__name__)

PROJECT_FORMAT = "vit_finetune"
HUB_PATTERNS = ["config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json"]
PICKLE_FILES = ("pytorch_model.bin", "model.pt")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", *PICKLE_FILES)
HEAD_GROUPS = ("pool", "classifier")  # the parts that may be re-initialised when loading


def resolve_model_dir(name_or_dir: str | Path) -> Path:
    """A local folder as it is; a hub id downloaded (config, safetensors, preprocessor config) to the cache.

    Repositories without safetensors fall back to `pytorch_model.bin`, later read with `weights_only=True`.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; expected a model folder or a hub id")
    local = Path(snapshot_download(repo_id=str(name_or_dir), allow_patterns=HUB_PATTERNS))
    if not any(local.glob("*.safetensors")):
        local = Path(snapshot_download(repo_id=str(name_or_dir), allow_patterns=[*HUB_PATTERNS, *PICKLE_FILES]))
    return local


def read_config_json(model_dir: Path) -> dict[str, Any]:
    """The parsed `config.json` of a model folder; errors name the file."""
    path = model_dir / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read model config: {err}") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object of config fields, got {type(config).__name__}")
    return config


def find_weights_file(model_dir: Path) -> Path:
    """The weights file of a model folder, safetensors first."""
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise CheckpointError(f"{model_dir}: no weights file (looked for {', '.join(WEIGHT_FILES)})")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, a sharded safetensors index, or a pickle loaded `weights_only`."""
    if path.name.endswith(".safetensors.index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in _load_safetensors(path.parent / shard).items()}
    if path.name.endswith(".safetensors"):
        return _load_safetensors(path)
    return _load_pickle_weights_only(path)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: cannot read safetensors file: {err}") from err


def _load_pickle_weights_only(path: Path) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True passed explicitly, which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot override."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused, the pickle holds more than tensors: {err}") from None
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise CheckpointError(f"{path}: expected a flat dict of tensors")
    return state


def load_classifier(
    name_or_dir: str | Path,
    *,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    pooling: Pooling | None = None,
    image_size: int | None = None,
    encoder_overrides: Mapping[str, Any] | None = None,
) -> ImageClassifier:
    """Load an `ImageClassifier` from a hub id or a local folder (HF `save_pretrained` or project format).

    `id2label` / `num_labels` different from the checkpoint's labels, another pooling whose head has
    other shapes, or a checkpoint with no classifier, give a newly initialised head (logged). `pooling`
    overrides the checkpoint's (ViT `cls`, SigLIP `mean`, DINOv2 `cls_mean`, ...); `map` uses the
    checkpoint's SigLIP attention-pooling head when it has one. `image_size` resizes the stored
    position table once, bicubically, for another resolution. `encoder_overrides` sets EncoderConfig
    fields that no tensor depends on (dropout rates, `drop_path_rate`, `patch_dropout`).
    """
    model_dir = resolve_model_dir(name_or_dir)
    weights_file = find_weights_file(model_dir)
    stored, state = _read_checkpoint(model_dir, weights_file)
    encoder_fields = dict(encoder_overrides or {}) | ({"image_size": image_size} if image_size else {})
    config = _requested_config(stored, num_labels, id2label, pooling, encoder_fields)
    model = build_uninitialised_classifier(config)
    model.init_head()  # the parts in `new_groups` keep this init
    state, new_groups = _adapt_state(state, stored, model)
    _load_strict(model, state, new_groups, weights_file)
    return model.eval()


def _read_checkpoint(model_dir: Path, weights_file: Path) -> tuple[ClassifierConfig, dict[str, torch.Tensor]]:
    """The stored config and its weights in our key layout."""
    raw_config = read_config_json(model_dir)
    stored = _stored_config(raw_config, model_dir / "config.json")
    state = read_state_dict(weights_file)
    check_config_fits_weights(stored, state, model_dir / "config.json", weights_file)
    if raw_config.get("format") == PROJECT_FORMAT:
        return stored, state
    try:
        return stored, hf_to_ours(state, stored)
    except CheckpointError as err:
        raise CheckpointError(f"{weights_file}: {err}") from None


def _stored_config(raw_config: dict[str, Any], path: Path) -> ClassifierConfig:
    """`config.json` as a ClassifierConfig (project format or HF); errors name the file."""
    try:
        if raw_config.get("format") == PROJECT_FORMAT:
            return ClassifierConfig.from_dict({k: v for k, v in raw_config.items() if k != "format"})
        return ClassifierConfig.from_hf_config(raw_config)
    except (KeyError, TypeError, ValueError, StrictDataclassError) as err:  # the last: transformers' config classes
        raise CheckpointError(f"{path}: not a model config this project reads: {' '.join(str(err).split())}") from None


def _requested_config(
    stored: ClassifierConfig,
    num_labels: int | None,
    id2label: dict[int, str] | None,
    pooling: Pooling | None,
    encoder_fields: dict[str, Any],
) -> ClassifierConfig:
    """The stored config with the caller's labels, pooling, resolution and other encoder fields."""
    config = stored
    if id2label is not None:
        if num_labels is not None and num_labels != len(id2label):
            raise ValueError(f"num_labels={num_labels} but id2label has {len(id2label)} entries")
        config = config.with_labels(id2label)
    elif num_labels is not None and num_labels != stored.num_labels:
        config = config.with_labels(default_labels(num_labels))
    if pooling is not None:
        config = dataclasses.replace(config, pooling=pooling)
    if encoder_fields:
        config = dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, **encoder_fields))
    return config


def _adapt_state(
    state: dict[str, torch.Tensor], stored: ClassifierConfig, model: ImageClassifier
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Drop heads the requested model does not use, name the ones to initialise, resize positions."""
    config, own = model.config, model.state_dict()
    keep = {"backbone"}
    if config.id2label == stored.id2label and _group_shapes(state, "classifier") == _group_shapes(own, "classifier"):
        keep.add("classifier")
    if config.pooling == "map" and "pool.probe" in state:
        keep.add("pool")
    _log_head_changes({param_group(k) for k in state} - keep, set(HEAD_GROUPS) - keep, stored, config)
    state = {k: v for k, v in state.items() if param_group(k) in keep}
    return _resize_positions(state, stored, config), set(HEAD_GROUPS) - keep


def _group_shapes(state: Mapping[str, torch.Tensor], group: str) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in state.items() if param_group(k) == group}


def _log_head_changes(dropped: set[str], new: set[str], stored: ClassifierConfig, config: ClassifierConfig) -> None:
    if "pool" in dropped:
        logger.info("not using the checkpoint's attention-pooling (map) head: pooling=%r", config.pooling)
    if "classifier" in new and config.num_labels > 0:
        logger.warning(
            "initialising a new classifier head for %d labels (checkpoint: %s)",
            config.num_labels,
            f"{stored.num_labels} other labels" if "classifier" in dropped else "no classifier",
        )
    if "pool" in new and config.pooling == "map":
        logger.warning("initialising a new attention-pooling (map) head: the checkpoint has none")


def _resize_positions(
    state: dict[str, torch.Tensor], stored: ClassifierConfig, config: ClassifierConfig
) -> dict[str, torch.Tensor]:
    """Interpolate the stored position table to the requested image size (bicubic, CLS row kept)."""
    old, new = stored.encoder, config.encoder
    if old.grid_size == new.grid_size:
        return state
    grid = (new.grid_size, new.grid_size)
    table = resize_pos_embed(state["backbone.pos_embed"], grid, new.num_position_prefix_tokens,
                             antialias=new.interpolate_antialias)  # (1, T', D)
    logger.info("resized position embeddings from a %d- to a %d-patch grid side", old.grid_size, new.grid_size)
    return state | {"backbone.pos_embed": table}


def _load_strict(
    model: ImageClassifier, state: dict[str, torch.Tensor], new_groups: set[str], source: Path
) -> None:
    """Load every model tensor from `state` (the `new_groups` keep their fresh init); errors list keys."""
    own = model.state_dict()
    state = state | {k: v for k, v in own.items() if param_group(k) in new_groups}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    common = sorted(own.keys() & state.keys())
    wrong = [f"{k}: {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in common if state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(f"{source}: missing {missing}, unexpected {unexpected}, mis-shaped {wrong}")
    model.load_state_dict(state, strict=True)


# (family, pooling) -> the HF classification class that computes the same.
NATIVE_HF_CLASSES = {
    ("vit", "cls"): "ViTForImageClassification",
    ("siglip", "mean"): "SiglipForImageClassification",
    ("deit", "cls"): "DeiTForImageClassification",
    ("deit", "cls_distill"): "DeiTForImageClassificationWithTeacher",
    ("dinov2", "cls_mean"): "Dinov2ForImageClassification",
    ("dinov2_with_registers", "cls_mean"): "Dinov2WithRegistersForImageClassification",
    ("clip", "mean"): "CLIPForImageClassification",
    ("vit_mae", "cls"): "ViTForImageClassification",  # the same network as a ViT (HF has no ViTMAE classifier)
}
HF_VISION_EXTRAS = {"siglip": {"vision_use_head": False}}  # vision-config fields our model fixes


def native_hf_class(config: ClassifierConfig) -> str | None:
    """The HF class with the same computation, if there is one (`NATIVE_HF_CLASSES`)."""
    return NATIVE_HF_CLASSES.get((config.encoder.arch, config.pooling)) if config.num_labels > 0 else None


def hf_config_for(config: ClassifierConfig, hf_class: str) -> transformers.PreTrainedConfig:
    """The transformers config object that describes our model as `hf_class`."""
    family = HF_CLASSES[hf_class][0]
    labels = dict(id2label=config.id2label, label2id=config.label2id, architectures=[hf_class],
                  problem_type=config.problem_type)
    vision = config.encoder.to_hf_vision_dict(family) | HF_VISION_EXTRAS.get(family, {})
    if family in COMPOSITE_MODEL_TYPES:
        return transformers.CONFIG_MAPPING[family](vision_config=vision, **labels)
    return transformers.CONFIG_MAPPING[family](**vision, **labels)


def save_classifier(model: ImageClassifier, out_dir: str | Path) -> Path:
    """Write `model` to `out_dir`: HF-native (`AutoModelForImageClassification` loads it) when an HF
    class exists, else the project format. `load_classifier` reads both. Returns the folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    hf_class = native_hf_class(config)
    if hf_class is None:
        (out_dir / "config.json").write_text(json.dumps({"format": PROJECT_FORMAT} | config.to_dict(), indent=2))
    else:
        hf_config_for(config, hf_class).save_pretrained(out_dir)
        state = ours_to_hf(state, config, hf_class)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir

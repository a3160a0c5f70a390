"""DeiT, DINOv2 (with and without registers, plain and SwiGLU MLP), CLIP vision and ViT-MAE against
Hugging Face, fp32, through `load_classifier(dir)`: max |Δ| <= 1e-5 on the last hidden state (as each
HF model returns it) and the logits, on tiny configs and on the real base-size configs (random
weights), at the stored resolution and at another one (positions resized at load or at forward time)."""

import shutil
from dataclasses import dataclass, field

import pytest
import torch
import transformers

from helpers_hf import mae_noise, make_hf_family_checkpoint, make_hf_family_model
from vit_finetune.modeling import load_classifier

TOL = 1e-5
BASE = dict(hidden_size=768, layers=12, heads=12, intermediate=3072)


@dataclass(frozen=True)
class Case:
    """One HF checkpoint kind: its family (HF model_type), class, and where its vision tower sits."""

    family: str
    hf_class: str
    final_norm: str | None  # HF module applying the final LayerNorm to every token (None: it does not)
    fields: dict = field(default_factory=dict)  # extra vision-config fields
    num_labels: int | None = 3


CASES = {
    "deit-teacher": Case("deit", "DeiTForImageClassificationWithTeacher", "deit.layernorm"),
    "deit": Case("deit", "DeiTForImageClassification", "deit.layernorm"),
    "dinov2": Case("dinov2", "Dinov2ForImageClassification", "dinov2.layernorm"),
    "dinov2-swiglu": Case("dinov2", "Dinov2ForImageClassification", "dinov2.layernorm", {"use_swiglu_ffn": True}),
    "dinov2-registers": Case("dinov2_with_registers", "Dinov2WithRegistersForImageClassification",
                             "dinov2_with_registers.layernorm", {"num_register_tokens": 2}),
    "clip": Case("clip", "CLIPForImageClassification", None),  # post_layernorm: the CLS token only
    "clip-vision": Case("clip_vision_model", "CLIPVisionModel", None, num_labels=None),
    "vit-mae": Case("vit_mae", "ViTMAEModel", "layernorm", num_labels=None),
}
# Interpolation on the forward pass: DINOv2 always resizes its grid; the others only when asked.
ALWAYS_INTERPOLATES = ("dinov2", "dinov2_with_registers")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


def pixels(batch: int, size: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def case_kwargs(name: str, **sizes) -> dict:
    """Keyword arguments of `make_hf_family_model` for a case (`sizes` win over the case's fields)."""
    case = CASES[name]
    return dict(family=case.family, hf_class=case.hf_class, num_labels=case.num_labels) | case.fields | sizes


@torch.no_grad()
def hf_reference(model: torch.nn.Module, case: Case, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One HF forward: the last layer's output, the last hidden state, pooler output and logits."""
    kwargs = {} if case.family in ALWAYS_INTERPOLATES else {"interpolate_pos_encoding": True}
    if case.family == "vit_mae":
        kwargs["noise"] = mae_noise(x.shape[0], (x.shape[-1] // model.config.patch_size) ** 2)
    out = model(x, output_hidden_states=True, **kwargs)
    last_layer = out.hidden_states[-1]
    norm = model.get_submodule(case.final_norm) if case.final_norm else torch.nn.Identity()
    ref = {"last_layer": last_layer, "tokens": norm(last_layer)}
    if getattr(out, "pooler_output", None) is not None:
        ref["pooler"] = out.pooler_output
    if case.num_labels:
        ref["logits"] = out.logits
    return ref


@torch.no_grad()
def check_against_hf(folder, name: str, checks: list[tuple[int, int, bool]], model=None) -> None:
    """Ours vs HF (`model`, else the folder loaded by transformers) for each (size in px, batch, positions
    resized at load rather than at each forward)."""
    case = CASES[name]
    model = model or getattr(transformers, case.hf_class).from_pretrained(folder).eval()
    loaded = {}  # image_size at load (None: as stored) -> our model
    for size, batch, at_load in checks:
        x = pixels(batch, size)
        ref = hf_reference(model, case, x)
        image_size = size if at_load else None
        ours = loaded[image_size] = loaded.get(image_size) or load_classifier(folder, image_size=image_size)
        last_layer = ours.backbone.encoder(ours.backbone.embed(x, not at_load))  # (B, T, D), one forward
        features = ours.backbone.norm(last_layer) if ours.config.encoder.final_norm == "tokens" else last_layer
        assert max_diff(last_layer, ref["last_layer"]) <= TOL
        # ViTMAEModel normalises every token; our MAE encoder leaves the LayerNorm to the pooled vector
        assert max_diff(ours.backbone.norm(last_layer) if case.final_norm else last_layer, ref["tokens"]) <= TOL
        if "logits" in ref:
            assert max_diff(ours.forward_head(features), ref["logits"]) <= TOL
        if "pooler" in ref:  # CLIP: post_layernorm of the CLS token
            cls_pooling = load_classifier(folder, pooling="cls", image_size=size if at_load else None)
            assert max_diff(cls_pooling.forward_head(features, pre_logits=True), ref["pooler"]) <= TOL


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny checkpoints of every case, stored at 48 px (a 6 x 6 grid of 8-px patches)."""
    return {name: make_hf_family_checkpoint(tmp_path_factory.mktemp(name), **case_kwargs(name, image_size=48))
            for name in CASES}


@pytest.mark.parametrize("name", CASES)
def test_tiny_matches_hf(name, tiny):
    """At the stored 48 px; at 32 px with positions shrunk at load (as DINOv2's 518-px grid is for
    224-px inputs); at 64 px with positions grown at forward time."""
    check_against_hf(tiny[name], name, [(48, 3, False), (32, 2, True), (64, 2, False)])
    model, x = load_classifier(tiny[name]), pixels(2, 48)
    with torch.no_grad():  # the comparison above takes forward_features apart
        last_layer = model.backbone.encoder(model.backbone.embed(x))
        tokens_norm = model.config.encoder.final_norm == "tokens"
        assert torch.equal(model.forward_features(x), model.backbone.norm(last_layer) if tokens_norm else last_layer)


# The hub's base configs (facebook/deit-base-distilled-patch16-224, facebook/dinov2-base,
# facebook/dinov2-with-registers-base, openai/clip-vit-base-patch16, facebook/vit-mae-base), each
# checked at two resolutions with one forward each (positions resized at forward time: the tiny cases
# cover resizing at load); DINOv2 stores its grid for 518 px.
BASE_CASES = {
    "deit-teacher": (dict(image_size=224, patch_size=16), [(224, 1, False), (256, 1, False)]),
    "dinov2": (dict(image_size=518, patch_size=14), [(224, 1, False), (280, 1, False)]),
    "dinov2-registers": (dict(image_size=518, patch_size=14, num_register_tokens=4),
                         [(224, 1, False), (280, 1, False)]),
    "clip": (dict(image_size=224, patch_size=16), [(224, 1, False), (256, 1, False)]),
    "vit-mae": (dict(image_size=224, patch_size=16), [(224, 1, False), (256, 1, False)]),
}


@pytest.fixture(scope="module", params=list(BASE_CASES))
def base_checkpoint(request, tmp_path_factory):
    """A base-size model of one case (random weights), saved; the folder is deleted after its test."""
    name = request.param
    model = make_hf_family_model(**case_kwargs(name, **BASE, **BASE_CASES[name][0]))
    folder = tmp_path_factory.mktemp(f"base-{name}")
    model.save_pretrained(folder)
    yield name, folder, model
    shutil.rmtree(folder)


def test_base_size_matches_hf(base_checkpoint):
    name, folder, model = base_checkpoint
    check_against_hf(folder, name, BASE_CASES[name][1], model)

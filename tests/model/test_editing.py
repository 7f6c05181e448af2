"""Editing as in the paper: references as vision tokens (no gradients) and as clean latents appended after the
noisy target with the same position embedding; several references; loss and unpatchify on the target only; the
editing negative prompt; the reference's aspect ratio kept."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from deepgen.model.config import TINY, ModelConfig
from deepgen.model.deepgen import fit_size, pil_to_tensor
from deepgen.model.dit import build_dit, dit_forward


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, 256, (height, width, 3), generator=gen, dtype=torch.uint8)
    return Image.fromarray(data.numpy())


@pytest.fixture(scope="module")
def dit_inputs(tiny_model):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 16, 16, generator=gen)
    context = torch.randn(2, 5, 128, generator=gen)
    pooled = torch.randn(2, 128, generator=gen)
    return latents, context, pooled, torch.tensor([300.0, 700.0])


def test_without_references_it_is_the_diffusers_forward(tiny_model, dit_inputs):
    latents, context, pooled, t = dit_inputs
    with torch.no_grad():
        ours = dit_forward(tiny_model.dit, latents, context, pooled, t)
        theirs = tiny_model.dit(latents, context, pooled, t).sample
    torch.testing.assert_close(ours, theirs)


def test_masked_joint_attention_without_a_mask_is_diffusers_processor():
    """Our processor replaces diffusers' in every DiT we build; on an SD3.5-style block set (dual attention,
    qk-norm, a context-pre-only last block) it must compute what JointAttnProcessor2_0 computes."""
    from diffusers import SD3Transformer2DModel
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    from deepgen.model.dit import MaskedJointAttention

    torch.manual_seed(0)
    dit = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                caption_projection_dim=16, pooled_projection_dim=16, pos_embed_max_size=8,
                                dual_attention_layers=(0,), qk_norm="rms_norm").eval()
    inputs = (torch.randn(2, 4, 8, 8), torch.randn(2, 3, 16), torch.randn(2, 16), torch.tensor([100.0, 900.0]))
    with torch.no_grad():
        dit.set_attn_processor(JointAttnProcessor2_0())
        theirs = dit(*inputs).sample
        dit.set_attn_processor(MaskedJointAttention())
        ours = dit(*inputs).sample
        all_real = dit_forward(dit, *inputs[:3], inputs[3], context_mask_BL=torch.ones(2, 3, dtype=torch.bool))
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(all_real, theirs)


def test_references_share_the_position_embedding_and_only_the_target_is_output(tiny_model, dit_inputs):
    latents, context, pooled, t = dit_inputs
    seen = {}

    def grab(module, args, kwargs):
        seen.setdefault("tokens", kwargs["hidden_states"])

    hook = tiny_model.dit.transformer_blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            out = dit_forward(tiny_model.dit, latents, context, pooled, t, [latents.clone()])
    finally:
        hook.remove()
    tokens = seen["tokens"]
    assert tokens.shape[1] == 2 * 64 and out.shape == latents.shape
    torch.testing.assert_close(tokens[:, :64], tokens[:, 64:])  # same content, same position embedding
    with torch.no_grad():
        other = dit_forward(tiny_model.dit, latents, context, pooled, t, [torch.randn(2, 4, 8, 12)])
        two = dit_forward(tiny_model.dit, latents, context, pooled, t, [latents, torch.randn(2, 4, 8, 8)])
    assert other.shape == two.shape == latents.shape
    assert (other - out).abs().max() > 1e-4  # the reference is attended to


def test_one_vision_slot_per_reference_in_the_release_layout(tiny_model):
    refs = [noise_image(64, 64, 1), noise_image(64, 32, 2)]
    ids, mask, pixels, grid = tiny_model.encoder.tokenize(["make it blue", "a red circle"], [refs, []])
    tok = tiny_model.tokenizer
    text = tok.decode(ids[0][mask[0].bool()])
    assert text.count("<|vision_start|>") == 2 and "<|vision_end|><|vision_start|>" in text
    assert text.endswith("<|vision_end|>\nmake it blue<|im_end|>\n<|im_start|>assistant\n")
    assert grid.tolist() == [[1, 4, 4], [1, 2, 4]]  # the ViT sees 28/32 of each reference: 56x56 and 56x28
    assert "<|vision_start|>" not in tok.decode(ids[1])


def test_flow_loss_with_references(tiny_model):
    model = tiny_model
    model.train()
    try:
        gen = torch.Generator().manual_seed(0)
        images = torch.rand(4, 3, 64, 64, generator=gen) * 2 - 1
        refs = [[], [noise_image(64, 64, 1)], [], [noise_image(64, 64, 2)]]
        as_tensor = torch.stack([torch.zeros(3, 64, 64) if not r else pil_to_tensor(r[0]) for r in refs])
        captions = ["a", "make it red", "b", "make it blue"]
        loss = model.flow_loss(images, captions, refs, as_tensor, torch.Generator().manual_seed(1))
        from_pil = model.flow_loss(images, captions, refs, None, torch.Generator().manual_seed(1))
        assert loss.item() == from_pil.item()
        several = [[], [noise_image(64, 64, 1), noise_image(32, 48, 3)], [noise_image(64, 64, 4)], []]
        model.encoder.vlm.visual.requires_grad_(True)
        multi = model.flow_loss(images, captions, several, None, torch.Generator().manual_seed(1))
        multi.backward()
        assert torch.isfinite(multi) and multi.item() != loss.item()
        assert all(p.grad is None for p in model.encoder.vlm.visual.parameters())  # the ViT runs without grads
        assert model.scb.in_proj.weight.grad is not None
    finally:
        model.zero_grad(set_to_none=True)
        model.requires_grad_(True)
        model.eval()


def test_reference_aspect_ratio_is_kept():
    assert fit_size(1024, 768, 512, 32) == (512, 384)
    assert fit_size(700, 1000, 512, 32) == (384, 512)  # 358.4 rounded up to a multiple of 32
    assert fit_size(500, 300, 512, 32) == (512, 320)  # small images are not enlarged, only rounded up
    assert fit_size(96, 40, 64, 8) == (64, 32)


def test_generate_edits_keep_the_reference_size_and_use_the_edit_negative_prompt(tiny_model, same_images):
    wide = noise_image(96, 48, 5)
    out = tiny_model.generate(["make it blue", "a red circle", "combine them"],
                              refs=[[wide], [], [wide, noise_image(64, 64, 6)]], steps=2, seed=3)
    assert [im.size for im in out] == [(64, 32), (64, 64), (64, 64)]
    assert tiny_model.generate(["make it blue"], refs=[[wide]], steps=2, seed=3, size=(32, 64))[0].size == (64, 32)
    flow = tiny_model.cfg.flow
    original = dataclasses.replace(flow)
    try:
        flow.edit_negative_prompt = "blurry, low quality"
        default = tiny_model.generate(["make it blue"], refs=[[wide]], steps=2, seed=3)
        explicit = tiny_model.generate(["make it blue"], refs=[[wide]], steps=2, seed=3,
                                       negative_prompt="blurry, low quality")
        empty = tiny_model.generate(["make it blue"], refs=[[wide]], steps=2, seed=3, negative_prompt="")
    finally:
        tiny_model.cfg.flow = original
    assert same_images(default, explicit) and not same_images(default, empty)


def test_full_preset_uses_the_papers_editing_negative_prompt():
    from deepgen.model.config import preset

    cfg = preset("full")
    assert cfg.flow.edit_negative_prompt.startswith("blurry, low quality, low resolution, distorted")
    assert cfg.flow.edit_negative_prompt.endswith("incomplete editing, unfinished, unedited areas.")
    assert (cfg.size_multiple, cfg.image_size, cfg.flow.guidance_scale, cfg.flow.sample_steps) == (32, 512, 4.0, 50)


def test_padding_is_invisible_to_bridge_and_dit(tiny_model):
    """Left-padded prompts: a sample's own context tokens, pooled vector and predicted velocity match the prompt run
    alone, so one batched DiT call per step (training, sampling) equals one call per prompt length; without the
    mask the padding changes the velocity (the test can fail)."""
    captions = ["a red circle", "a small blue square in the top left corner of the picture"]
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.7, 0.3])
    with torch.no_grad():
        context, pooled, mask = tiny_model.condition(captions)
        alone, alone_pooled, alone_mask = tiny_model.condition(captions[:1])
        batched = tiny_model.velocity(x, sigma, context, pooled, context_mask_BL=mask)
        single = tiny_model.velocity(x[:1], sigma[:1], alone, alone_pooled, context_mask_BL=alone_mask)
        unmasked = tiny_model.velocity(x, sigma, context, pooled)
    length = int(mask[0].sum())
    assert length < context.shape[1] == int(mask[1].sum()) and alone.shape[1] == length and alone_mask.all()
    torch.testing.assert_close(context[0, -length:], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(pooled[0], alone_pooled[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batched[:1], single, atol=1e-5, rtol=1e-4)
    assert (unmasked[:1] - single).abs().max() > 1e-4


def test_latent_cache_is_exact_and_encodes_each_image_once(tiny_model):
    from deepgen.model.vae import LatentCache, encode

    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cache = LatentCache()
    with torch.no_grad():
        first = cache.encode(tiny_model.vae, images[:2])
        again = cache.encode(tiny_model.vae, images)
        direct = encode(tiny_model.vae, images)
    torch.testing.assert_close(again, direct, atol=1e-5, rtol=1e-4)
    assert torch.equal(first, again[:2]) and (cache.hits, cache.misses) == (2, 3) and len(cache.store) == 3
    one = LatentCache(max_bytes=direct[0].numel() * direct[0].element_size())  # room for one latent
    with torch.no_grad():
        bounded = one.encode(tiny_model.vae, images)
    torch.testing.assert_close(bounded, direct, atol=1e-5, rtol=1e-4)
    assert len(one.store) == 1


def test_release_bridge_generation_never_pads_and_stays_batch_independent(same_images):
    """`mask_padding: false` (the release's bridge mixes padding into the conditioning): generation groups prompts by
    token length and conditions prompt and negative apart, so an image still does not depend on its batch."""
    from deepgen.model.config import preset
    from deepgen.model.deepgen import DeepGen

    torch.manual_seed(0)
    model = DeepGen(preset("tiny", {"scb": {"mask_padding": False}})).eval()
    prompts = ["a red circle", "two blue squares at the bottom left"]
    together = model.generate(prompts, steps=2, seed=3)
    alone = model.generate(prompts[1:], steps=2, seed=4)
    assert same_images(together[1:], alone)
    with torch.no_grad():
        assert model.condition(prompts)[2] is None


def test_tiny_dit_tells_neighbouring_patches_apart_for_copying_references():
    """An edit copies its reference token by token through the shared sincos positions; with the 16 a 64 px latent
    has as `sample_size`, neighbouring patches sat 0.5 apart (cosine 0.9956) and bench/copy_probe.py's copy loss
    was 2.7x higher (model/config.py). The tiny preset must keep them at least 1 apart."""
    dit = build_dit(ModelConfig.from_dict(TINY).dit)
    grid = torch.nn.functional.normalize(dit.pos_embed.cropped_pos_embed(16, 16)[0], dim=-1).view(8, 8, -1)
    neighbours = (grid[:, 1:] * grid[:, :-1]).sum(-1)
    assert 1 - neighbours.max().item() > 0.01

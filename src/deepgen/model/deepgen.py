"""DeepGen: VLM -> SCB -> SD3 MMDiT in one module; text-to-image and editing share one forward.

Images cross this boundary as tensors in [-1, 1] (B, 3, H, W) for training and PIL images for generation.
Editing samples carry one or more reference images: the VLM sees each as vision tokens (one vision slot per image),
the DiT each as clean latents appended after the noisy target tokens. Samples whose references differ in number or
size run as separate DiT groups (the release pads them into one batch with an attention mask: same result).
An edit keeps its reference's aspect ratio: the longer side becomes `image_size`, the other is rounded up to a
multiple of `size_multiple` (the release's `resize_image`), and the output takes that size.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from deepgen.model import vae as vae_ops
from deepgen.model.config import ModelConfig
from deepgen.model.dit import build_dit, dit_forward
from deepgen.model.flow import noisy_latents, training_sigmas
from deepgen.model.sampling import euler_sample, guided
from deepgen.model.scb import StackedChannelBridge
from deepgen.model.tokenizer import build_tiny_tokenizer, load_tokenizer
from deepgen.model.vae import build_vae
from deepgen.model.vlm import PromptEncoder, build_vlm

Refs = list[list[Image.Image]] | None  # per sample: its reference images (empty list for text-to-image)


@dataclass(frozen=True)
class Conditioning:
    """What the DiT sees for one group of prompts: (context_BLD, pooled_BP, mask_BL | None) for the prompts and,
    with guidance, for the negative prompts; the clean latents of each reference image (edits)."""

    cond: tuple
    uncond: tuple | None
    ref_latents: list[torch.Tensor]

    def select(self, idx: torch.Tensor) -> "Conditioning":
        """The conditioning of samples `idx` only (RL trains on sub-batches of a rollout)."""
        pick = lambda half: None if half is None else tuple(None if t is None else t[idx] for t in half)  # noqa: E731
        return Conditioning(pick(self.cond), pick(self.uncond), [lat[idx] for lat in self.ref_latents])


def build_tokenizer(cfg: ModelConfig):
    if cfg.vlm.pretrained:
        from deepgen.model.weights import resolve

        return load_tokenizer(resolve(cfg.vlm.pretrained, "vlm"))
    return build_tiny_tokenizer(cfg.vlm.vocab_size)


class DeepGen(nn.Module):
    def __init__(self, cfg: ModelConfig, tokenizer=None, vlm_config=None):
        """`vlm_config`: a Qwen2_5_VLConfig to build the VLM from (checkpoints store the exact one they were saved
        with) instead of deriving it from `cfg.vlm`."""
        super().__init__()
        self.cfg = cfg
        tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg)
        vlm = build_vlm(cfg.vlm, tokenizer, hf_config=vlm_config)
        self.encoder = PromptEncoder(vlm, tokenizer, cfg.vlm)
        text = vlm.config.text_config
        self.dit = build_dit(cfg.dit)
        self.scb = StackedChannelBridge(
            cfg.scb, text.hidden_size, text.num_hidden_layers,
            self.dit.config.joint_attention_dim, self.dit.config.pooled_projection_dim,
        )
        self.vae = build_vae(cfg.vae)
        self.latent_cache: vae_ops.LatentCache | None = None
        if cfg.vlm.pretrained or cfg.dit.pretrained or cfg.vae.pretrained:
            self._check_pretrained()

    def _check_pretrained(self) -> None:
        """Loaded folders must be the architecture the config describes; the VAE's latent normalisation and the
        scheduler's shift are taken from the folders (they are properties of those weights)."""
        from deepgen.model.weights import check_config, scheduler_settings

        cfg = self.cfg
        if cfg.vlm.pretrained:
            text, vision = self.encoder.vlm.config.text_config, self.encoder.vlm.config.vision_config
            found = {"num_layers": text.num_hidden_layers, "hidden_size": text.hidden_size,
                     "num_heads": text.num_attention_heads, "num_kv_heads": text.num_key_value_heads,
                     "intermediate_size": text.intermediate_size, "vision_depth": vision.depth,
                     "vision_hidden_size": vision.hidden_size}
            check_config("vlm", found, {k: getattr(cfg.vlm, k) for k in found}, cfg.vlm.pretrained)
        if cfg.dit.pretrained:
            expected = {k: v for k, v in dataclasses.asdict(cfg.dit).items() if k != "pretrained"}
            check_config("dit", dict(self.dit.config), expected, cfg.dit.pretrained)
            settings = scheduler_settings(cfg.dit.pretrained)
            if settings:
                cfg.flow.shift, cfg.flow.num_train_timesteps = settings["shift"], settings["num_train_timesteps"]
        if cfg.vae.pretrained:
            keys = ("latent_channels", "block_out_channels", "layers_per_block")
            check_config("vae", dict(self.vae.config), {k: getattr(cfg.vae, k) for k in keys}, cfg.vae.pretrained)
            cfg.vae.scaling_factor = float(self.vae.config.scaling_factor)
            cfg.vae.shift_factor = float(self.vae.config.shift_factor or 0.0)

    @property
    def tokenizer(self):
        return self.encoder.tokenizer

    @property
    def device(self) -> torch.device:
        return self.scb.think_tokens.device

    def condition(self, captions: list[str], refs: Refs = None):
        """(context_BLD, pooled_BP, mask_BL) for the DiT from the prompts and reference images.

        Prompts are left-padded to one length; `mask_BL` marks each sample's own tokens, so with the bridge's
        padding mask and the DiT's masked joint attention a sample's result does not depend on its batch-mates.
        The release's bridge (`mask_padding: false`) mixes padding in, and then the mask is None: the DiT attends
        to the whole padded context, as the release does.
        """
        hidden_states, mask = self.encoder(captions, self.scb.think_tokens, refs)
        context, pooled = self.scb(hidden_states, mask)
        return context, pooled, (mask.bool() if self.cfg.scb.mask_padding else None)

    def encode_images(self, images_B3HW: torch.Tensor) -> torch.Tensor:
        """Normalised latents; through `latent_cache` when a training stage set one (it does so only when the
        VAE is frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.vae.training):
            if self.latent_cache is not None:
                return self.latent_cache.encode(self.vae, images_B3HW)
            return vae_ops.encode(self.vae, images_B3HW)

    def velocity(self, x_BCHW, sigma_B, context_BLD, pooled_BP, ref_latents=None, context_mask_BL=None):
        return dit_forward(self.dit, x_BCHW, context_BLD, pooled_BP, sigma_B * 1000.0, ref_latents, context_mask_BL)

    def flow_loss(self, images_B3HW: torch.Tensor, captions: list[str], refs: Refs = None,
                  ref_images_B3HW: torch.Tensor | list[list[torch.Tensor]] | None = None,
                  generator=None) -> torch.Tensor:
        """Flow-matching MSE on the target latents.

        Edit samples (refs non-empty) give their reference tensors in `ref_images_B3HW`: either a (B, 3, H, W)
        tensor holding one reference per sample, or per sample a list of (3, h, w) tensors (several references,
        any size). When omitted they are made from the PIL images in `refs`. Text-to-image samples and each
        reference layout form separate DiT groups; every group's loss is weighted by its share of the batch.
        """
        flow = self.cfg.flow
        batch = len(captions)
        drop = torch.rand(batch, generator=generator) < flow.caption_dropout if self.training else torch.zeros(batch)
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        context, pooled, mask = self.condition(captions, refs)
        x0 = self.encode_images(images_B3HW)
        # drawn where the latents are (a GPU's own generator; on a CPU the same numbers as before), unless the caller
        # passes a generator, which draws on its own device
        noise = torch.randn(x0.shape, generator=generator,
                            device=x0.device if generator is None else generator.device).to(x0)
        sigma = training_sigmas(batch, flow.num_train_timesteps, flow.shift, generator).to(x0)
        x_t = noisy_latents(x0, noise, sigma)
        references = reference_tensors(refs, ref_images_B3HW, batch)
        loss = x0.new_zeros(())
        layouts = [tuple(tuple(t.shape) for t in r) for r in references]
        for idx_list, layout in _groups(layouts):
            idx = torch.tensor(idx_list, device=x0.device)
            ref_latents = None
            if layout:
                ref_latents = [self.encode_images(torch.stack([references[i][j] for i in idx_list]).to(x0))
                               for j in range(len(layout))]
            v = self.velocity(x_t[idx], sigma[idx], context[idx], pooled[idx], ref_latents,
                              None if mask is None else mask[idx])
            target = (noise - x0)[idx]
            loss = loss + ((v.float() - target.float()) ** 2).mean() * len(idx) / batch
        return loss

    @torch.no_grad()
    def generate(self, prompts: list[str], refs: Refs = None, steps: int | None = None,
                 guidance: float | None = None, seed: int = 0, negative_prompt: str | None = None,
                 size: tuple[int, int] | None = None, progress=None) -> list[Image.Image]:
        """Euler sampling with CFG; sample i uses noise from seed + i, and padding is masked out of the bridge and
        the DiT, so a prompt's image does not depend on its batch (up to float rounding). Each step is one DiT call
        per output size and reference layout, the conditional and unconditional halves batched together.

        `refs[i]` are sample i's reference images (empty: text-to-image). `size` is (height, width); by default an
        edit with one reference keeps its aspect ratio, everything else is `image_size` square. The negative prompt
        defaults to the paper's editing negative prompt for edits and to "" for text-to-image.
        """
        flow = self.cfg.flow
        steps = steps or flow.sample_steps
        guidance = flow.guidance_scale if guidance is None else guidance
        refs = [[self.fit_reference(img) for img in r] for r in refs] if refs else [[] for _ in prompts]
        if len(refs) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(refs)} reference lists")
        square = (self.cfg.image_size, self.cfg.image_size)
        sizes = [size or ((r[0].height, r[0].width) if len(r) == 1 else square) for r in refs]
        negatives = [negative_prompt if negative_prompt is not None else
                     (flow.edit_negative_prompt if r else "") for r in refs]
        out: list[Image.Image | None] = [None] * len(prompts)
        # the release's bridge mixes padding in, so there prompts also group by token length (no padding at all)
        lengths = [None] * len(prompts) if self.cfg.scb.mask_padding else \
            [self.encoder.tokenize([p], [r])[0].shape[1] for p, r in zip(prompts, refs)]
        layouts = [(sizes[i], tuple((img.height, img.width) for img in r), lengths[i]) for i, r in enumerate(refs)]
        for idx, _ in _groups(layouts):
            images = self._sample([prompts[i] for i in idx], [refs[i] for i in idx], [negatives[i] for i in idx],
                                  sizes[idx[0]], [seed + i for i in idx], steps, guidance, progress)
            for i, image in zip(idx, images):
                out[i] = image
        return out

    def _sample(self, prompts, refs, negatives, size, seeds, steps, guidance, progress) -> list[Image.Image]:
        """One group: same output size and same reference layout, so the batch stacks."""
        cond = self.conditioning(prompts, refs, negatives, guidance)
        noise = torch.stack([torch.randn(self.latent_shape(size), generator=torch.Generator().manual_seed(s))
                             for s in seeds]).to(self.device)
        latents = euler_sample(self.guided_velocity(cond, guidance), noise, steps, self.cfg.flow.shift, progress)
        return self.decode(latents)

    def conditioning(self, prompts: list[str], refs: Refs = None, negatives: list[str] | None = None,
                     guidance: float = 1.0) -> Conditioning:
        """Everything the DiT is conditioned on for one group of prompts (same reference layout). The unconditional
        half is built only when guidance is on; `negatives` default to "" (the edit negative prompt for edits)."""
        refs = list(refs) if refs else [[] for _ in prompts]
        edit = any(refs)
        if negatives is None:
            negatives = [self.cfg.flow.edit_negative_prompt if r else "" for r in refs]
        ref_latents = []
        if edit:
            ref_latents = [self.encode_images(torch.stack([pil_to_tensor(r[j]) for r in refs]).to(self.device))
                           for j in range(len(refs[0]))]
        if guidance == 1.0:
            return Conditioning(self.condition(list(prompts), refs if edit else None), None, ref_latents)
        if self.cfg.scb.mask_padding:  # both halves in one masked batch: one VLM call
            context, pooled, mask = self.condition(list(prompts) + list(negatives), refs * 2 if edit else None)
            n = len(prompts)
            return Conditioning((context[:n], pooled[:n], mask[:n]), (context[n:], pooled[n:], mask[n:]), ref_latents)
        # the release's bridge mixes padding in: the halves are conditioned (and later run) apart
        return Conditioning(self.condition(list(prompts), refs if edit else None),
                            self.condition(list(negatives), refs if edit else None), ref_latents)

    def guided_velocity(self, cond: Conditioning, guidance: float = 1.0, dit: nn.Module | None = None):
        """(x_BCHW, sigma_B) -> velocity with classifier-free guidance, from `dit` (default: this model's; RL passes
        its frozen reference copy). With a masked bridge both halves run as one DiT call per step."""
        dit = self.dit if dit is None else dit

        def run(x, sigma, context, pooled, mask):
            n = context.shape[0] // x.shape[0]
            refs = [lat.repeat(n, 1, 1, 1) for lat in cond.ref_latents] or None
            return dit_forward(dit, x.repeat(n, 1, 1, 1), context, pooled, sigma.repeat(n) * 1000.0, refs, mask)

        def velocity(x, sigma):
            if cond.uncond is None or guidance == 1.0:
                return run(x, sigma, *cond.cond)
            if self.cfg.scb.mask_padding:
                both = [torch.cat([a, b]) for a, b in zip(cond.cond, cond.uncond)]
                return guided(*run(x, sigma, *both).chunk(2), guidance)
            return guided(run(x, sigma, *cond.cond), run(x, sigma, *cond.uncond), guidance)

        return velocity

    def latent_shape(self, size: tuple[int, int]) -> tuple[int, int, int]:
        """(C, h, w) of the latent for an output of (height, width); sides must be multiples of `size_multiple`."""
        height, width = size
        multiple = self.cfg.size_multiple
        if height % multiple or width % multiple:
            raise ValueError(f"output size {width}x{height}: sides must be multiples of {multiple}")
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (self.vae.config.latent_channels, height // factor, width // factor)

    def decode(self, latents_BCHW: torch.Tensor) -> list[Image.Image]:
        return [tensor_to_pil(img) for img in vae_ops.decode(self.vae, latents_BCHW)]

    def fit_reference(self, image: Image.Image) -> Image.Image:
        """RGB copy resized as the release does: longer side `image_size`, sides multiples of `size_multiple`."""
        width, height = fit_size(image.width, image.height, self.cfg.image_size, self.cfg.size_multiple)
        image = image.convert("RGB")
        return image if image.size == (width, height) else image.resize((width, height), Image.BICUBIC)


def fit_size(width: int, height: int, image_size: int, multiple: int) -> tuple[int, int]:
    """The release's `resize_image`: scale the longer side down to `image_size` (small images keep their size),
    round both sides up to a multiple of `multiple`."""
    if max(width, height) >= image_size:
        scale = image_size / max(width, height)
        width, height = (image_size, height * scale) if width >= height else (width * scale, image_size)
    return (math.ceil(round(width, 6) / multiple) * multiple, math.ceil(round(height, 6) / multiple) * multiple)


def reference_tensors(refs: Refs, ref_images, batch: int) -> list[list[torch.Tensor]]:
    """Per sample, its reference images as (3, h, w) tensors in [-1, 1] (empty for text-to-image samples)."""
    has_refs = [bool(r) for r in refs] if refs else [False] * batch
    if isinstance(ref_images, torch.Tensor):
        return [[ref_images[i]] if has_refs[i] else [] for i in range(batch)]
    if ref_images is not None:
        return [list(r) if has_refs[i] else [] for i, r in enumerate(ref_images)]
    return [[pil_to_tensor(img.convert("RGB")) for img in r] if has_refs[i] else [] for i, r in
            enumerate(refs or [[]] * batch)]


def _groups(keys: list) -> list[tuple[list[int], tuple]]:
    """Sample indices grouped by key, in order of first appearance."""
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [(idx, key) for key, idx in groups.items()]


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float in [-1, 1]."""
    data = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    return data.view(image.height, image.width, 3).permute(2, 0, 1).float() / 127.5 - 1.0


def tensor_to_pil(image_3HW: torch.Tensor) -> Image.Image:
    data = ((image_3HW.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(data)

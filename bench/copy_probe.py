"""How fast a fresh DiT learns to use an edit's reference: the measurement behind the tiny DiT's `sample_size`
(deepgen.model.config, TINY), and behind README's account of why edits are not learned yet.

    python bench/copy_probe.py --init data/06_models/runs/vae-.../checkpoint_.../model \
        --variant sample_size=16 --variant sample_size=32
    python bench/copy_probe.py --init <same> --variant sample_size=32 --task edit --steps 600 --score
    python bench/copy_probe.py --init <same> --variant sample_size=32 --task edit --copy-first 300 --steps 3000 \
        --score --score-every 500 --pool 8000

Each variant rebuilds the DiT from the checkpoint's config with those DiT keys changed (same seed), then trains the
DiT alone, in one process, on "copy the reference" (target = the edit's source image; training-split edits) and
prints the held-out flow loss with the true reference and with a shuffled one. Copying is the part of editing that
the positions carry: a target token must find the reference token at its own place. Measured (2 threads, 250 steps
of 16, lr 2e-3, the VAE checkpoint of a default run at bdbc3ac): loss 0.396 at sample_size 16, 0.147 at 32 (0.37x;
shuffled reference 0.78 / 1.61).

`--task edit` trains on the edits themselves (target = the edited image; the bridge trains too, at alignment's 0.3x,
since the instruction reaches the DiT through it) and first prints what a perfect copier would score there: the
latent MSE between each edit's source and target, per kind. `--score` generates the held-out edits at the end (8 per
kind, 10 steps, CFG 3.5) and prints `edits_preserved` / `edits_followed`. Measured with this loop (one-off runs on a
pool of 3,000 generated edits, 1 thread each, lr 2e-3, batch 16, VAE checkpoint of the bdbc3ac run, sample_size 32;
the copy rows with the bridge training too, as for edits):
  copy  300 steps: train loss 0.14, held-out preserved 0.85;  600 steps: loss 0.02, preserved 0.88
  edit  600 steps: train loss 0.34, preserved 0.02, followed 0.29;  1,500 steps: loss 0.21, preserved 0.06
A perfect copier's latent MSE on the edits (this script, same VAE): add 0.30, recolor 0.32, remove 0.32, replace 0.37,
move 0.62, background 1.17 (mean 0.52): copying everything scores worse than what the model reaches without copying, because
the foreground-weighted VAE puts large latents on objects and an edit changes 13-25% of the latent (all of it for a
background). Until the model reads which object the instruction names, the loss-optimal answer hedges between the
source and the change on every object, and the samples come out as neither (preserved near 0).

With the word-order VLM (97ac125; the rows above ran on the bag-of-words one), `--copy-first 300` as a curriculum and
`--pool 8000` (~7,000 training edits, each seen ~7 times in 3,000 steps), scored every 500 steps (`--score-every`):

    python bench/copy_probe.py --init <vae checkpoint of 97ac125's seed-0 run> --variant sample_size=32 \
        --task edit --copy-first 300 --steps 3000 --score --score-every 500 --pool 8000

  after the 300 copy steps:         preserved 0.75, followed 0.02
  edit steps  500 / 1,000 / 1,500:  preserved 0.25 / 0.19 / 0.19, followed 0.23 / 0.25 / 0.25
  edit steps 2,000 / 2,500 / 3,000: preserved 0.10 / 0.08 / 0.17, followed 0.29 / 0.31 / 0.17; both <= 0.02
  held-out flow loss 0.25 (500 edit steps) -> 0.17 (3,000), shuffled reference 0.48 -> 0.44; 20 min 41 s of 2 threads
On the default pool of 1,500, 600 edit steps left preserved 0.02, followed 0.19 without the copy steps (as before)
and 0.13 / 0.10 after them. The copy is learned and then traded for the hedge; the flow loss keeps falling, the
samples do not improve, and binding the instruction to one object of the reference does not emerge in a budget the
size of the whole default run.
"""

from __future__ import annotations

import argparse
import dataclasses
import random

import torch

from deepgen import world
from deepgen.model.checkpoint import load_checkpoint
from deepgen.model.deepgen import pil_to_tensor
from deepgen.model.dit import build_dit
from deepgen.train.heldout import heldout_scores
from deepgen.world.generate import generate_samples, sample_is_held_out


def copy_batch(samples: list[dict], shuffled: bool = False, task: str = "copy") -> tuple:
    """(targets, captions, refs, ref tensors): each edit's source image as its own target (copy) or its edited
    image (edit)."""
    sources = [pil_to_tensor(s["source_image"]) for s in samples]
    refs = sources[1:] + sources[:1] if shuffled else sources
    targets = sources if task == "copy" else [pil_to_tensor(s["image"]) for s in samples]
    return (torch.stack(targets), [s["caption"] for s in samples], [[s["source_image"]] for s in samples],
            [[r] for r in refs])


def heldout_loss(model, samples: list[dict], shuffled: bool, task: str, draws: int = 4) -> float:
    generator = torch.Generator()
    with torch.no_grad():
        return sum(model.flow_loss(*copy_batch(samples, shuffled, task), generator=generator.manual_seed(k)).item()
                   for k in range(draws)) / draws


def copier_mse(model, edits: list[dict]) -> dict[str, float]:
    """Per edit kind, the latent MSE between source and target: the flow loss of a model that copies perfectly."""
    by_kind: dict[str, list[float]] = {}
    with torch.no_grad():
        for s in edits:
            target, source = (model.encode_images(pil_to_tensor(image)[None]) for image in (s["image"], s["source_image"]))
            by_kind.setdefault(s["category"], []).append(((target - source) ** 2).mean().item())
    return {kind: sum(v) / len(v) for kind, v in sorted(by_kind.items())}


def run_variant(init: str, overrides: dict, train: list[dict], test: list[dict], steps: int, batch: int,
                lr: float, seed: int, task: str = "copy", score: list[dict] | None = None,
                copy_first: int = 0, score_every: int = 0) -> tuple[float, float]:
    model = load_checkpoint(init)
    torch.manual_seed(seed)
    model.dit = build_dit(dataclasses.replace(model.cfg.dit, **overrides))
    for p in model.parameters():
        p.requires_grad_(False)
    groups = [{"params": list(model.dit.parameters()), "lr": lr}]
    if task == "edit":  # the instruction reaches the DiT through the bridge: it learns too, at alignment's 0.3x
        groups.append({"params": list(model.scb.parameters()), "lr": 0.3 * lr})
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    model.train()
    for step in range(1, copy_first + steps + 1):
        loss = model.flow_loss(*copy_batch(rng.sample(train, batch), task="copy" if step <= copy_first else task))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # the last step's scores are printed after the loop
        if score and step < copy_first + steps and (
                step == copy_first or score_every and step > copy_first and (step - copy_first) % score_every == 0):
            scores = heldout_scores(model, score)
            print(f"  step {step} ({copy_first} copy first): preserved {scores['edits_preserved']:.3f}, followed "
                  f"{scores['edits_followed']:.3f}", flush=True)
        if step % 50 == 0 or step == copy_first + steps:
            model.eval()
            true, shuffled = heldout_loss(model, test, False, task), heldout_loss(model, test, True, task)
            model.train()
            print(f"  {overrides} step {step}: train loss {loss.item():.3f}, held-out loss {true:.3f} (shuffled "
                  f"reference {shuffled:.3f})", flush=True)
    if score:
        scores = heldout_scores(model, score)
        print(f"  {overrides} held-out edits generated: preserved {scores['edits_preserved']:.3f}, followed "
              f"{scores['edits_followed']:.3f}, both {scores['edits_both']:.3f} (n={len(score)})", flush=True)
    return true, shuffled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", required=True, help="a checkpoint folder (.../model); its DiT is rebuilt fresh")
    parser.add_argument("--variant", action="append", required=True,
                        help="comma-separated DiT keys, e.g. sample_size=32,attention_head_dim=64; the first is "
                             "the baseline")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=("copy", "edit"), default="copy",
                        help="copy: target = the edit's source; edit: target = the edited image")
    parser.add_argument("--copy-first", type=int, default=0,
                        help="steps of the copy task before --steps of --task (a curriculum)")
    parser.add_argument("--pool", type=int, default=1500, help="training edits generated (before the held-out split)")
    parser.add_argument("--score-every", type=int, default=0, help="with --score: also every N steps")
    parser.add_argument("--score", action="store_true", help="generate and score held-out edits at the end")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    edits = [s for s in generate_samples(args.pool, 5, 64, mix={"edit": 1.0}) if not sample_is_held_out(s)]
    test = world.eval_set(0, 8, 64, categories=("edit_recolor", "edit_move", "edit_remove"))
    score = world.eval_set(0, 8, 64, categories=world.KINDS["edit"]) if args.score else None
    if args.task == "edit":
        mse = copier_mse(load_checkpoint(args.init), edits[:300])
        print("a perfect copier's loss on these edits: " + ", ".join(f"{k} {v:.2f}" for k, v in mse.items()))
    results = []
    for variant in args.variant:
        overrides = {k: int(v) for k, v in (item.split("=") for item in variant.split(","))}
        results.append(run_variant(args.init, overrides, edits, test, args.steps, args.batch, args.lr, args.seed,
                                   args.task, score, args.copy_first, args.score_every))
    base = results[0][0]
    for variant, (true, shuffled) in zip(args.variant, results):
        print(f"{variant}: held-out {args.task} loss {true:.3f} ({true / base:.2f}x the first), shuffled {shuffled:.3f}")


if __name__ == "__main__":
    main()

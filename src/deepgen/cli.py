"""The `deepgen` command: one sub-command per user task, each living beside the code it drives.

Sub-command modules are imported lazily so `deepgen --help` stays fast (torch and friends load only when needed).
Each module exposes `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "check-contamination": ("deepgen.curation.contamination_cli", "flag prompts that match public benchmark prompts"),
    "describe": ("deepgen.model.describe", "parameter counts per component and stage, or GiB per GPU (--memory); no download"),
    "generate": ("deepgen.inference.cli_generate", "text-to-image from a prompt or a prompt file, written as PNGs"),
    "edit": ("deepgen.inference.cli_edit", "edit one or more reference images by an instruction, written as PNGs"),
    "convert": ("deepgen.model.convert", "convert an official DeepGen-1.0 checkpoint into a deepgen checkpoint"),
    "export": ("deepgen.model.export", "a complete, self-contained checkpoint folder from a (lean) stage checkpoint"),
    "example-weights": ("deepgen.model.example_weights", "small random models in the real Hugging Face layouts "
                        "(Qwen2.5-VL, SD3.5, CLIP) for conf/example_real"),
    "registry": ("deepgen.registry.cli", "registered models: list, show, promote by hand, roll the champion back"),
}


def report_error(command: str, err: Exception, debug: bool) -> int:
    """A user command's failure as one clear line on stderr (exit 2); the traceback only with --debug."""
    if debug:
        raise err
    kind = "" if isinstance(err, (FileNotFoundError, ValueError)) else f"{err.__class__.__name__}: "
    message = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
    print(f"deepgen {command}: {kind}{message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deepgen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text)
        if name == chosen:  # only the chosen command pays for its imports
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

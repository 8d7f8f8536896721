"""Host synchronisations per training step, today's trainer against an older commit's (issue 32).

    python bench/host_syncs.py [--before a4dbdaa,11ce32b] [--no-record]

Counts, with models/host_syncs.py, the points of each training step at which a GPU's host would wait
for the device (scalar reads, copies to the host, blocking copies to the device, data-dependent sizes),
for one trainer and for a pack of two, over one epoch of a small model that uses every option that
draws on the device or changes the step (noise, colour augmentation, the weight average, both ways of
decoding, attention, the plate). Runs on the CPU: the counter follows which tensors a GPU run would
hold on the device. The older commit's models/ is exported into a temporary folder with the counter
beside it and counted in a subprocess of its own.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = dict(f_dim=16, l_dim=8, n_dim=4, d_out_dim=16, epochs=1, batch_size=4, train_vi_len=8, val_vi_len=24,
              device="cpu", baselines=False, ema=0.9, tfr=0.5, tfr_sde=0, input_noise=0.1, colour_augment=True,
              colour_augment_share=0.5, output="residual", first_frame=True, appearance_attention=True,
              background_plate=True, lr_schedule="cosine")


def count(data_root: str) -> dict:
    """In the process of the checkout to count (its models/ first on sys.path): syncs per step."""
    import torch

    from models.config import TrainConfig
    from models.data import load_dance_data
    from models.host_syncs import HostSyncs
    from models.packed_trainer import PackedTrainer
    from models.trainer import Trainer
    torch.set_num_threads(1)

    class StepEnds:
        """At each step's end, the count since the previous one. A callback of any version's trainer: the
        hooks' signatures changed (models.records), so every other hook is a no-op taking anything."""
        counter: HostSyncs

        def __init__(self):
            self.counts, self.events = [], Counter()

        def __getattr__(self, name: str):
            if name.startswith("on_"):
                return lambda *args, **kwargs: None
            raise AttributeError(name)

        def on_step_end(self, *args):
            self.counts.append(self.counter.count)
            self.events.update(f"{kind} ({op})" for kind, op in self.counter.events.elements())
            self.counter.events.clear()

    def device_tensors(trainer) -> list:
        models = [trainer.model] + ([trainer.averaged] if trainer.averaged is not None else [])
        tensors = [t for model in models for t in [*model.parameters(), *model.buffers()]]
        # Adam's step counts live on the device only when it is fused or capturable: an older trainer's
        # plain Adam keeps them on the host, and reads them there.
        for group in trainer.optimizer.param_groups:
            on_device = group.get("fused") or group.get("capturable")
            tensors += [v for p in group["params"] for k, v in trainer.optimizer.state[p].items()
                        if torch.is_tensor(v) and (k != "step" or on_device)]
        if getattr(trainer, "data_on_device", False):
            tensors += [trainer.train_img, trainer.train_label]
        return tensors

    data = load_dance_data(data_root, train_vi_len=CONFIG["train_vi_len"], val_vi_len=CONFIG["val_vi_len"])
    results = {}
    for name, seeds in (("one trainer", [0]), ("a pack of two", [0, 1])):
        ends = StepEnds()
        trainers = [Trainer(TrainConfig(**CONFIG, seed=seed), data, callbacks=[ends] if k == 0 else [])
                    for k, seed in enumerate(seeds)]
        for trainer in trainers:
            trainer.start()
        ends.counter = HostSyncs("cpu", [t for trainer in trainers for t in device_tensors(trainer)],
                                 [trainer.noise for trainer in trainers])
        with ends.counter:
            PackedTrainer(trainers).advance() if len(trainers) > 1 else trainers[0].advance()
        results[name] = {"counts": ends.counts, "events": dict(ends.events)}
    return results


def export_models(commit: str, folder: Path) -> None:
    """`commit`'s models/ into `folder`, with today's counter beside it."""
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "models"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    shutil.copy(ROOT / "models" / "host_syncs.py", folder / "models" / "host_syncs.py")


def counted_in(path: Path, data_root: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(ROOT)])}
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import host_syncs; " \
           f"print(json.dumps(host_syncs.count({str(data_root)!r})))"
    # Run in `path`: "-c" puts the working folder first on sys.path, ahead of PYTHONPATH.
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=path, check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="a4dbdaa,11ce32b",
                        help="older commits, comma-separated (default: the trainer issue 32 was filed against, "
                             "whose steps read their loss and finite checks to the host; and the last commit "
                             "before this work, whose steps already stayed on the device but for two lerps)")
    parser.add_argument("--no-record", action="store_true", help="print the block, do not append it")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from common import record
    from models.synth import generate_dataset

    commits = args.before.split(",")
    with tempfile.TemporaryDirectory(prefix="host-syncs-") as scratch:
        scratch = Path(scratch)
        generate_dataset(scratch / "data", train_videos=4, val_videos=1, test_videos=1, frames=64, val_frames=48,
                         seed=1)
        results = {}
        for commit in commits:
            export_models(commit, scratch / commit)
            results[commit] = counted_in(scratch / commit, scratch / "data")
        results["now"] = counted_in(ROOT, scratch / "data")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    lines = ["Host synchronisations per training step (models/host_syncs.py), one epoch of a 16-wide model "
             "with noise, colour augmentation, the weight average, teacher forcing at 0.5, attention and the "
             f"plate; per step from the end of the previous one (the first includes the epoch's start); \"now\" "
             f"is {head} with this working tree:", ""]
    per_step = lambda counts: f"{sum(counts) / len(counts):g} per step ({len(counts)} steps)"   # noqa: E731
    for name in results["now"]:
        lines.append(f"- {name}: " + ", ".join(f"{label} {per_step(result[name]['counts'])}"
                                                for label, result in results.items()))
        for label, result in results.items():
            if result[name]["events"]:
                lines.append(f"  - {label}: " + ", ".join(f"{what} x{n}"
                                                           for what, n in result[name]["events"].items()))
    record("Host synchronisations per training step", lines, append=not args.no_record)


if __name__ == "__main__":
    main()

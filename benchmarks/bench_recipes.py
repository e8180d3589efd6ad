"""What one epoch of each recipe-study configuration costs, measured side by side in one run.

The recipe study (``eurosat_lib.experiments.recipe_study``) compares configurations by test
accuracy against training minutes, but its runs are timed one after another, hours and sessions
apart, and this machine's speed drifts: the same 128 px fine-tuning epoch took 84 s and 118 s on
the same CPU model two hours apart. A minute axis built from such runs mixes the recipes'
costs with the machine's mood. This benchmark measures every distinct *workload* of the study
(backbone width, input size, how much of the network trains, batch size) **interleaved and
repeated in one process**, so their ratios are taken side by side:

* **training** images/s of one epoch through ``training.fit_phase`` with the configuration's own
  phase settings (the first epoch, with graph tracing, is timed apart);
* **inference** images/s at that input size (the per-epoch validation pass and the head phase's
  feature extraction).

From these it prints each configuration's **modelled minutes**: feature extraction for the head
phase, then, per fine-tuning phase, epochs x (training images / training speed + validation
images / inference speed). The head's own epochs on cached features (tens of seconds) are left
out. Beside it, the minutes each configuration's run record measured (when the record exists
and its time is trusted), and their ratio: how fast the machine was during that run compared
with this benchmark.

    python benchmarks/bench_recipes.py                  # every workload of the cpu study, 3 rounds (~15 min on 2 cores)
    python benchmarks/bench_recipes.py --recipes base px224 finish224
    python benchmarks/bench_recipes.py --quick          # smoke sizes, synthetic images, seconds; meaningless figures
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from typing import Any

from _common import REPO, environment, epoch_clock, finish, make_parser, median, print_table, ratio

NAME = "recipes"


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=None, help="configurations to cover (default: all of the profile's)")
    p.add_argument("--images", type=int, default=None, help="training images per measured epoch (default 1024, 40 with --quick)")
    p.add_argument("--val-images", type=int, default=None, help="images per inference measurement (default 1024, 40 with --quick)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, 1 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    defaults = dict(images=(40, 1024), val_images=(40, 1024), rounds=(1, 3))
    for k, (quick_v, full_v) in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, quick_v if args.quick else full_v)
    return args


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one training epoch's cost depends on (the optimiser and loss settings do not matter)."""

    alpha: float
    image_size: int
    unfreeze: str
    batch_size: int

    @property
    def label(self) -> str:
        return f"alpha {self.alpha:g}, {self.image_size} px, unfreeze {self.unfreeze}, batch {self.batch_size}"


def study_plan(args) -> tuple[Any, list[tuple[Any, Any]]]:
    """The profile and its ``(recipe, spec)`` pairs (seed 0)."""
    from eurosat_lib.experiments import recipe_study as RS

    profile = RS.PROFILES["smoke" if args.quick else "cpu"]
    names = args.recipes or (["e3", "finish160"] if args.quick else list(profile.recipes))
    by_name = {r.name: r for r in RS.RECIPES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"error: --recipes {unknown} are not configurations of the study; choose from {sorted(by_name)}")
    return profile, [(by_name[n], RS.spec_for(by_name[n], profile, args.seed)) for n in names]


def phase_workloads(spec) -> list[tuple[Any, Workload]]:
    """``(phase, workload)`` for each phase after the head, in order (progressive resizing changes the size)."""
    out, size = [], spec.image_size
    for ph in spec.phases[1:]:
        size = ph.image_size or size
        out.append((ph, Workload(float(spec.backbone_kwargs["alpha"]), int(size), str(ph.unfreeze), int(ph.batch_size))))
    return out


def measure(w: Workload, spec, phase, train, val) -> dict[str, Any]:
    import keras

    from eurosat_lib import runs
    from eurosat_lib import training as T
    from eurosat_lib.experiments import core

    keras.backend.clear_session()
    T.set_seed(0)
    model = core.build_from_spec(dataclasses.replace(spec, image_size=w.image_size))
    clock = epoch_clock()
    before = runs.machine_load()
    ph = dataclasses.replace(phase, epochs=2, image_size=None, warmup_epochs=0, early_stopping=None)
    with tempfile.TemporaryDirectory() as tmp:
        T.fit_phase(model, train, None, ph, seed=0, run_dir=tmp, tensorboard=False, checkpoints=False, extra_callbacks=[clock])
    T.predict_batches(model, val.images[:64], 256)  # warm: the first call traces
    t = time.perf_counter()
    T.predict_batches(model, val.images, 256)
    infer = len(val) / (time.perf_counter() - t)
    after = runs.machine_load()
    return {"train_images_per_s": len(train) / clock.seconds[-1], "first_epoch_seconds": clock.seconds[0],
            "infer_images_per_s": infer, "load_before": before, "load_after": after,
            "contended": runs.is_contended(before, after)}  # fmt: skip


def modelled_minutes(spec, n_train: int, n_val: int, speeds: dict[Workload, dict[str, float]], head_infer: float,
                     num_classes: int = 10) -> float:
    """Feature extraction for the head, then each phase's epochs of training and validation (of the
    images it scores each epoch: ``val_n_per_class`` per class when set), at the measured speeds."""
    seconds = (n_train + n_val) / head_infer
    for ph, w in phase_workloads(spec):
        s = speeds[w]
        watched = n_val if ph.val_n_per_class is None else min(n_val, ph.val_n_per_class * num_classes)
        seconds += ph.epochs * (n_train / s["train_images_per_s"] + watched / s["infer_images_per_s"])
    return seconds / 60.0


def configuration_minutes(plan, speeds: dict[Workload, dict[str, float]], rounds: list[dict[str, dict[str, Any]]],
                          n_train: int, n_val: int, num_classes: int, base_name: str) -> dict[str, dict[str, Any]]:
    """Each configuration's modelled minutes at the median speeds, its ratio to ``base_name``, and that
    ratio's range over the rounds.

    Within one round every workload was timed minutes apart, so a round's ratio is a paired
    comparison; its spread over rounds says how far the machine's drift moves the ratio (the
    rounds disagreed by up to ~2x on single workloads), which the median alone hides.
    """

    def at(sp: dict[Workload, dict[str, float]], spec) -> float:
        # the head's feature extraction is inference at the head's size: the median over that size's workloads
        head = median(v["infer_images_per_s"] for w, v in sp.items() if w.image_size == spec.image_size)
        return modelled_minutes(spec, n_train, n_val, sp, head, num_classes)

    per_round = [{w: rd[w.label] for w in speeds} for rd in rounds]
    specs = dict((r.name, s) for r, s in plan)
    modelled = {name: (at(speeds, spec), [at(sp, spec) for sp in per_round]) for name, spec in specs.items()}
    base_all, base_rounds = modelled[base_name]
    out = {}
    for name, (m, by_round) in modelled.items():
        over = [mr / br for mr, br in zip(by_round, base_rounds)]
        out[name] = {"modelled_minutes": m, "modelled_minutes_by_round": by_round, "over_base": m / base_all,
                     "over_base_range": [min(over), max(over)] if over else [m / base_all] * 2}  # fmt: skip
    return out


def recorded_minutes(profile_name: str) -> tuple[dict[str, float], str | None]:
    """Trusted minutes of seed 0 of each configuration's committed run, by configuration, and the
    CPU they were timed on (the study's main time axis; None before any run)."""
    from eurosat_lib.summaries import recipes as RP

    folder = REPO / "book" / "runs" / profile_name / "recipe_study"
    rows = RP.read_rows(folder) if folder.is_dir() else []
    machine = RP.study_machine(rows) if rows else None
    return {r["recipe"]: RP.trusted_minutes(r, machine) for r in rows if r["seed"] == 0}, machine


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    os.environ.setdefault("EUROSAT_PROGRESS", "0")
    from eurosat_lib import data as D

    profile, plan = study_plan(args)
    data = D.make_synthetic(n_per_class=max(30, args.images // 5), seed=0) if args.quick else D.load_eurosat(download=False)
    per_class = max(1, args.images // data.num_classes)
    train = data.get_split("train", n_per_class=per_class, seed=args.seed)
    val = data.get_split("val", n_per_class=max(1, args.val_images // data.num_classes), seed=args.seed)
    # the full study's sizes, for the modelled minutes
    full_train = len(data.get_split("train", n_per_class=profile.n_per_class)) if profile.n_per_class else len(data.split_indices("train"))
    full_val = len(data.get_split("val", n_per_class=profile.val_n_per_class)) if profile.val_n_per_class else len(data.split_indices("val"))  # fmt: skip

    jobs: dict[Workload, tuple[Any, Any]] = {}
    for _, spec in plan:
        for ph, w in phase_workloads(spec):
            jobs.setdefault(w, (spec, ph))
    head_sizes = {spec.image_size for _, spec in plan}
    for size in sorted(head_sizes):  # the head's feature extraction is inference at the head's size
        if not any(w.image_size == size for w in jobs):
            spec = next(s for _, s in plan if s.image_size == size)
            ph = spec.phases[1]
            jobs[Workload(float(spec.backbone_kwargs["alpha"]), size, str(ph.unfreeze), int(ph.batch_size))] = (spec, ph)
    order = sorted(jobs, key=lambda w: (w.image_size, w.alpha, w.unfreeze))
    print(f"{len(train)} training / {len(val)} inference images per measurement ({'synthetic' if args.quick else 'real EuroSAT'}), "
          f"{len(order)} workloads of {len(plan)} configurations, {args.rounds} interleaved rounds, {os.cpu_count()} cores")  # fmt: skip

    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        todo = order if r % 2 == 0 else list(reversed(order))
        rounds.append({})
        for w in todo:
            spec, ph = jobs[w]
            rounds[-1][w.label] = measure(w, spec, ph, train, val)
        print(f"  round {r + 1}: " + "; ".join(f"{k}: {v['train_images_per_s']:.0f} img/s" for k, v in rounds[-1].items()))

    speeds = {w: {"train_images_per_s": median(rd[w.label]["train_images_per_s"] for rd in rounds),
                  "infer_images_per_s": median(rd[w.label]["infer_images_per_s"] for rd in rounds)} for w in order}  # fmt: skip
    rows = []
    for w in order:
        tr = [rd[w.label]["train_images_per_s"] for rd in rounds]
        rows.append((w.label, speeds[w]["train_images_per_s"], min(tr), max(tr), speeds[w]["infer_images_per_s"]))
    print_table("Training and inference speed per workload (median over rounds)",
                ["workload", "train img/s", "min", "max", "inference img/s"], rows)  # fmt: skip

    recorded, recorded_on = recorded_minutes(profile.name)
    base_name = "base" if any(r.name == "base" for r, _ in plan) else plan[0][0].name
    figures: dict[str, Any] = {"train_images": len(train), "inference_images": len(val), "study_train_images": full_train,
                               "study_val_images": full_val, "rounds": rounds,
                               "speeds": {w.label: speeds[w] for w in order},
                               "configurations": configuration_minutes(plan, speeds, rounds, full_train, full_val,
                                                                       data.num_classes, base_name)}  # fmt: skip
    table = []
    for recipe, _ in plan:
        c = figures["configurations"][recipe.name]
        rec = recorded.get(recipe.name, float("nan"))
        c.update(recorded_minutes=rec, recorded_over_modelled=ratio(rec, c["modelled_minutes"]))
        lo, hi = c["over_base_range"]
        table.append((recipe.name, c["modelled_minutes"], c["over_base"], lo, hi, rec, c["recorded_over_modelled"]))
    print_table("Minutes of training per configuration: modelled at this run's speeds (× base: median speeds; low/high: "
                "the same ratio within each round), and as the run recorded them",
                ["configuration", "modelled min", "× base", "low", "high", "recorded min", "recorded / modelled"], table)  # fmt: skip
    ratios = {f"{name}_over_{base_name}": c["over_base"] for name, c in figures["configurations"].items()}
    contended = [f"round {i + 1} {k}" for i, rd in enumerate(rounds) for k, v in rd.items() if v["contended"]]
    figures["contended"] = contended
    notes = ["modelled minutes leave out the head's epochs on cached features (tens of seconds) and checkpoint saves"]
    from eurosat_lib.summaries.recipes import machine_name

    env = environment()
    here = machine_name(env)
    figures.update(machine=here, recorded_on=recorded_on)
    if recorded_on and recorded_on != here:
        # the same name is not the same speed (two 'AMD EPYC' VMs were ~5x apart): say which CPUs are compared
        notes.append(f"recorded minutes were timed on {recorded_on}, this run on {here}: recorded / modelled "
                     "compares the two CPUs as well as the machine's speed during the run")  # fmt: skip
    if contended:
        notes.append("CONTENDED (another job kept a core busy when these started): " + ", ".join(contended))
    return finish(args, NAME, figures=figures, ratios=ratios, goals={}, notes=notes, started=started, env=env)


if __name__ == "__main__":
    sys.exit(main())

"""Part members: what a real member's images cost and gain. Preparing large 16-bit SEM
TIFFs through the on-disk cache (first run against later runs), the member process's
peak memory as its folder grows, and centralized accuracy on synthetic micrographs with
tiles at a physical scale against the whole image resized."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from fractofl_cli import fractofl_executable, run_fractofl
from outcome import PartOutcome
from plan import PROGRAMS_DIR, Plan
from proc import bench_env
from report import fmt, markdown_grid, ratio

from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.synth.micrograph import MicrographSpec, write_micrograph

POOL = 16  # distinct micrographs rendered; the folders hold copies one trailing byte apart
MAGNIFICATIONS = (500.0, 1000.0, 2000.0, 5000.0)
ADDED = 10


def _pool(folder: Path, width: int, height: int) -> list[Path]:
    """POOL micrographs of every class, magnification and vendor at ``width`` x ``height``."""
    spec = MicrographSpec(width=width, height=height, texture_px=min(768, max(64, width // 2)))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(POOL):
        name = DEFAULT_CLASSES[index % len(DEFAULT_CLASSES)]
        magnification = MAGNIFICATIONS[(index // len(DEFAULT_CLASSES)) % len(MAGNIFICATIONS)]
        path = folder / f"{name}-{index}.tif"
        rng = np.random.default_rng(index)
        write_micrograph(path, name, magnification, ("fei", "zeiss")[index % 2], rng, spec)
        paths.append(path)
    return paths


def _fill(folder: Path, pool: list[Path], start: int, stop: int) -> None:
    """Files ``start`` to ``stop`` of a member folder: distinct content (TIFF readers
    ignore the trailing bytes), each class's images in its folder."""
    for index in range(start, stop):
        source = pool[index % len(pool)]
        target = folder / source.name.split("-")[0] / f"{index:05d}.tif"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        with target.open("ab") as handle:
            handle.write(index.to_bytes(4, "little"))


def _member(
    plan: Plan, out: PartOutcome, label: str, folder: Path, cache: Path, train: bool
) -> dict[str, float]:
    command = [
        sys.executable,
        str(PROGRAMS_DIR / "member_images.py"),
        str(folder),
        str(cache),
        str(plan.members.pixel_size_um),
        *(["--train"] if train else []),
    ]
    log = plan.logs_dir / f"members-{label.replace(' ', '-')}.log"
    finished = out.run_step(label, command, log, plan.timeout_s, env=bench_env())
    result: dict[str, float] = json.loads(log.read_text().strip().splitlines()[-1])
    result["wall_s"] = finished.wall_s
    return result


def _preparation(plan: Plan, out: PartOutcome, work: Path) -> None:
    sizes = plan.members
    width, height = sizes.prepare_size
    pool = _pool(work / "pool-prepare", width, height)
    folder, cache = work / "prepare", work / "cache-prepare"
    _fill(folder, pool, 0, sizes.prepare_images)
    first = _member(plan, out, "prepare first run", folder, cache, train=False)
    later = _member(plan, out, "prepare later run", folder, cache, train=False)
    _fill(folder, pool, sizes.prepare_images, sizes.prepare_images + ADDED)
    added = _member(plan, out, f"prepare after adding {ADDED}", folder, cache, train=False)
    rows = [
        [
            label,
            str(int(r["images"])),
            str(int(r["decoded"])),
            fmt(r["prepare_s"], 1),
            fmt(ratio(r["prepare_s"], first["prepare_s"]), 3),
        ]
        for label, r in (
            ("first run", first),
            ("later run", later),
            (f"{ADDED} images added", added),
        )
    ]
    out.tables.append(
        f"Preparing {sizes.prepare_images} TIFFs of {width} x {height}, 16-bit (FEI and Zeiss "
        f"tags, data bar), at {sizes.pixel_size_um} um per pixel, in one member process:\n\n"
        + markdown_grid(["Run", "Images", "Decoded", "Prepare s", "s / first run"], rows)
    )
    out.data["preparation"] = {"first": first, "later": later, "added": added}
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)


def _memory(plan: Plan, out: PartOutcome, work: Path) -> None:
    sizes = plan.members
    width, height = sizes.memory_size
    pool = _pool(work / "pool-memory", width, height)
    folder, cache = work / "memory", work / "cache-memory"
    rows, results, done = [], {}, 0
    for count in sizes.memory_steps:
        _fill(folder, pool, done, count)
        done = count
        result = _member(plan, out, f"memory {count} images", folder, cache, train=True)
        results[count] = result
        rows.append(
            [
                str(count),
                str(int(result["decoded"])),
                fmt(result["prepared_gib"], 2),
                fmt(result["peak_rss_gib"], 2),
                fmt(
                    ratio(result["peak_rss_gib"], results[sizes.memory_steps[0]]["peak_rss_gib"]), 2
                ),
                fmt(result["prepare_s"], 0),
                fmt(result["train_s"], 0),
            ]
        )
    out.tables.append(
        f"A member process preparing its folder (TIFFs of {width} x {height}) and training "
        "one pass of 4 tiles per image (small CNN); each step adds images to the last:\n\n"
        + markdown_grid(
            [
                "Images",
                "Decoded",
                "Prepared GiB on disk",
                "Peak RSS GiB",
                "RSS / first",
                "Prepare s",
                "Train s",
            ],
            rows,
        )
    )
    out.data["memory"] = {str(k): v for k, v in results.items()}
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)


def _accuracy(plan: Plan, out: PartOutcome, work: Path) -> None:
    sizes = plan.members
    data = work / "micrographs"
    if data.exists():
        shutil.rmtree(data)
    width, height = sizes.accuracy_size
    out.run_step(
        "synth micrographs",
        [
            fractofl_executable(),
            "synth",
            str(data),
            "--micrographs",
            "--members",
            "2",
            "--per-class",
            str(sizes.accuracy_per_class),
            "--test-per-class",
            str(sizes.accuracy_test_per_class),
            "--size",
            f"{width}x{height}",
        ],
        plan.logs_dir / "members-synth.log",
        plan.timeout_s,
        env=bench_env(),
    )
    common = [
        "data=folders",
        f"data.root={data}/members",
        f"data.test_dir={data}/coordinator-test",
        "federation.members=2",
        f"federation.rounds={sizes.accuracy_rounds}",
        f"data.cache_dir={work}/cache-accuracy",
    ]
    runs = {
        f"whole image resized to {sizes.whole_image_size} px": [
            f"model.image_size={sizes.whole_image_size}"
        ],
        f"{sizes.tile} px tiles at {sizes.pixel_size_um} um per pixel": [
            f"model.image_size={sizes.tile}",
            f"model.pixel_size_um={sizes.pixel_size_um}",
        ],
    }
    rows, results = [], {}
    for label, overrides in runs.items():
        name = "members-" + ("tiles" if "tiles" in label else "whole")
        result = run_fractofl(
            "centralized", [*common, *overrides], plan.runs_dir, name, plan.logs_dir, plan.timeout_s
        )
        out.record(label, result.finished, result.ok)
        results[label] = result
    baseline = next(iter(results.values())).final_accuracy
    for label, result in results.items():
        rows.append(
            [
                label,
                fmt(result.final_accuracy),
                fmt(result.final_macro_f1),
                fmt(ratio(result.final_accuracy, baseline), 2),
                fmt(result.finished.wall_s, 0),
            ]
        )
    out.tables.append(
        f"Centralized training (small CNN, {sizes.accuracy_rounds} rounds) on synthetic "
        f"micrographs of {width} x {height} at 500x-5000x (2 x {sizes.accuracy_per_class} "
        f"per class; {sizes.accuracy_test_per_class} per class to test):\n\n"
        + markdown_grid(["Input", "Test acc", "Macro-F1", "Acc / whole image", "Wall s"], rows)
    )
    out.data["accuracy"] = {
        label: {"accuracy": r.final_accuracy, "macro_f1": r.final_macro_f1}
        for label, r in results.items()
    }


def _member_sized_rounds(plan: Plan, out: PartOutcome) -> None:
    """The federation part's simulation and warm deployment on member-sized work."""
    from deployment import prepare_pki

    from parts.federation import (
        SEPARATE_EVALUATION,
        SIMULATION,
        Measured,
        Setting,
        cpu_table,
        deployment,
        simulation,
        table,
    )

    sizes = plan.members
    members = sizes.round_members
    work = plan.fresh_dir("members-rounds")
    width, height = sizes.round_size
    data = work / "data"
    out.run_step(
        "synth micrographs for the rounds",
        [
            fractofl_executable(), "synth", str(data), "--micrographs", "--members",
            str(members), "--per-class", str(sizes.round_per_class), "--test-per-class",
            str(sizes.accuracy_test_per_class), "--size", f"{width}x{height}",
        ],
        plan.logs_dir / "members-rounds-synth.log",
        plan.timeout_s,
        env=bench_env(),
    )  # fmt: skip
    model = (
        "data=folders", f"data.root={data}/members", f"data.test_dir={data}/coordinator-test",
        f"data.cache_dir={work}/simulation-cache", "model=resnet18",
        f"model.image_size={sizes.tile}",
        f"model.pixel_size_um={sizes.pixel_size_um}", "train.local_epochs=1",
        f"federation.min_train_members={members}", f"federation.min_evaluate_members={members}",
    )  # fmt: skip
    setting = Setting(plan, work, members, sizes.round_rounds, work_overrides=model)
    prepare_pki(work, members)
    separate = "(1') as (1), members evaluate in an exchange of their own"
    first = simulation(setting, out)
    shutil.rmtree(work / "simulation-cache")  # (1') prepares its images as (1) did
    measured: list[Measured] = [
        first,
        simulation(setting, out, "simulation_separate", separate, (SEPARATE_EVALUATION,)),
        deployment(setting, out, "plain"),
        deployment(setting, out, "plain_separate"),
        deployment(setting, out, "memory"),
    ]
    measured[2].label = "(2) deployment, plain text, warm members"
    out.tables.append(
        f"Member-sized work: {members} members with {4 * sizes.round_per_class} micrographs "
        f"of {width} x {height} each, ResNet-18 on {sizes.tile}-px tiles at "
        f"{sizes.pixel_size_um} um per pixel (4 tiles per image, 1 local epoch), "
        f"{sizes.round_rounds} rounds; {SIMULATION} against the Deployment Engine with warm "
        "members (plain text), all on this machine; (3) keeps Flower's state and messages "
        "in its in-memory store instead of the SuperLink's SQLite file "
        "(`deployment.superlink_store=memory`, plain-text federations only). Members "
        "score each round's model in the next round's training reply "
        "(`federation.evaluate_with_training`, the default; the last round's model in an "
        "exchange of its own), except in (1') and (2'), where every round has an "
        "evaluation exchange (compare (2') with (1')). Every message's arrays travel "
        "packed into one (`updates.pack_arrays`). Members' "
        "SuperNodes ask for instructions every 0.5 s when idle (`deployment.member_poll_s`) "
        "and their SuperExecs ask for a ClientApp every 0.1 s "
        "(`deployment.member_task_poll_s`). "
        "Round 1 "
        "includes each member's first preparation of its images in every row (each row "
        "starts with an empty cache); rounds 2-N leave it out:\n\n" + table(measured)
    )
    out.tables.append(cpu_table(measured, sizes.round_rounds))
    out.data["rounds"] = {m.label: m.seconds_per_round for m in measured}


def run_members(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """Preparation, memory and accuracy of a member's real-sized images."""
    out = PartOutcome()
    work = plan.fresh_dir("members")
    _preparation(plan, out, work)
    _memory(plan, out, work)
    _accuracy(plan, out, work)
    shutil.rmtree(work, ignore_errors=True)
    return out


def run_member_rounds(plan: Plan, shared: dict[str, object]) -> PartOutcome:
    """Member-sized rounds, simulated and deployed (a part of its own: it runs in minutes,
    the rest of ``members`` in half an hour)."""
    out = PartOutcome()
    _member_sized_rounds(plan, out)
    return out

"""`dcganlab`: one command per pipeline stage; dvc.yaml calls these.

Each command only parses, calls the stage function, and reports. Bad input ends with one
line on stderr and a non-zero exit (2 for invalid params), never a traceback. Stage
modules are imported inside the commands so `--help` and the data stages stay fast.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from dcganlab.core.errors import UserError, quote

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, sample, evaluate and compare the DCGAN family (DVC stages + MLflow tracking).",
)

ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="params file; paths are relative to its folder")
StageOpt = typer.Option(
    False,
    "--dvc-stage",
    help="take the name from $DVC_STAGE (`<command>@<name>`, set by DVC "
    "for every stage): how dvc.yaml passes names, so that none is ever shell code",
)


def _run(work: Callable[[], object], share_cpu: str = "") -> None:
    """`work()`, with bad input as one line and an exit code. `share_cpu`: a stage that computes
    with torch takes only its share of the cores (cpu_share.py) before it starts."""
    from dcganlab.core import cpu_share

    try:
        with cpu_share.claimed(share_cpu) if share_cpu else contextlib.nullcontext():
            work()
    except UserError as err:
        # a training run stopped by SIGTERM / Ctrl-C (it checkpointed) is not an error: no "error:"
        typer.echo(str(err) if getattr(err, "interrupted", False) else f"error: {err}", err=True)
        raise typer.Exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130)
    except Exception as exc:  # a bug, not bad input: still one line unless asked for the traceback
        if os.environ.get("DCGANLAB_DEBUG"):
            raise
        typer.echo(
            f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            f"(set DCGANLAB_DEBUG=1 for the traceback)",
            err=True,
        )
        raise typer.Exit(1)


def _names(chosen: Optional[str], available: dict, kind: str) -> list[str]:
    if chosen is None:
        return list(available)
    if chosen not in available:
        from dcganlab.core.config import listing

        raise UserError(f"unknown {kind} {quote(chosen)} (params.yaml has: {listing(available)})")
    return [chosen]


def _chosen(command: str, given: Optional[str], from_stage: bool) -> Optional[str]:
    """The name a stage command works on: `given`, or with --dvc-stage the key of DVC's foreach
    stage. dvc.yaml's `cmd:` holds no `${key}`: a shell would run a name like `x;rm -rf ~` as code
    before dcganlab could refuse it. DVC puts the stage's address in the environment instead
    (dvc/stage/run.py, prepare_kwargs): `train@NAME`, or `sub/dvc.yaml:train@NAME` outside the root."""
    if not from_stage:
        return given
    if given is not None:
        raise UserError(f"{command}: give a name or --dvc-stage, not both")
    address, prefix = os.environ.get("DVC_STAGE", ""), f"{command}@"
    if address.startswith(prefix):
        return address[len(prefix) :]
    at = address.find(f":{prefix}")  # DVC's foreach keys may hold ':', its file paths hardly ':train@'
    if at < 0:
        raise UserError(
            f"{command} --dvc-stage: $DVC_STAGE is {quote(address)}, not '{prefix}<name>' "
            f"(DVC sets it when it runs a stage)"
        )
    return address[at + 1 + len(prefix) :]


def _params(path: Path):
    from dcganlab.core import cpu_share
    from dcganlab.core.config import load_params

    p = load_params(path)
    cpu_share.fix(p.train.threads)  # a stage sharing the CPU: train.threads > 0 fixes its thread count
    return p


@app.command()
def fetch(
    dataset: Optional[str] = typer.Argument(None, help="dataset name in params.yaml (default: all)"),
    from_stage: bool = StageOpt,
    params: Path = ParamsOpt,
) -> None:
    """Fetch raw data. Reads params `datasets.<name>` (source, path, split, limit); writes
    data/raw/<name>/images/ and data/raw/<name>/manifest.csv (file, label, source, checksum).
    Download sources cache archives in data/downloads/."""

    def work():
        from dcganlab.core import paths
        from dcganlab.stages import fetch as stage

        chosen = _chosen("fetch", dataset, from_stage)
        p = _params(params)
        for name in _names(chosen, p.datasets, "dataset"):
            manifest = stage.run(p, name)
            typer.echo(f"fetch {name}: {len(manifest)} images -> {paths.raw_dir(p.root, name)}")

    _run(work)


@app.command()
def prepare(
    dataset: Optional[str] = typer.Argument(None, help="dataset name in params.yaml (default: all)"),
    from_stage: bool = StageOpt,
    params: Path = ParamsOpt,
) -> None:
    """Detect/crop faces (if `detect_faces`), resize, convert channels. Reads data/raw/<name>/;
    writes data/processed/<name>/ (images.npy N x C x H x W uint8, labels.npy, split.npy,
    manifest.csv with a status per input file, stats.json)."""

    def work():
        from dcganlab.core import paths
        from dcganlab.stages import prepare as stage

        chosen = _chosen("prepare", dataset, from_stage)
        p = _params(params)
        for name in _names(chosen, p.datasets, "dataset"):
            stats = stage.run(p, name)
            typer.echo(
                f"prepare {name}: kept {stats['kept']} of {stats['images_in']} "
                f"(discarded: {stats['discarded'] or 'none'}) -> {paths.processed_dir(p.root, name)}"
            )

    _run(work)


@app.command()
def faces(
    src: Path = typer.Argument(..., help="folder of photos, searched recursively"),
    out: Path = typer.Argument(..., help="output folder for the crops"),
    size: int = typer.Option(64, "--size", help="side of the square crops, pixels"),
    channels: int = typer.Option(3, "--channels", help="1 (gray) or 3 (RGB)"),
    margin: float = typer.Option(0.25, "--margin", help="context around the face, fraction of its side"),
    min_face_size: int = typer.Option(24, "--min-face-size", help="smallest face to detect, pixels"),
    workers: int = typer.Option(1, "--workers", help="processes"),
) -> None:
    """Standalone face preparation: Haar-detect the largest face in every image under SRC,
    crop it square with a margin, resize, and write OUT/<same path>.png plus OUT/manifest.csv
    (file, status: kept/no_face/too_small/too_large/empty/not_an_image/truncated/unreadable/ignored,
    reason, crop) and OUT/stats.json (counts by status, ignored entries by reason)."""

    def work():
        from dcganlab.data.faces import CropSettings
        from dcganlab.data.prepare import prepare_folder

        if size < 8 or channels not in (1, 3) or workers < 1:
            raise UserError("--size must be >= 8, --channels 1 or 3, --workers >= 1")
        if not 0.0 <= margin <= 2.0 or min_face_size < 1:  # the same ranges as params.yaml's
            raise UserError("--margin must be in 0..2, --min-face-size >= 1")
        crop = CropSettings(image_size=size, channels=channels, margin=margin, min_face_size=min_face_size)
        manifest = prepare_folder(src, out, crop, workers)
        counts = manifest["status"].value_counts().to_dict()
        typer.echo(f"faces: {counts.get('kept', 0)} of {len(manifest)} kept ({counts}) -> {out}")

    _run(work)


@app.command()
def extractor(
    dataset: Optional[str] = typer.Argument(None, help="dataset name (default: all)"),
    from_stage: bool = StageOpt,
    params: Path = ParamsOpt,
) -> None:
    """Train the offline `domain` feature extractor for FID/KID on a dataset's real training
    split, then calibrate it (`dcganlab calibrate`). Reads data/processed/<name>/ and params
    `extractor`, `evaluate.pr_k`, `evaluate.kid_subset_size`; writes models/extractors/<name>.pt,
    .json (kind, feature size, test accuracy or error, training seconds) and .calibration.json."""

    def work():
        from dcganlab.evaluation.extractor import describe
        from dcganlab.stages import extractor as stage

        chosen = _chosen("extractor", dataset, from_stage)
        p = _params(params)
        for name in _names(chosen, p.datasets, "dataset"):
            info, table, out = stage.run(p, name)
            typer.echo(f"extractor {name}: {describe(info)} ({info['train_seconds']:.0f} s)")
            _say_calibrated(name, table, out)

    _run(work, share_cpu="extractor")


def _say_calibrated(name: str, table: dict, out: Path) -> None:
    checks = table["checks"]
    typer.echo(
        f"calibration {name} ({table['seconds']:.0f} s): {table['headline']}; min Spearman "
        f"{checks['spearman_min']:.2f} ({checks['spearman_min_family']}) -> {out}"
    )


@app.command()
def calibrate(
    dataset: Optional[str] = typer.Argument(None, help="dataset name (default: all)"), params: Path = ParamsOpt
) -> None:
    """Calibrate a dataset's trained extractor (the extractor stage does this after training): FID,
    KID and precision/recall/density/coverage of N training-split vs N held-out real images
    disturbed at increasing levels (noise, blur, black squares, swirl, salt-and-pepper, a faint
    checkerboard; fewer classes for labelled data). Writes models/extractors/<name>.calibration.json."""

    def work():
        from dcganlab.stages import calibrate as stage

        p = _params(params)
        for name in _names(dataset, p.datasets, "dataset"):
            _say_calibrated(name, *stage.run(p, name))

    _run(work, share_cpu="calibrate")


@app.command()
def train(
    experiment: Optional[str] = typer.Argument(None, help="experiment name (default: all)"),
    from_stage: bool = StageOpt,
    params: Path = ParamsOpt,
) -> None:
    """Train an experiment's GAN (resumes from models/<exp>/train/checkpoint.pt). Reads
    data/processed/<dataset>/ and params `experiments.<exp>`, `train`, `seed`; writes
    models/<exp>/model.pt, models/<exp>/train/ (checkpoint, per-epoch generators and
    grids), reports/<exp>/losses.csv and train.json; logs an MLflow run."""

    def work():
        from dcganlab.stages import train as stage

        chosen = _chosen("train", experiment, from_stage)
        p = _params(params)
        for name in _names(chosen, p.experiments, "experiment"):
            summary = stage.run(p, name)
            if not summary:  # a torchrun process other than rank 0: rank 0 reports
                continue
            typer.echo(
                f"train {name}: {summary['epochs']} epochs, {summary['images_per_s']:.0f} img/s, "
                f"{summary['train_wall_s']:.0f} s"
            )

    _run(work, share_cpu="train")


@app.command()
def sample(
    experiment: Optional[str] = typer.Argument(None, help="experiment name (default: all)"),
    label: Optional[str] = typer.Option(None, "--label", help="conditional models: draw this class only"),
    num: int = typer.Option(16, "--num", help="with --label: how many samples"),
    out: Optional[Path] = typer.Option(None, "--out", help="with --label: output PNG"),
    from_stage: bool = StageOpt,
    params: Path = ParamsOpt,
) -> None:
    """Sample a trained model. Reads models/<exp>/model.pt, its per-epoch grids in
    models/<exp>/train/grids/, models/extractors/<dataset>.pt and params `sample`; writes
    reports/samples/<exp>/: grid.png (non-cherry-picked), interpolation.png, nice.png
    (discriminator-ranked), classes.png (conditional: one row per class), arithmetic.png
    (latent vector arithmetic), progression.png (epochs 1, 5, 10, 20 and the last),
    d_filters.png (first discriminator layer), figures.json (what they show). With --label,
    writes only --out (default reports/<exp>/label_<label>.png)."""

    def work():
        from dcganlab.core import paths
        from dcganlab.stages import sample as stage

        chosen = _chosen("sample", experiment, from_stage)
        p = _params(params)
        if label is not None:
            if chosen is None:
                raise UserError("--label needs an experiment name")
            p.experiment(chosen)
            path = stage.draw_label(
                p, chosen, label, num, out or paths.report_dir(p.root, chosen) / f"label_{label}.png"
            )
            typer.echo(f"sample {chosen}: {num} x '{label}' -> {path}")
            return
        for name in _names(chosen, p.experiments, "experiment"):
            files = stage.run(p, name)
            typer.echo(f"sample {name}: {', '.join(files.values())}")

    _run(work, share_cpu="sample")


@app.command()
def evaluate(
    experiment: Optional[str] = typer.Argument(None, help="experiment name (default: all)"),
    from_stage: bool = StageOpt,
    params: Path = ParamsOpt,
) -> None:
    """FID/KID, precision/recall, diversity, class accuracy / mode coverage, linear probe of a
    trained generator (and its discriminator). Reads models/<exp>/model.pt,
    models/extractors/<dataset>.pt, data/processed/<dataset>/, the InceptionV3 weights if
    present (`evaluate.inception_weights`); writes reports/eval/<exp>.json (each number with
    extractor, counts and split)."""

    def work():
        from dcganlab.stages import evaluate as stage

        chosen = _chosen("evaluate", experiment, from_stage)
        p = _params(params)
        for name in _names(chosen, p.experiments, "experiment"):
            m = stage.run(p, name)
            typer.echo(
                f"evaluate {name}: FID {m['fid']:.3f} KID {m['kid']:.4f} (floor FID {m['fid_real_floor']}; "
                f"{m['extractor']}; {m['n_fake']} fake vs {m['n_real']} real {m['reference_split']}); "
                f"coverage {m['coverage']:.3f} (floor {m['coverage_real_floor']}) density {m['density']:.3f} "
                f"precision {m['precision']:.3f} recall {m['recall']:.3f} (k={m['prdc_k']}); "
                f"inception {m['inception_status']}"
            )

    _run(work, share_cpu="evaluate")


@app.command()
def score(
    dataset: str = typer.Argument(..., help="dataset name in params.yaml: whose held-out images to compare with"),
    images: str = typer.Argument(..., help="folder of PNG/JPEG, .npy/.npz uint8 (N,H,W[,C]), or runs:/ models:/ URI"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the JSON here instead of stdout"),
    params: Path = ParamsOpt,
) -> None:
    """Score any images with exactly the metrics `evaluate` uses (same extractor, held-out
    reference images, sample count and seed): FID/KID, precision/recall, density/coverage,
    diversity, mode coverage, with their real floors and the extractor's calibration headline.
    For samples of another implementation or a paper's released samples. JSON on stdout or --out."""

    def work():
        import json

        from dcganlab.core.atomic import write_json
        from dcganlab.stages import score as stage

        p = _params(params)
        m = stage.run(p, dataset, images)
        if out is None:
            typer.echo(json.dumps(m, indent=2))
        else:
            write_json(out, m)
        typer.echo(
            f"score {dataset}: FID {m['fid']:.3f} coverage {m['coverage']:.3f} density {m['density']:.3f} "
            f"(k={m['prdc_k']}; real floor coverage {m['coverage_real_floor']}; {m['n_fake']} vs {m['n_real']} "
            f"{m['reference_split']}); {m['calibration']}" + (f" -> {out}" if out else ""),
            err=True,
        )

    _run(work, share_cpu="score")


@app.command()
def quality(
    experiment: Optional[str] = typer.Argument(None, help="experiment name (default: all)"),
    from_stage: bool = StageOpt,
    params: Path = ParamsOpt,
) -> None:
    """FID/KID of every saved epoch generator (cheap: `evaluate.curve_samples` images). Reads
    models/<exp>/train/ (generators, checkpoint history), models/extractors/<dataset>.pt,
    data/processed/<dataset>/; writes reports/quality/<exp>.csv (epoch, wall_s, fid, kid,
    n_fake, n_real) and MLflow metrics fid_curve/kid_curve by epoch."""

    def work():
        from dcganlab.core.paths import quality_path
        from dcganlab.stages import quality as stage

        chosen = _chosen("quality", experiment, from_stage)
        p = _params(params)
        for name in _names(chosen, p.experiments, "experiment"):
            table = stage.run(p, name)
            last = table.iloc[-1]
            typer.echo(
                f"quality {name}: {len(table)} epochs, last FID {last['fid']:.3f} "
                f"({int(last['n_fake'])} vs {int(last['n_real'])} images) -> {quality_path(p.root, name)}"
            )

    _run(work, share_cpu="quality")


@app.command()
def report(params: Path = ParamsOpt) -> None:
    """Compare every experiment and judge the papers' claims. Reads reports/eval/<exp>.json,
    reports/quality/<exp>.csv and reports/samples/<exp>/ (missing ones show as n/a); writes
    reports/metrics.json (DVC metrics), reports/figures/ (FID vs epoch and wall-clock),
    reports/summary.md and reports/summary.html (self-contained, images inline)."""

    def work():
        from dcganlab.stages import report as stage

        p = _params(params)
        metrics = stage.run(p)
        typer.echo(f"report: {len(metrics)} experiments -> {p.root / 'reports' / 'summary.md'}, summary.html")

    _run(work)


@app.command()
def bench(
    long: bool = typer.Option(
        False, "--long", help="10x the steps, 4x the photos, 5x the samples: steadier numbers (~15 min on 2 cores)"
    ),
    experiment: Optional[list[str]] = typer.Option(
        None, "--experiment", "-e", help="only these experiments (repeatable)"
    ),
    steps: Optional[int] = typer.Option(
        None, "--steps", help="timed training steps per repeat (5 repeats, the median reported)"
    ),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="untimed training steps first"),
    photos: Optional[int] = typer.Option(None, "--photos", help="prepare: photos per worker count"),
    eval_samples: Optional[int] = typer.Option(None, "--eval-samples", help="evaluate: generated samples"),
    process_repeats: Optional[int] = typer.Option(
        None,
        "--process-repeats",
        help="whole-process runs of dcganlab train and the classic script per setting (0: skip)",
    ),
    process_images: Optional[int] = typer.Option(
        None, "--process-images", help="whole process: digits trained for one epoch"
    ),
    share_threads: Optional[int] = typer.Option(
        None,
        "--share-threads",
        help="train.threads of the sharing "
        "runs (default 0: each its share; the core count reproduces "
        "torch's default, oversubscribed)",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="default: reports/bench.json (--gpu: reports/bench-gpu.json)"
    ),
    gpu: bool = typer.Option(
        False,
        "--gpu",
        help="the GPU check's bench instead: each precision setting's img/s, "
        "MFU and peak memory, and ours vs the classic loop at its setting (bench/gpu.py)",
    ),
    params: Path = ParamsOpt,
) -> None:
    """Throughput and peak memory of training (every experiment, and our loop vs a classic
    ImageFolder + DataLoader loop), one step's overhead, whole-process `dcganlab train` vs the
    classic DCGAN script at its settings (64x64 RGB, width 64, batch 64) and ours (wall time,
    peak RSS, loop img/s, model FLOP utilisation), prepare with 1 and 2 workers, and
    evaluation. Reads params.yaml and data/processed/ (built in a temp dir when missing);
    writes reports/bench.json. The default finishes in under 5 minutes on 2 CPU cores."""

    def work():
        from dataclasses import replace

        from dcganlab.bench.bench import GPU, LONG, QUICK, table
        from dcganlab.bench.bench import bench as bench_stage

        chosen = {
            k: v
            for k, v in dict(
                steps=steps, warmup=warmup, photos=photos, eval_samples=eval_samples, process_images=process_images
            ).items()
            if v is not None
        }
        if any(v < 1 for v in chosen.values()) or (process_repeats is not None and process_repeats < 0):
            raise UserError(
                "--steps, --warmup, --photos, --eval-samples and --process-images must be >= 1, --process-repeats >= 0"
            )
        if process_repeats is not None:
            chosen["process_repeats"] = process_repeats
        if share_threads is not None:
            if not 0 <= share_threads <= 1024:
                raise UserError("--share-threads must be in 0..1024")
            chosen["share_threads"] = share_threads
        settings = replace(LONG if long else GPU if gpu else QUICK, **chosen)
        p = _params(params)
        if gpu:
            from dcganlab.bench.gpu import bench_gpu
            from dcganlab.bench.gpu import table as gpu_table

            result = bench_gpu(p, settings, out, log=lambda m: typer.echo(m, err=True))
            typer.echo(gpu_table(result))
            typer.echo(f"bench --gpu: {result['wall_s']:.0f} s -> {out or p.root / 'reports' / 'bench-gpu.json'}")
            return
        result = bench_stage(p, settings, experiment or None, out, log=lambda m: typer.echo(m, err=True))
        typer.echo(table(result))
        typer.echo(f"bench: {result['wall_s']:.0f} s -> {out or p.root / 'reports' / 'bench.json'}")

    _run(work)


@app.command()
def variants() -> None:
    """List the architecture variants."""
    from dcganlab.gan.variants import VARIANTS

    for variant in VARIANTS.values():
        typer.echo(f"{variant.name:14s} {variant.description} (sizes: {variant.size_text})")


@app.command()
def preset(
    name: Optional[str] = typer.Argument(None, help="preset name (default: list them)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="train this many epochs instead"),
    dataset: Optional[str] = typer.Option(
        None, "--dataset", help="run the recipe on this preset dataset (e.g. fashion96)"
    ),
    path: Optional[str] = typer.Option(
        None,
        "--path",
        help="folder holding the dataset's official files "
        "(e.g. /usr/share/datasets/fashion-mnist): used, never downloaded",
    ),
) -> None:
    """The seed papers' full settings. Without NAME, lists the presets; with NAME, prints the
    `-S ++key=value` overrides that add (or overwrite) its dataset and experiment, for
    `dvc exp run $(dcganlab preset NAME)`; a further `-S key=value` after it changes any key.
    Writes nothing."""

    def work():
        from dcganlab.gan.presets import DATASETS, PRESETS, overrides

        if name is None:
            width = max(map(len, PRESETS))
            for key, recipe in PRESETS.items():
                typer.echo(f"{key:{width}s} {recipe.description}")
            typer.echo(f"datasets (--dataset): {', '.join(DATASETS)}")
            return
        if name not in PRESETS:
            raise UserError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
        if dataset is not None and dataset not in DATASETS:
            raise UserError(f"unknown dataset '{dataset}' (known: {', '.join(DATASETS)})")
        if epochs is not None and epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {epochs}")
        try:
            typer.echo(" ".join(overrides(name, epochs, dataset, path)))
        except ValueError as exc:
            raise UserError(str(exc)) from None

    _run(work)


@app.command()
def ui(
    params: Path = ParamsOpt,
    host: str = typer.Option("127.0.0.1", help="address to listen on (loopback: only this machine)"),
    port: int = typer.Option(5000, help="port"),
) -> None:
    """Serve this project's MLflow store with `mlflow server` and print, for each experiment, the
    link that opens it on its training runs (MLflow 3.17's UI opens on its GenAI view unless the
    link says workflowType=machine_learning). With a tracking server configured, prints its links."""

    def work():
        from dcganlab.core.tracking import ui_command, ui_links

        p = _params(params)
        command, base = ui_command(p, host, port)
        for line in ui_links(p, base):
            typer.echo(line)
        if command:
            sys.stdout.flush()
            os.execvp(command[0], command)  # the server replaces us: Ctrl-C stops it

    _run(work)


def main() -> None:
    try:
        app(prog_name="dcganlab")
    finally:
        # The interpreter's last garbage collections walk every object the imports made (torch,
        # MLflow: 1.3 s of a training process's exit, measured). Frozen objects are skipped; the
        # OS takes the memory back; atexit handlers (MLflow ends an open run there) still run.
        gc.freeze()


if __name__ == "__main__":
    sys.exit(main())

"""report: the comparison table, metrics.json, the claims' verdicts and a self-contained HTML,
on eval JSONs / quality CSVs / sample folders the tests write with the agreed keys (SCHEMA)."""

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_EXPERIMENT, tiny_params, write_params
from PIL import Image
from typer.testing import CliRunner

from dcganlab.cli import app
from dcganlab.core import paths
from dcganlab.core.flat import flatten
from dcganlab.evaluation.claims import CLAIMS, INCONCLUSIVE, REFUTES, SUPPORTS, Claim, Evidence, Setup, judge_claims
from dcganlab.stages.report import COLUMNS

VARIANT = {
    "digits-dcgan": "dcgan",
    "digits-cgan": "cgan",
    "digits-upsample": "upsample-gan",
    "faces-face-dcgan": "face-dcgan",
    "faces-cartoon": "cartoon-128",
}
NAMES = list(VARIANT)


def eval_json(fid=10.0, kid=0.1, kid_std=0.01, **extra) -> dict:
    """An eval JSON with every key SCHEMA.md lists."""
    m = {
        "fid": fid,
        "kid": kid,
        "kid_std": kid_std,
        "kid_subset_size": 10,
        "fid_real_floor": 1.0,
        "extractor": "domain:digits (classifier, 16-d, test acc 0.900)",
        "n_fake": 40,
        "n_real": 24,
        "reference_split": "digits:test (held-out real images)",
        "images_per_s": 500.0,
        "train_wall_s": 12.5,
        "epochs": 3,
        "variant": "dcgan",
        "dataset": "digits",
        "precision": 0.7,
        "recall": 0.6,
        "pr_k": 3,
        "precision_real_floor": 0.8,
        "recall_real_floor": 0.8,
        "diversity_ssim": 0.2,
        "diversity_ssim_real": 0.15,
        "ssim_pairs": 100,
        "class_accuracy": {
            "per_class": {str(i): 0.9 for i in range(10)},
            "mean": 0.9,
            "n_per_class": 50,
            "classifier_test_accuracy": 0.95,
        },
        "mode_coverage": {
            "histogram": {str(i): 0.1 for i in range(10)},
            "classes_covered": 10,
            "num_classes": 10,
            "n": 500,
            "kl_to_uniform": 0.01,
        },
        "linear_probe": {
            "d_features": 0.9,
            "pixels": 0.8,
            "train_n": 400,
            "eval_n": 400,
            "train_split": "train",
            "eval_split": "test",
        },
        "fid_ranked": 8.0,
        "inception": None,
        "inception_status": "unavailable: no weights file (offline)",
        "eval_seconds": 3.0,
    }
    m.update(extra)
    return m


def quality_csv(path, fids, seconds_per_epoch=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    e = np.arange(1, len(fids) + 1)
    pd.DataFrame(
        {"epoch": e, "wall_s": e * seconds_per_epoch, "fid": fids, "kid": 0.1, "n_fake": 40, "n_real": 24}
    ).to_csv(path, index=False)


@pytest.fixture
def reports(tmp_path):
    """A project whose six experiments (named as the claims need) have eval JSONs, some quality
    curves and sample folders."""
    raw = tiny_params(**{"datasets.digits.image_size": 32})
    raw["experiments"] = {n: {**TINY_EXPERIMENT, "variant": v} for n, v in VARIANT.items()}
    write_params(tmp_path, raw)
    for n in NAMES:
        path = paths.eval_path(tmp_path, n)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(eval_json()))
    quality_csv(paths.quality_path(tmp_path, "faces-cartoon"), [90, 40, 20, 15, 12])
    quality_csv(paths.quality_path(tmp_path, "faces-face-dcgan"), [95, 70, 50, 30, 20], 2.0)
    samples = paths.samples_dir(tmp_path, "digits-dcgan")
    samples.mkdir(parents=True)
    Image.new("RGB", (20, 20), (255, 0, 0)).save(samples / "grid.png")
    Image.new("RGB", (30, 20), (0, 255, 0)).save(samples / "arithmetic.png")
    (samples / "figures.json").write_text(
        json.dumps(
            {
                "arithmetic": {
                    "mode": "class",
                    "note": "kinds = classes",
                    "rows": [{"ok": True}, {"ok": False}],
                    "agreement": 0.5,
                },
                "progression_epochs": [1, 3],
            }
        )
    )
    return tmp_path


def run_report(root):
    result = CliRunner().invoke(app, ["report", "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, result.output
    return (root / "reports/summary.md").read_text(), (root / "reports/summary.html").read_text()


def test_table_has_every_experiment_and_column_and_metrics_are_flat(reports):
    md, _ = run_report(reports)
    table = md.split("## How each number was computed")[0]
    for name in NAMES:
        assert f"| {name} " in table
    for title in ["experiment", *COLUMNS]:
        assert title in table
    metrics = json.loads((reports / "reports/metrics.json").read_text())
    assert set(metrics) == set(NAMES)
    for m in metrics.values():
        assert {"fid", "kid", "precision", "recall", "images_per_s"} <= set(m)
        assert not any(isinstance(v, (dict, list)) for v in m.values())  # flat for `dvc metrics show/diff`
        assert m["class_accuracy.mean"] == 0.9 and m["linear_probe.d_features"] == 0.9
    assert metrics["digits-dcgan"]["arithmetic_agreement"] == 0.5
    # which generator: the final and the best epoch by the curve ([95, 70, 50, 30, 20]: the last is best)
    chosen = {k: v for k, v in metrics["faces-face-dcgan"].items() if k.startswith("generator.")}
    assert chosen == {
        "generator.final_epoch": 5,
        "generator.final_curve_fid": 20.0,
        "generator.best_epoch": 5,
        "generator.best_curve_fid": 20.0,
    }
    assert "generator.best_epoch" not in metrics["digits-cgan"]  # no curve
    assert "final = epoch 5 (curve FID 20" in md and "`models:/faces-face-dcgan@champion` is the best" in md
    assert "1 of 2 came out as expected" in md
    figures = reports / "reports/figures"
    assert {p.name for p in figures.iterdir()} == {
        "faces-cartoon_quality.png",
        "faces-face-dcgan_quality.png",
        "quality_digits.png",
    }
    assert all(Image.open(p).size[0] > 100 for p in figures.iterdir())
    assert "![FID vs epoch and vs wall-clock seconds](figures/faces-cartoon_quality.png)" in md
    assert "](samples/digits-dcgan/grid.png)" in md
    assert "quality curve: n/a" in md  # digits-cgan has none


def test_generator_choice_names_the_final_and_the_best_epoch(tmp_path):
    from dcganlab.stages.report import generator_choice, read_quality

    quality_csv(tmp_path / "q.csv", [90, 40, 10, 15, 10])  # a tie: the earliest of equals is best
    assert generator_choice(read_quality(tmp_path / "q.csv")) == {
        "final_epoch": 5,
        "final_curve_fid": 10.0,
        "best_epoch": 3,
        "best_curve_fid": 10.0,
    }


def test_missing_and_null_metrics_print_na(reports):
    old = {
        "fid": 5.0,
        "kid": None,
        "kid_std": None,
        "extractor": "domain:x",
        "n_fake": 4,
        "n_real": 4,
        "reference_split": "digits:test",
        "images_per_s": 1.0,
        "train_wall_s": 1.0,
        "epochs": 1,
    }
    paths.eval_path(reports, "digits-cgan").write_text(json.dumps(old))  # today's keys only, KID null
    md, _ = run_report(reports)
    row = next(line for line in md.splitlines() if line.startswith("| digits-cgan "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[COLUMNS_INDEX("FID")] == "5" and cells[COLUMNS_INDEX("KID")] == "n/a"
    assert cells[COLUMNS_INDEX("precision")] == "n/a" and cells[COLUMNS_INDEX("Inception FID")] == "n/a"
    claims = md.split("## Claims of the seed papers")[1]
    line = next(line for line in claims.splitlines() if "draws the requested digit" in line)
    assert INCONCLUSIVE in line and "class_accuracy.mean of digits-cgan not measured (n/a)" in line


def COLUMNS_INDEX(title):
    return ["experiment", *COLUMNS].index(title)


def test_html_is_self_contained(reports):
    _, page = run_report(reports)
    sources = re.findall(r"""src=['"]([^'"]*)['"]""", page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"""(href|src)=['"]?(https?:|//|file:)""", page)
    assert "<link" not in page and "<script" not in page
    assert page.count("<img") == 5  # 2 quality curves, 1 dataset overlay, grid + arithmetic of digits-dcgan
    for name in NAMES:
        assert f"<td>{name}</td>" in page
    assert "class='supports'" in page


def test_report_without_an_eval_file_fails_with_one_line(reports):
    paths.eval_path(reports, "faces-cartoon").unlink()
    result = CliRunner().invoke(app, ["report", "--params", str(reports / "params.yaml")])
    assert result.exit_code == 1 and "evaluate faces-cartoon" in result.output


# ---------------------------------------------------------------- claims on constructed inputs
# name -> (variant, image size, source) of the constructed experiments: each at its paper's setup
KIND = {
    "faces-resnet": ("resnet-dcgan", 96, "folder"),
    "faces-face-dcgan": ("face-dcgan", 96, "folder"),
    "faces-cartoon": ("cartoon-128", 128, "folder"),
    "digits-cgan": ("cgan", 32, "mnist-subset"),
    "digits-upsample": ("upsample-gan", 28, "fashion-mnist"),
    "digits-dcgan": ("dcgan", 32, "mnist-subset"),
}


def ev(name, quality=None, size=None, source=None, dataset="d", epochs=100, **metrics):
    variant, paper_size, paper_source = KIND.get(name, (name, 32, "mnist"))
    return Evidence(
        name,
        flatten(eval_json(**metrics)),
        quality,
        size or paper_size,
        epochs,
        variant,
        dataset,
        source or paper_source,
    )


def curve(fids):
    e = np.arange(1, len(fids) + 1)
    return pd.DataFrame({"epoch": e, "wall_s": e * 1.0, "fid": fids})


def verdicts(evidence, claims=CLAIMS):
    table = judge_claims(evidence, claims)
    return dict(zip(table["claim"], table["verdict"])), table


def claim_verdict(evidence, text):
    got, table = verdicts(evidence)
    key = next(c for c in got if text in c)
    return got[key], table.set_index("claim").loc[key, "reason"]


def test_resnet_claim_supports_refutes_and_inconclusive():
    fast, slow = curve([50, 20, 12, 11, 10]), curve([90, 70, 40, 25, 20])
    good = {
        "faces-resnet": ev("faces-resnet", fast, fid=10, kid=0.1, kid_std=0.01),
        "faces-face-dcgan": ev("faces-face-dcgan", slow, fid=20, kid=0.5, kid_std=0.01),
    }
    assert claim_verdict(good, "ResNet")[0] == SUPPORTS
    bad = {
        "faces-resnet": ev("faces-resnet", curve([90, 40, 30, 31, 32]), fid=30, kid=0.9, kid_std=0.01),
        "faces-face-dcgan": ev("faces-face-dcgan", curve([50, 20, 10, 11, 12]), fid=10, kid=0.1, kid_std=0.01),
    }
    assert claim_verdict(bad, "ResNet")[0] == REFUTES  # both curves levelled off: a refutation stands
    noisy = {
        "faces-resnet": ev("faces-resnet", fast, kid=0.1, kid_std=0.5),
        "faces-face-dcgan": ev("faces-face-dcgan", slow, kid=0.3, kid_std=0.5),
    }
    verdict, reason = claim_verdict(noisy, "ResNet")
    assert verdict == INCONCLUSIVE and "within noise" in reason
    no_curve = {
        "faces-resnet": ev("faces-resnet", None, kid=0.1, kid_std=0.01),
        "faces-face-dcgan": ev("faces-face-dcgan", None, kid=0.5, kid_std=0.01),
    }
    verdict, reason = claim_verdict(no_curve, "ResNet")
    assert verdict == INCONCLUSIVE and "fewer epochs" in reason
    missing = {"faces-face-dcgan": good["faces-face-dcgan"]}
    verdict, reason = claim_verdict(missing, "ResNet")
    assert verdict == INCONCLUSIVE and "no resnet-dcgan + dcgan/face-dcgan experiment in params.yaml" in reason
    assert "dcganlab preset resnet-exp8" in reason


def resnet_row(fast, slow, **setup):
    """The ResNet claim's row for a ResNet run (curve `fast`, FID 10, KID 0.1) against a face DCGAN
    (curve `slow`, FID 20, KID 0.5), both with `setup` (size, source, epochs)."""
    pair = {
        "faces-resnet": ev("faces-resnet", fast, fid=10, kid=0.1, kid_std=0.01, **setup),
        "faces-face-dcgan": ev("faces-face-dcgan", slow, fid=20, kid=0.5, kid_std=0.01, **setup),
    }
    _, table = verdicts(pair)
    return table[table["claim"].str.contains("ResNet")].iloc[0]


def test_a_scaled_down_experiment_gets_no_verdict_but_says_what_the_numbers_read():
    fast, slow = curve([50, 20, 12, 11, 10]), curve([90, 70, 40, 25, 20])
    row = resnet_row(fast, slow, size=32)
    assert row["verdict"] == INCONCLUSIVE
    assert row["reason"].startswith(
        "not the paper's setup: faces-resnet at 32x32 (paper: 96x96); "
        "faces-face-dcgan at 32x32 (paper: 96x96). At this setup the numbers alone read "
        "'supports'"
    )
    assert row["setup"].startswith("not the paper's: faces-resnet at 32x32")
    # the paper's size on other data: a verdict, for that data
    row = resnet_row(fast, slow, source="fashion-mnist")
    assert row["verdict"] == SUPPORTS and "holds for fashion-mnist data (paper: 96x96 anime faces)" in row["reason"]
    assert row["setup"] == "paper's image size; data fashion-mnist (paper: 96x96 anime faces)"
    # a claim about the kind of data: other data is not the paper's setup
    verdict, reason = claim_verdict(
        {"digits-dcgan": ev("digits-dcgan", source="fashion-mnist", precision=0.75, precision_real_floor=0.8)},
        "plausible",
    )
    assert verdict == INCONCLUSIVE and "digits-dcgan on fashion-mnist data (paper: MNIST digits)" in reason


def test_each_fitting_experiment_gets_a_row_and_baselines_come_from_the_same_dataset():
    e = {
        "r1": ev("faces-resnet", dataset="a", kid=0.1, kid_std=0.01),
        "b1": ev("faces-face-dcgan", dataset="a", kid=0.5, kid_std=0.01),
        "b2": ev("faces-face-dcgan", dataset="other", kid=0.9, kid_std=0.01),
    }
    e = {n: replace(x, name=n) for n, x in e.items()}
    table = judge_claims(e)
    assert list(table[table["claim"].str.contains("ResNet")]["experiments"]) == ["r1, b1"]


def test_fewer_epochs_than_the_paper_void_comparisons_and_refutations_not_a_capability_shown():
    fast, slow = curve([50, 20, 10, 11, 12]), curve([90, 70, 40, 30, 31])
    row = resnet_row(fast, slow, epochs=3)
    assert (
        row["verdict"] == INCONCLUSIVE and "too short: faces-resnet trained 3 of the paper's 20 epochs" in row["reason"]
    )
    assert row["setup"] == (
        "paper's image size; data folder (paper: 96x96 anime faces); shorter: faces-resnet trained 3 "
        "of the paper's 20 epochs; shorter: faces-face-dcgan trained 3 of the paper's 20 epochs"
    )
    verdict, reason = claim_verdict(
        {"digits-upsample": ev("digits-upsample", epochs=5, fid=10.0, fid_ranked=5.0, fid_real_floor=1.0)}, "ranked"
    )
    assert verdict == SUPPORTS and "shown although digits-upsample trained 5 of the paper's 30 epochs" in reason
    verdict, reason = claim_verdict(
        {"digits-upsample": ev("digits-upsample", epochs=5, fid=10.0, fid_ranked=15.0, fid_real_floor=1.0)}, "ranked"
    )
    assert verdict == INCONCLUSIVE and "too short: digits-upsample trained 5" in reason


def test_a_refutation_from_a_run_still_improving_is_inconclusive():
    rising = curve([90, 70, 50, 40, 30])
    verdict, reason = claim_verdict(
        {"digits-upsample": ev("digits-upsample", rising, fid=10.0, fid_ranked=15.0, fid_real_floor=1.0)}, "ranked"
    )
    assert verdict == INCONCLUSIVE and "too short to refute: digits-upsample still improving" in reason


def test_without_kid_std_the_real_floor_is_the_noise_scale():
    e = {
        "faces-cartoon": ev("faces-cartoon", fid=50.0, kid_std=None, fid_real_floor=60.0),
        "faces-face-dcgan": ev("faces-face-dcgan", size=128, fid=100.0, kid_std=None, fid_real_floor=60.0),
    }
    verdict, reason = claim_verdict(e, "feature matching")
    assert verdict == INCONCLUSIVE and "real floor" in reason and "not a clean ablation" in reason
    e["faces-face-dcgan"] = ev("faces-face-dcgan", size=128, fid=200.0, kid_std=None, fid_real_floor=60.0)
    assert claim_verdict(e, "feature matching")[0] == SUPPORTS


def test_the_cartoon_claim_says_whether_its_pair_is_a_clean_ablation():
    from dcganlab.gan.presets import PRESETS

    full, plain = (PRESETS[n].entries()[1] for n in ("cartoon-128", "cartoon-128-ablation"))
    x = ev("faces-cartoon", fid=50.0, kid_std=None, fid_real_floor=1.0)
    y = ev("digits-dcgan", size=128, fid=100.0, kid_std=None, fid_real_floor=1.0)
    x.recipe, y.recipe = vars(full), vars(plain)
    verdict, reason = claim_verdict({"a": x, "b": y}, "feature matching")
    assert verdict == SUPPORTS and "a clean ablation" in reason
    y.recipe = {**vars(plain), "lr_d": 2e-4, "label_flip": 0.0}
    assert (
        "differs from digits-dcgan in label_flip, lr_d: not a clean ablation"
        in claim_verdict({"a": x, "b": y}, "feature matching")[1]
    )


def test_conditional_probe_ranked_and_plausible_claims():
    def one(name, text, **m):
        return claim_verdict({name: ev(name, **m)}, text)[0]

    def ca(mean):
        return {
            "per_class": {str(i): mean for i in range(10)},
            "mean": mean,
            "n_per_class": 50,
            "classifier_test_accuracy": 0.95,
        }

    assert one("digits-cgan", "requested digit", class_accuracy=ca(0.9)) == SUPPORTS
    assert one("digits-cgan", "requested digit", class_accuracy=ca(0.11)) == REFUTES  # chance is 0.1
    assert one("digits-cgan", "requested digit", class_accuracy=ca(0.5)) == INCONCLUSIVE

    def lp(d, p):
        return {
            "d_features": d,
            "pixels": p,
            "train_n": 400,
            "eval_n": 400,
            "train_split": "train",
            "eval_split": "test",
        }

    assert one("digits-upsample", "classify digits well", linear_probe=lp(0.95, 0.85)) == SUPPORTS
    assert one("digits-upsample", "classify digits well", linear_probe=lp(0.75, 0.85)) == REFUTES
    assert one("digits-upsample", "classify digits well", linear_probe=lp(0.86, 0.85)) == INCONCLUSIVE
    assert one("digits-upsample", "ranked", fid=10.0, fid_ranked=5.0, fid_real_floor=1.0) == SUPPORTS
    assert one("digits-upsample", "ranked", fid=10.0, fid_ranked=15.0, fid_real_floor=1.0) == REFUTES
    assert one("digits-upsample", "ranked", fid=10.0, fid_ranked=9.5, fid_real_floor=1.0) == INCONCLUSIVE
    assert one("digits-upsample", "ranked", fid_ranked=None) == INCONCLUSIVE
    assert one("digits-dcgan", "plausible", precision=0.75, precision_real_floor=0.8) == SUPPORTS
    assert one("digits-dcgan", "plausible", precision=0.2, precision_real_floor=0.8) == REFUTES


def test_adding_a_claim_is_one_entry():
    extra = Claim(
        "recall beats precision",
        "nobody",
        (frozenset({"x"}),),
        Setup((32,), "MNIST digits", 1),
        "recall vs precision",
        lambda e: ("r vs p", SUPPORTS if e[0].get("recall") > e[0].get("precision") else REFUTES, "compared"),
    )
    table = judge_claims({"x": ev("x", recall=0.9, precision=0.1)}, CLAIMS + [extra])
    assert len(table) == len(CLAIMS) + 1 and table.iloc[-1]["verdict"] == SUPPORTS
    assert list(table.columns) == [
        "claim",
        "paper",
        "experiments",
        "setup",
        "how judged",
        "measured",
        "verdict",
        "reason",
    ]
    assert (table.iloc[:-1]["verdict"] == INCONCLUSIVE).all()  # none of the default experiments exist

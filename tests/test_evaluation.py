"""Metrics checked against values computed by hand on a tiny fixed example."""

import json
import math

import numpy as np
import pytest

from gender import evaluation as ev

NAMES = ["male", "female"]
# Hand example: predictions at threshold 0.5 are [0,0,1,0,1,1,0,1]; wrong at indices 2 and 6.
Y = [0, 0, 0, 0, 1, 1, 1, 1]
P = [0.1, 0.35, 0.65, 0.25, 0.95, 0.85, 0.3, 0.65]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_basic_metrics():
    r = ev.evaluate_predictions(Y, P, NAMES)
    assert r["n"] == 8
    assert r["accuracy"] == pytest.approx(0.75)
    assert r["confusion_matrix"] == [[3, 1], [1, 3]]
    for name in NAMES:
        assert r["per_class"][name] == pytest.approx(
            {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
        )
    # BCE: y=0 -> log(1-p), y=1 -> log(p)
    probs_of_truth = [0.9, 0.65, 0.35, 0.75, 0.95, 0.85, 0.3, 0.65]
    assert r["loss"] == pytest.approx(-sum(math.log(q) for q in probs_of_truth) / 8)
    assert r["accuracy_ci95"] == pytest.approx(ev.wilson_interval(6, 8))
    json.dumps(r, allow_nan=False)  # JSON-serialisable, no NaN


def test_threshold_changes_per_class():
    r = ev.evaluate_predictions(Y, P, NAMES, threshold=0.7)
    # preds [0,0,0,0,1,1,0,0]
    assert r["confusion_matrix"] == [[4, 0], [2, 2]]
    assert r["per_class"]["male"]["precision"] == pytest.approx(4 / 6)
    assert r["per_class"]["male"]["recall"] == pytest.approx(1.0)
    assert r["per_class"]["male"]["f1"] == pytest.approx(0.8)
    assert r["per_class"]["female"]["precision"] == pytest.approx(1.0)
    assert r["per_class"]["female"]["recall"] == pytest.approx(0.5)
    assert r["per_class"]["female"]["f1"] == pytest.approx(2 / 3)


def test_undefined_precision_is_zero():
    r = ev.evaluate_predictions([0, 1, 1], [0.1, 0.2, 0.3], NAMES)  # never predicts female
    assert r["per_class"]["female"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}


def test_wilson_known_values():
    # Reference values (Wilson 1927; e.g. Newcombe 1998, Table I): 8/10 and 0/10.
    assert ev.wilson_interval(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-4)
    assert ev.wilson_interval(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert ev.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_roc_auc_with_ties():
    # Positive-vs-negative pairs won: 4 + 4 + 2 + 3.5 (0.65 vs 0.65 tie counts 1/2) = 13.5 of 16.
    assert ev.roc_auc(Y, P) == pytest.approx(13.5 / 16)
    assert ev.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert ev.roc_auc([0, 0, 1], [0.2, 0.3, 0.9]) == pytest.approx(1.0)
    assert ev.roc_auc([1, 1, 1], [0.2, 0.3, 0.9]) is None
    assert ev.evaluate_predictions([1, 1], [0.7, 0.2], NAMES)["roc_auc"] is None
    fpr, tpr = ev.roc_curve(Y, P)
    assert np.trapezoid(tpr, fpr) == pytest.approx(13.5 / 16)


def test_ece_hand_example():
    # Confidence of the predicted class: [.9,.65,.65,.75,.95,.85,.7,.65]; 15 bins of width 1/15.
    # Bin (0.6, 0.667]: three at .65, two right -> |2/3 - .65| * 3; the others are single
    # examples: |1-.9| + |1-.75| + |1-.95| + |1-.85| + |0-.7|.
    expected = (3 * abs(2 / 3 - 0.65) + 0.1 + 0.25 + 0.05 + 0.15 + 0.7) / 8
    r = ev.evaluate_predictions(Y, P, NAMES)
    assert r["ece"] == pytest.approx(expected)
    assert r["ece"] == pytest.approx(0.1625)
    rel = r["reliability"]
    assert len(rel) == 15
    assert sum(b["count"] for b in rel) == 8
    assert rel[9]["count"] == 3
    assert rel[9]["accuracy"] == pytest.approx(2 / 3)
    assert rel[9]["confidence"] == pytest.approx(0.65)
    assert rel[0]["count"] == 0 and rel[0]["accuracy"] is None


def test_per_group():
    groups = ["a", "a", "a", "b", "b", "b", "b", "b"]
    r = ev.evaluate_predictions(Y, P, NAMES, groups=groups)
    assert set(r["per_group"]) == {"a", "b"}
    a, b = r["per_group"]["a"], r["per_group"]["b"]
    assert (a["n"], a["accuracy"]) == (3, pytest.approx(2 / 3))
    assert (b["n"], b["accuracy"]) == (5, pytest.approx(4 / 5))
    assert b["accuracy_ci95"] == pytest.approx(ev.wilson_interval(4, 5))
    assert "per_group" not in ev.evaluate_predictions(Y, P, NAMES)


@pytest.mark.parametrize(
    "y,p,msg",
    [
        ([0, 1], [0.5], "prob has"),
        ([], [], "nothing to evaluate"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([0, 1], [0.1, 1.2], "finite"),
    ],
)
def test_bad_input(y, p, msg):
    with pytest.raises(ValueError, match=msg):
        ev.evaluate_predictions(y, p, NAMES)


def test_format_report_mentions_everything():
    r = ev.evaluate_predictions(Y, P, NAMES, groups=["a"] * 3 + ["b"] * 5)
    text = ev.format_report(r)
    for needle in (
        "accuracy",
        "0.7500",
        "95% CI",
        "ROC-AUC",
        "0.8438",
        "ECE",
        "male",
        "female",
        "confusion matrix",
        "group",
    ):
        assert needle in text


def test_group_spread_against_chance():
    # two groups of one image each at a pooled accuracy of 1/2: chance puts them apart half the time
    one_each = {"a": {"n": 1, "correct": 1}, "b": {"n": 1, "correct": 0}}
    s = ev.group_spread(one_each)
    assert (s["spread"], s["lowest"], s["highest"]) == (1.0, "b", "a")
    assert s["p_value"] == pytest.approx(0.5, abs=0.015) and s["chance_95"] == 1.0
    assert ev.group_spread(one_each) == s  # seeded: the same figures every time

    # 100 images per group: 90% against 60% is no accident, 82% against 78% is
    far = ev.group_spread({"x": {"n": 100, "correct": 90}, "y": {"n": 100, "correct": 60}})
    near = ev.group_spread({"x": {"n": 100, "correct": 82}, "y": {"n": 100, "correct": 78}})
    assert far["spread"] == pytest.approx(0.30) and far["p_value"] < 0.001
    assert near["spread"] == pytest.approx(0.04) and near["p_value"] > 0.4
    assert near["chance_median"] < near["chance_95"] < 0.15
    assert ev.group_spread({"only": {"n": 5, "correct": 3}}) is None


def test_group_spread_in_results_and_report():
    r = ev.evaluate_predictions(Y, P, NAMES, groups=["a"] * 3 + ["b"] * 5)
    spread = r["group_spread"]["group"]
    assert spread["spread"] == pytest.approx(4 / 5 - 2 / 3)
    assert spread["pooled_accuracy"] == pytest.approx(r["accuracy"])
    assert "spread 13.3 points (a to b)" in ev.format_report(r)
    json.dumps(r)


def test_paired_comparison_is_an_exact_mcnemar_test():
    model = [True] * 10 + [False] * 2 + [True] * 5
    other = [False] * 10 + [True] * 2 + [True] * 5
    p = ev.paired_comparison(model, other)
    counts = ("n", "both_right", "only_model_right", "only_other_right", "both_wrong")
    assert [p[k] for k in counts] == [17, 5, 10, 2, 0]
    assert p["difference"] == pytest.approx(8 / 17)
    # two-sided exact binomial test of 10 against 2 discordant pairs: 2 * P(X <= 2 | 12, 1/2)
    assert p["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 2**12)
    assert ev.paired_comparison([True, False], [True, False])["p_value"] == 1.0  # no disagreement
    with pytest.raises(ValueError, match="3 model results but 2"):
        ev.paired_comparison([True] * 3, [True] * 2)


def test_most_confident_mistakes_order():
    assert ev.most_confident_mistakes(Y, P).tolist() == [6, 2]  # conf .70 then .65


def test_plots_write_png(tmp_path):
    r = ev.evaluate_predictions(Y, P, NAMES)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    paths = [
        ev.plot_confusion_matrix(r["confusion_matrix"], NAMES, tmp_path / "cm.png"),
        ev.plot_reliability(r["reliability"], tmp_path / "rel.png"),
        ev.plot_roc(Y, P, tmp_path / "roc.png"),
        ev.plot_roc([1, 1], [0.3, 0.8], tmp_path / "roc_one_class.png"),
        ev.plot_mistakes(images, Y, P, NAMES, tmp_path / "sub" / "mistakes.png"),
        ev.plot_mistakes(images, Y, Y, NAMES, tmp_path / "none.png"),  # no mistakes
    ]
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    assert not list(tmp_path.glob(".*.tmp"))


def test_balanced_threshold_peaks_the_mean_recall():
    """Hand example: mean recall 0.75 is the best any threshold reaches (at 0.85, 0.65 or 0.3); the
    first such cut from the top is 0.85, and the middle of the gap below it (0.65) is 0.75."""
    assert ev.balanced_threshold(Y, P) == pytest.approx(0.75)
    r = ev.evaluate_predictions(Y, P, NAMES, threshold=0.75)
    assert r["balanced_threshold"] == pytest.approx(0.75)
    assert r["confusion_matrix"] == [[4, 0], [2, 2]]  # recalls 1.0 and 0.5

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.25 * y + rng.normal(0.2, 0.1, 300), 0, 1)  # class 1 scores low: 0.5 is far off
    t = ev.balanced_threshold(y, p)

    def mean_recall(cut):
        pred = p >= cut
        return (pred[y == 1].mean() + (~pred[y == 0]).mean()) / 2

    assert mean_recall(t) == pytest.approx(max(mean_recall(c) for c in np.unique(p)))
    assert mean_recall(t) > mean_recall(0.5) + 0.1
    assert ev.balanced_threshold([0, 0, 0], [0.2, 0.4, 0.9]) is None  # one class: nothing to balance
    assert ev.evaluate_predictions([0, 0], [0.2, 0.4], NAMES)["balanced_threshold"] is None

"""Each figure shows exactly the stored values of the rows it is meant to read.

Checks compare the plotted data (line x/y, bar heights, image arrays) with numbers computed
here straight from the synthetic rows, never pixels.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
import report_rows as R

from snnsec.report import figures as F
from snnsec.report import style
from snnsec.report.schema import MissingData

ALL_FIGS = [F.fig_backdoor_rate, F.fig_robust_accuracy, F.fig_defense_heatmap, F.fig_trigger_gallery, F.fig_anomaly_index,
            F.fig_strip_entropy, F.fig_accuracy_vs_timesteps, F.fig_firing_rate]


@pytest.fixture(scope="module")
def rows():
    return R.all_rows()


@pytest.fixture(scope="module")
def df(rows, tmp_path_factory):
    return R.stored(rows, tmp_path_factory.mktemp("figstore") / "results.sqlite")


def _mean_by(rows, key, pred):
    acc = defaultdict(list)
    for r in rows:
        if pred(r):
            acc[key(r)].append(r["value"])
    return {k: float(np.mean(v)) for k, v in sorted(acc.items())}


def _panel(data, title):
    (p,) = [p for p in data if p["title"] == title]
    return p


def _line(panel, label):
    (ln,) = [ln for ln in panel["lines"] if ln[0] == label]
    return ln[1], ln[2]


def _bars(panel, label):
    (b,) = [b for b in panel["bars"] if b[0] == label]
    return b[1], b[2]


def test_backdoor_rate_plots_stored_ca_and_asr(rows, df):
    fig = F.fig_backdoor_rate(df)
    (panel,) = F.figure_data(fig)
    assert panel["title"] == "ndigits / csnn"
    assert "poison rate" in panel["xlabel"] and "fraction" in panel["ylabel"]
    for trig in ("static", "moving"):
        for what, metric in (("ASR", "attack_success_rate"), ("CA", "clean_accuracy")):
            want = _mean_by(rows, lambda r: r["attack_params"]["rate"],
                            lambda r: r["metric"] == metric and r["attack"] == f"backdoor:{trig}" and r["defense"] is None)
            x, y = _line(panel, f"{trig} {what}")
            np.testing.assert_allclose(x, list(want))
            np.testing.assert_allclose(y, list(want.values()))
    # SSIM rows and the defense / hardening rows that also carry ASR are not on this figure.
    assert len(panel["lines"]) == 4
    assert set(fig.snnsec_rows["metric"]) == {"attack_success_rate", "clean_accuracy"}


def test_robust_accuracy_per_model_attack_and_worst_case(rows, df):
    fig = F.fig_robust_accuracy(df)
    data = F.figure_data(fig)
    # The resnet run failed its integrity checks: its panel says so.
    assert sorted(p["title"] for p in data) == ["ndigits / csnn", "ndigits / resnet  [UNRELIABLE]"]
    for model, title in (("csnn", "ndigits / csnn"), ("resnet", "ndigits / resnet  [UNRELIABLE]")):
        panel = _panel(data, title)
        for atk, label in (("adversarial:fgsm", "fgsm"), ("adversarial:pgd", "pgd"), ("adversarial:worst-case", "worst case")):
            want = _mean_by(rows, lambda r: r["attack_params"]["eps"],
                            lambda r: r["metric"] == "robust_accuracy" and r["model"] == model and r["attack"] == atk)
            x, y = _line(panel, label)
            np.testing.assert_allclose(x, list(want))
            np.testing.assert_allclose(y, list(want.values()))
        (clean,) = [r["value"] for r in rows if r["model"] == model and r["attack"] == "adversarial" and r["metric"] == "clean_accuracy"]
        assert _line(panel, "clean accuracy")[1].tolist() == [clean, clean]
        assert panel["xticklabels"] == ["0", "2/255", "4/255", "8/255"]
    # Every point of the unreliable run, and only those, is ringed.
    ax_resnet = [ax for ax in fig.axes if ax.get_title().startswith("ndigits / resnet")][0]
    (ring,) = [c for c in ax_resnet.collections if c.get_label() == "unreliable evaluation"]
    want = sorted((r["attack_params"]["eps"], r["value"]) for r in rows
                  if r["run_id"] == "adv-resnet" and r["metric"] == "robust_accuracy")
    np.testing.assert_allclose(sorted(map(tuple, ring.get_offsets())), want)
    ax_csnn = [ax for ax in fig.axes if ax.get_title() == "ndigits / csnn"][0]
    assert not [c for c in ax_csnn.collections if c.get_label() == "unreliable evaluation"]


@pytest.mark.parametrize("metric,names", [("asr", ("attack_success_rate",)), ("auroc", ("detection_auroc", "auroc"))])
def test_defense_heatmap_cells_are_stored_means(rows, df, metric, names):
    fig = F.fig_defense_heatmap(df, metric=metric)
    (panel,) = F.figure_data(fig)
    defenses, triggers = panel["yticklabels"], panel["xticklabels"]
    assert defenses == sorted({"neural_cleanse", "fine_pruning", "strip"})
    assert triggers == ["moving", "smart", "static"]
    want = _mean_by(rows, lambda r: (r["defense"], r["attack_params"]["trigger"]),
                    lambda r: r["metric"] in names and r["defense"] is not None and not r["defense"].startswith("hardening"))
    expected = np.array([[want[(d, t)] for t in triggers] for d in defenses])
    np.testing.assert_allclose(panel["images"][0], expected)
    assert panel["texts"] == [f"{v:.2f}" for v in expected.ravel()]


def test_defense_heatmap_auto_prefers_asr_and_rejects_unknown(df):
    auto = F.figure_data(F.fig_defense_heatmap(df))
    asr = F.figure_data(F.fig_defense_heatmap(df, metric="asr"))
    np.testing.assert_array_equal(auto[0]["images"][0], asr[0]["images"][0])
    with pytest.raises(ValueError, match="metric must be"):
        F.fig_defense_heatmap(df, metric="accuracy")


def test_trigger_gallery_shows_the_stored_frames(rows, df):
    fig = F.fig_trigger_gallery(df)
    clips = {(r["attack_params"]["trigger"], r["extra"]["variant"]): np.asarray(r["extra"]["frames"])
             for r in rows if r["metric"] == "gallery_clip"}
    T = clips[("static", "clean")].shape[0]
    ts = F.gallery_time_steps(T)
    # Both triggers were applied to the same clean sample: it is shown once.
    order = [clips[("static", "clean")], clips[("moving", "poisoned")], clips[("static", "poisoned")]]
    data = F.figure_data(fig)
    assert len(data) == len(order) * len(ts)
    for i, clip in enumerate(order):
        for j, t in enumerate(ts):
            np.testing.assert_array_equal(data[i * len(ts) + j]["images"][0], style.polarity_rgb(clip[t]))
    labels = [fig.axes[i * len(ts)].get_ylabel() for i in range(len(order))]
    assert labels == ["clean #3", "moving", "static"]


def test_polarity_rgb_colours():
    f = np.zeros((2, 1, 3))
    f[1, 0, 0] = 1  # ON
    f[0, 0, 1] = 1  # OFF
    f[:, 0, 2] = 1  # both
    img = style.polarity_rgb(f)
    np.testing.assert_array_equal(img[0], [[1, 0, 0], [0, 0, 1], [0, 0, 0]])
    with pytest.raises(ValueError, match="expected a frame"):
        style.polarity_rgb(np.zeros((1, 2, 3, 4)))


def test_anomaly_index_per_class_both_conventions(rows, df):
    data = F.figure_data(F.fig_anomaly_index(df))
    csnn = _panel(data, "ndigits / csnn / backdoor:static / neural_cleanse")
    x, h = _bars(csnn, "anomaly index")
    np.testing.assert_array_equal(x, range(5))
    np.testing.assert_allclose(h, [r["value"] for r in rows if r["run_id"] == "nc-1"])
    assert _line(csnn, "threshold 2")[1].tolist() == [2.0, 2.0]
    resnet = _panel(data, "ndigits / resnet / backdoor:moving / neural_cleanse")
    np.testing.assert_allclose(_bars(resnet, "anomaly index")[1], [r["value"] for r in rows if r["run_id"] == "nc-2"])


def test_a_clean_model_without_attack_gets_its_own_panel(rows, tmp_path):
    # A clean model's audit rows have no attack; read back from SQLite (pandas 3 keeps it
    # missing under astype(str)) its panel must still sort among and match as text.
    clean = [{**r, "attack": None, "attack_params": None, "run_id": "nc-clean"} for r in rows if r["run_id"] == "nc-1"]
    data = F.figure_data(F.fig_anomaly_index(R.stored(rows + clean, tmp_path / "r.sqlite")))
    np.testing.assert_allclose(_bars(_panel(data, "ndigits / csnn / neural_cleanse"), "anomaly index")[1],
                               [r["value"] for r in clean])
    assert _panel(data, "ndigits / csnn / backdoor:static / neural_cleanse")


def test_strip_histograms_hold_every_stored_entropy(rows, df):
    data = F.figure_data(F.fig_strip_entropy(df))
    csnn = _panel(data, "ndigits / csnn / backdoor:static")
    groups = {trig: np.array([r["value"] for r in rows if r["run_id"] == "strip-1" and r["metric"] == "strip_entropy"
                              and r["extra"]["triggered"] is trig]) for trig in (False, True)}
    edges = np.histogram_bin_edges(np.concatenate([groups[False], groups[True]]), bins=20)
    for trig, name in ((False, "clean"), (True, "triggered")):
        x, h = _bars(csnn, f"{name} (n={len(groups[trig])})")
        np.testing.assert_array_equal(h, np.histogram(groups[trig], bins=edges)[0])
    assert _line(csnn, "threshold 1.5")[0].tolist() == [1.5, 1.5]
    # The compact convention: one row per group holding all entropies.
    resnet = _panel(data, "ndigits / resnet / backdoor:static")
    packed = {r["extra"]["triggered"]: r["extra"]["entropies"] for r in rows if r["run_id"] == "strip-2"}
    for trig, name in ((False, "clean"), (True, "triggered")):
        assert _bars(resnet, f"{name} (n=10)")[1].sum() == len(packed[trig]) == 10


def test_accuracy_vs_timesteps_per_recipe(rows, df):
    (panel,) = F.figure_data(F.fig_accuracy_vs_timesteps(df))

    def t_of(r):
        return r["extra"]["T_infer"] if r["metric"] == "accuracy_at_T" else int(r["metric"].removeprefix("accuracy_at_t"))

    for recipe in ("ce", "tcl", "stcl"):
        want = _mean_by(rows, t_of, lambda r: r["defense"] == f"hardening:{recipe}" and r["metric"].startswith("accuracy_at_"))
        x, y = _line(panel, recipe)
        np.testing.assert_allclose(x, [1, 2, 4, 8])
        np.testing.assert_allclose(y, [want[t] for t in (1, 2, 4, 8)])
    assert len(panel["lines"]) == 3


def test_firing_rate_per_layer_clean_vs_triggered(rows, df):
    data = F.figure_data(F.fig_firing_rate(df))
    csnn = _panel(data, "ndigits / csnn / backdoor:static")
    assert csnn["xticklabels"] == ["conv1", "conv2", "fc1", "fc2"]
    for trig, name in ((False, "clean"), (True, "triggered")):
        want = [r["value"] for r in sorted((r for r in rows if r["run_id"] == "fr-1" and r["extra"]["triggered"] is trig),
                                           key=lambda r: r["extra"]["layer_index"])]
        np.testing.assert_allclose(_bars(csnn, name)[1], want)
    resnet = _panel(data, "ndigits / resnet / backdoor:moving")
    assert resnet["xticklabels"] == ["sn1", "sn2"]
    np.testing.assert_allclose(_bars(resnet, "triggered")[1], [0.3, 0.4])


def test_runs_differing_in_rate_share_gallery_strips_and_firing_panels():
    # The same trigger at two poison rates stores the same clip and two sets of firing rates.
    gal = [dict(r, run_id=f"{r['run_id']}-{rate}", attack_params={**r["attack_params"], "rate": rate},
                config={**r["config"], "attack_params": {**r["attack_params"], "rate": rate}})
           for r in R.gallery_rows() for rate in (0.05, 0.1) if r["attack"] == "backdoor:static"]
    data = F.figure_data(F.fig_trigger_gallery(R.frame(gal)))
    assert len(data) == 2 * len(F.gallery_time_steps(4))  # clean once, static once
    fr = []
    for rate, bump in ((0.05, 0.0), (0.1, 0.2)):
        ap = {"trigger": "static", "rate": rate, "target": 0}
        for i, layer in enumerate(["sn1", "sn2"]):
            for trig in (False, True):
                fr.append(R.row("firing_rate", 0.1 * (i + 1) + bump + 0.05 * trig, attack="backdoor:static", attack_params=ap,
                                run_id=f"fr-{rate}", extra={"layer": layer, "layer_index": i, "triggered": trig}))
    (panel,) = F.figure_data(F.fig_firing_rate(R.frame(fr)))
    assert panel["title"] == "ndigits / csnn / backdoor:static\n(mean of 2 settings)"
    np.testing.assert_allclose(_bars(panel, "clean")[1], [0.2, 0.3])
    np.testing.assert_allclose(_bars(panel, "triggered")[1], [0.25, 0.35])


def _same(a, b):
    assert len(a) == len(b)
    for pa, pb in zip(a, b):
        assert pa.keys() == pb.keys()
        for k in pa:
            if k in ("lines", "bars"):
                assert [x[0] for x in pa[k]] == [x[0] for x in pb[k]]
                for xa, xb in zip(pa[k], pb[k]):
                    for u, v in zip(xa[1:], xb[1:]):
                        np.testing.assert_array_equal(u, v)
            elif k == "images":
                for u, v in zip(pa[k], pb[k]):
                    np.testing.assert_array_equal(u, v)
            else:
                assert pa[k] == pb[k]


@pytest.mark.parametrize("fn", ALL_FIGS, ids=lambda f: f.__name__)
def test_figures_redraw_identically_from_the_same_rows(fn, df, rows, tmp_path):
    first = F.figure_data(fn(df))
    _same(first, F.figure_data(fn(df)))
    # Row order in the store does not matter, nor does a second store holding the same rows.
    shuffled = list(reversed(rows))
    _same(first, F.figure_data(fn(R.stored(shuffled, tmp_path / "again.sqlite"))))


@pytest.mark.parametrize("fn", ALL_FIGS, ids=lambda f: f.__name__)
def test_figures_say_what_they_need_when_rows_are_absent(fn):
    with pytest.raises(MissingData):
        fn(pd.DataFrame())
    with pytest.raises(MissingData):
        fn(R.frame([R.row("ssim", 0.9, attack="backdoor:static", attack_params={"trigger": "static"})]))


def test_figures_accept_parsed_json_and_leave_rcparams_alone(rows):
    import matplotlib

    before = dict(matplotlib.rcParams)
    fig = F.fig_backdoor_rate(pd.DataFrame(rows))  # JSON columns as dicts, as make_rows builds them
    assert matplotlib.rcParams["font.size"] == before["font.size"]
    assert fig.get_figwidth() == pytest.approx(style.COLUMN_WIDTH)


def test_colours_are_fixed_per_name():
    assert style.color("trigger", "static") == style.color("trigger", "backdoor:static") == style.TRIGGER_COLORS["static"]
    assert style.color("attack", "worst_case") == "#000000"
    assert style.color("defense", "my_new_defense") == style.color("defense", "my_new_defense")
    with pytest.raises(ValueError, match="kind must be"):
        style.color("model", "x")


def test_repeated_identical_values_draw_without_error_bars_failing():
    # Means of equal floats can fall a rounding error outside [min, max]; matplotlib rejects
    # negative error bars, so this must still draw.
    rows = [R.row("robust_accuracy", 0.7, attack="pgd", attack_params={"eps": 0.1}, seed=s) for s in range(3)]
    assert pd.Series([0.7] * 3).mean() != 0.7
    (panel,) = F.figure_data(F.fig_robust_accuracy(R.frame(rows)))
    np.testing.assert_allclose(_line(panel, "pgd")[1], [0.7])


def _bd(trig, rate, asr, seed=0, **params):
    ap = {"trigger": trig, "rate": rate, "target": 0, **params}
    return R.row("attack_success_rate", asr, attack=f"backdoor:{trig}", attack_params=ap, seed=seed)


def test_settings_other_than_seed_are_never_averaged_silently():
    rows = [_bd("static", r, v + (0.1 if pos == "middle" else 0), position=pos)
            for pos in ("top-left", "middle") for r, v in ((0.01, 0.2), (0.1, 0.6))]
    rows += [_bd("static", 0.1, 0.62, seed=1, position="top-left")]
    (panel,) = F.figure_data(F.fig_backdoor_rate(R.frame(rows)))
    np.testing.assert_allclose(_line(panel, "static (position=middle) ASR")[1], [0.3, 0.7])
    np.testing.assert_allclose(_line(panel, "static (position=top-left) ASR")[1], [0.2, 0.61])  # seeds 0 and 1 averaged
    # Too many settings for one line each: one line per trigger, labelled as a mean of settings.
    many = [_bd("moving", r, 0.1 * i + r, position=f"p{i}") for i in range(8) for r in (0.01, 0.1)]
    (panel,) = F.figure_data(F.fig_backdoor_rate(R.frame(many)))
    x, y = _line(panel, "moving (mean of 8 settings) ASR")
    np.testing.assert_allclose(y, [np.mean([0.1 * i + 0.01 for i in range(8)]), np.mean([0.1 * i + 0.1 for i in range(8)])])


def test_leaderboard_table_holds_the_stored_values():
    import report_rows as R

    from snnsec.report.tables import leaderboard_table

    t = leaderboard_table(R.frame(R.leaderboard_rows())).set_index("variant")
    assert list(t.index) == ["csnn", "csnn+binary"]
    assert t.loc["csnn", "clean_accuracy"] == pytest.approx(0.945)  # mean over the two seeds
    assert t.loc["csnn", "energy_pj"] == pytest.approx(1.105e6) and t.loc["csnn", "n_seeds"] == 2
    assert [c for c in t.columns if c.startswith("robust_accuracy@")] == ["robust_accuracy@4/255", "robust_accuracy@16/255"]
    assert bool(t.loc["csnn+binary", "unreliable"]) and not bool(t.loc["csnn", "unreliable"])

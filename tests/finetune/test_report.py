"""The report: mean and spread over seeds, the native-vs-Trainer check, the plots."""

import json

import pytest

from finetune.analysis.report import markdown_table, what_is_real, write_report
from finetune.config import ConfigError


def fake_run(loop, strategy, seed, acc, f1, time_s=100.0):
    return {
        "config": {"task": "mrpc", "loop": loop, "strategy": strategy, "pooling": "mean", "seed": seed, "epochs": 3,
                   "lr": 5e-5, "max_train_samples": None},
        "train_examples": 3668,
        "validation": {"accuracy": acc, "f1": f1}, "test": {"accuracy": acc - 0.01, "f1": f1 - 0.01},
        "trainable_params": 770, "train_runtime_s": time_s, "train_samples_per_second": 36.68,
        "history": [{"step": 10, "epoch": 0.1, "loss": 0.7, "learning_rate": 1e-3},
                    {"step": 20, "epoch": 0.2, "loss": 0.6, "learning_rate": 1e-3}],
    }  # fmt: skip


def test_table_means_and_spreads():
    runs = [fake_run("native", "head", s, a, 0.8) for s, a in ((1, 0.70), (2, 0.72), (3, 0.74))]
    table = markdown_table(runs)
    row = next(line for line in table.splitlines() if "| head |" in line)
    assert (
        "| mrpc | native | head | mean | 3 | 3,668 | 3 | 72.0 ± 2.0 [67.0, 77.0] | 80.0 ± 0.0 [80.0, 80.0] "
        "| 71.0 ± 2.0 [66.0, 76.0] | 79.0 ± 0.0 [79.0, 79.0] | 770 | 100 | 36.7 |" == row
    )  # the 95% interval of n = 3: mean ± 4.30 sd / sqrt(3)


def test_runs_with_other_settings_are_not_pooled():
    full = [fake_run("native", "full", s, 0.80, 0.85) for s in (1, 2, 3)]
    smoke = fake_run("native", "full", 4, 0.60, 0.70)
    smoke["config"].update(max_train_samples=64, epochs=1)
    smoke["train_examples"] = 64
    other_lr = fake_run("native", "full", 5, 0.78, 0.84)
    other_lr["config"]["lr"] = 1e-4
    rows = [line for line in markdown_table([*full, smoke, other_lr]).splitlines() if line.startswith("| mrpc")]
    assert len(rows) == 3
    assert any(
        "| 3 | 3,668 | " in r and "| 3 | 80.0 ± 0.0 [80.0, 80.0] |" in r for r in rows
    )  # the three alike, pooled
    assert any("| 1 | 64 (subset: 64 train) |" in r for r in rows)  # epochs and the subset shown
    assert any("lr=0.0001" in r for r in rows)  # the setting that differs gets a column


def test_runs_without_predictions_files_are_compared_between_seeds(tmp_path):
    close = [fake_run("native", "full", s, a, 0.8) for s, a in ((1, 0.80), (2, 0.82), (3, 0.81))]
    close += [fake_run("trainer", "full", s, a, 0.8) for s, a in ((1, 0.81), (2, 0.80), (3, 0.82))]
    far = close[:3] + [fake_run("native", "head", s, a, 0.8) for s, a in ((1, 0.70), (2, 0.71), (3, 0.70))]
    for i, run in enumerate(close + far[3:]):
        run["_dir"] = str(tmp_path / f"run{i}")  # no predictions files there
    text = what_is_real(close + far[3:])
    native_trainer = next(line for line in text.splitlines() if line.startswith("| native/full vs trainer/full"))
    assert "| validation | accuracy | 81.0 (n=3) | 81.0 (n=3) | +0.0 [" in native_trainer
    assert "| noise (between seeds only) | - | - |" in native_trainer
    full_head = next(line for line in text.splitlines() if line.startswith("| native/full vs native/head"))
    # Welch: 0.107 ± t(0.975, 3.2 df) * 0.0067 = 0.107 ± 0.020
    assert "| +10.7 [+8.6, +12.7] | **real** (between seeds only) |" in full_head
    assert "9 runs (such as " in text and "have no predictions files" in text
    assert "Seed ensembles" not in text  # an ensemble needs the per-example probabilities


def test_write_report_finds_runs_below_a_folder(tmp_path):
    for i, loop in enumerate(("native", "trainer")):
        d = tmp_path / "runs" / f"r{i}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(fake_run(loop, "full", 1, 0.8, 0.85)))
    table = write_report([tmp_path / "runs"], tmp_path / "out")
    assert table.count("| mrpc |") == 2
    for name in ("loss.png", "metric_vs_time.png", "report.md"):
        assert (tmp_path / "out" / name).stat().st_size > 100
    with pytest.raises(ConfigError, match="no results.json"):
        write_report([tmp_path / "out"], tmp_path / "out2")


def test_each_setting_has_one_colour_in_every_plot(tmp_path, monkeypatch):
    """head is the same colour in loss.png, metric_vs_time.png and published.png (the artists' own
    colours, read before each figure is closed), and no two settings share one."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    import finetune.analysis.report as report

    runs = [fake_run("native", s, seed, 0.8, 0.85) for s in ("full", "head") for seed in (1, 2)]
    seen: dict[str, dict[str, set]] = {}  # plot -> setting label -> colours

    def record(fig):
        name = f"figure {len(seen)}"
        for ax in fig.axes:
            if name == "figure 2":  # published.png: a row per setting, named on the y axis
                labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
                for container in ax.containers:  # the error bars, in the rows' order
                    y = round(container.lines[0].get_ydata()[0])
                    strategy = labels[y].split(" ")[0].split("/")[-1] if "published" not in labels[y] else None
                    if strategy:
                        seen.setdefault(name, {}).setdefault(strategy, set()).add(
                            to_hex(container.lines[0].get_color())
                        )
                continue
            for artist in [*ax.lines, *ax.collections]:
                label = artist.get_label().split(" ")[0].split("/")[-1]
                colour = artist.get_color() if hasattr(artist, "get_xdata") else artist.get_facecolor()[0]
                seen.setdefault(name, {}).setdefault(label, set()).add(to_hex(colour))
        close(fig)

    close = plt.close
    monkeypatch.setattr(plt, "close", record)
    for i, run in enumerate(runs):
        run["_dir"] = str(tmp_path / f"run{i}")
    report.plot_loss(runs, tmp_path / "loss.png")
    report.plot_metric_vs_time(runs, tmp_path / "time.png")
    assert report.plot_published(runs, tmp_path / "published.png")
    assert len(seen) == 3 and all(set(plot) == {"full", "head"} for plot in seen.values()), seen
    colours = {setting: {c for plot in seen.values() for c in plot[setting]} for setting in ("full", "head")}
    assert all(len(c) == 1 for c in colours.values()) and colours["full"] != colours["head"], colours

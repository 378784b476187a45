"""FAD and KAD on random features: zero on identical sets, symmetric, growing with added noise, equal to the
textbook formulas computed directly with numpy/scipy; bootstrap intervals (KAD's resamples centred on the
full-set value, resampling groups of correlated rows); the CLI on embed output folders."""
import json

import numpy as np
import pytest
import scipy.linalg

from jukejax.eval import metrics
from jukejax.eval.__main__ import main


def _features(seed, n=400, d=16):
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ mix + rng.standard_normal(d)


def test_fad_matches_scipy_sqrtm_formula():
    x, y = _features(0), _features(1, n=300) * 1.3 + 0.2
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    got = metrics.frechet_distance(x, y)
    assert abs(got - want) <= 1e-9 * abs(want)


def test_fad_is_zero_on_identical_sets_and_symmetric():
    x, y = _features(2), _features(3)
    assert abs(metrics.frechet_distance(x, x)) <= 1e-10 * np.trace(np.cov(x, rowvar=False))
    assert metrics.frechet_distance(x, y) == pytest.approx(metrics.frechet_distance(y, x), rel=1e-10)


@pytest.mark.parametrize("metric", [metrics.frechet_distance, metrics.kernel_distance])
def test_grows_monotonically_as_noise_is_mixed_in(metric):
    x = _features(4)
    noise = np.random.default_rng(5).standard_normal(x.shape) * x.std(0)
    values = [metric(x, (1 - a) * x + a * noise) for a in (0.0, 0.1, 0.3, 0.6, 1.0)]
    # FAD(x, x) = 0; the unbiased MMD^2 of a set with itself is -2 (1 - mean off-diagonal kernel) / (n - 1)
    assert abs(values[0]) <= (1e-9 if metric is metrics.frechet_distance else 0.01 * values[-1])
    assert all(b > a for a, b in zip(values, values[1:])), values


def test_kad_matches_direct_unbiased_mmd():
    x, y = _features(6, n=60, d=8), _features(7, n=50, d=8) + 0.5
    z = np.concatenate([x, y])
    d = scipy.spatial.distance.pdist(z)
    sigma = np.median(d)
    k = lambda a, b: np.exp(-scipy.spatial.distance.cdist(a, b, "sqeuclidean") / (2 * sigma ** 2))  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    want = ((kxx.sum() - np.trace(kxx)) / (60 * 59) + (kyy.sum() - np.trace(kyy)) / (50 * 49) - 2 * k(x, y).mean())
    assert metrics.kernel_distance(x, y) == pytest.approx(want, rel=1e-9)
    assert metrics.kernel_distance(x, y) == pytest.approx(metrics.kernel_distance(y, x), rel=1e-12)
    assert abs(metrics.kernel_distance(x, x)) < 1e-12 + 0.05 * metrics.kernel_distance(x, y)


def test_bootstrap_interval_brackets_the_value():
    x, y = _features(8, n=200), _features(9, n=200) + 0.3
    result = metrics.bootstrap(metrics.frechet_distance, x, y, n_resamples=50, seed=0)
    lo, hi = result["ci"]
    assert lo < result["value"] < hi and result["n_resamples"] == 50
    again = metrics.bootstrap(metrics.frechet_distance, x, y, n_resamples=50, seed=0)
    assert again["ci"] == result["ci"]


def _resampled_kad(x, y, n_resamples, seed, groups_x=None, groups_y=None):
    """kernel_bootstrap's resampled statistics, computed directly: each resample's rows materialized, and the
    within-set means taken over the pairs that are neither two copies of one original row nor rows of two
    different copies of one group."""
    sigma = metrics.median_bandwidth(x, y)
    k = lambda a, b: np.exp(-scipy.spatial.distance.cdist(a, b, "sqeuclidean") / (2 * sigma ** 2))  # noqa: E731
    rng = np.random.default_rng(seed)

    def resample(a, groups):
        codes = np.arange(len(a)) if groups is None else np.unique(groups, return_inverse=True)[1]
        rows, copy = [], []
        for c, g in enumerate(rng.integers(0, codes.max() + 1, codes.max() + 1)):
            members = np.flatnonzero(codes == g)
            rows += list(members)
            copy += [c] * len(members)
        return np.array(rows), np.array(copy), codes

    def within(a, rows, copy, codes):
        g = codes[rows]
        keep = (rows[:, None] != rows[None, :]) & ~((g[:, None] == g[None, :]) & (copy[:, None] != copy[None, :]))
        return (k(a[rows], a[rows]) * keep).sum() / keep.sum()

    draws = []
    for _ in range(n_resamples):
        (rx, cx, gx), (ry, cy, gy) = resample(x, groups_x), resample(y, groups_y)
        draws.append(within(x, rx, cx, gx) + within(y, ry, cy, gy) - 2 * k(x[rx], y[ry]).mean())
    return np.array(draws)


@pytest.mark.parametrize("grouped", [False, True])
def test_kernel_bootstrap_matches_resamples_computed_directly(grouped):
    rng = np.random.default_rng(10)
    x, y = rng.standard_normal((24, 4)), rng.standard_normal((18, 4)) + 0.3
    groups = dict(groups_x=np.repeat(np.arange(6), 4), groups_y=np.repeat(np.arange(6), 3)) if grouped else {}
    got = metrics.kernel_bootstrap(x, y, n_resamples=40, seed=4, **groups)
    want = _resampled_kad(x, y, 40, 4, **groups)
    assert got["value"] == pytest.approx(metrics.kernel_distance(x, y), rel=1e-12)
    assert got["ci"] == pytest.approx(np.quantile(want, [0.025, 0.975]).tolist(), rel=1e-9, abs=1e-12)
    assert got["std"] == pytest.approx(want.std(), rel=1e-9)


def _clustered(seed, files=13, per_file=30, d=16, within=0.7):
    """Rows of `files` songs: each row its song's centre plus noise, `within` of the variance shared."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((files, d)) * np.sqrt(within)
    rows = np.repeat(centres, per_file, axis=0) + rng.standard_normal((files * per_file, d)) * np.sqrt(1 - within)
    return rows, np.repeat(np.arange(files), per_file)


def _draws(monkeypatch, fn, *args, **kwargs):
    seen = []
    real = metrics._interval
    monkeypatch.setattr(metrics, "_interval", lambda v, d, c: seen.append(np.asarray(d)) or real(v, d, c))
    result = fn(*args, **kwargs)
    return result, seen[-1]


def test_resampled_kad_centres_on_the_value_from_one_distribution(monkeypatch):
    # resampled rows hold duplicates; counted as distinct pairs (kernel value 1) they lifted every resample
    # by ~(1 - mean k_xx)/n + (1 - mean k_yy)/m = 0.016 here, above the interval's whole width
    rng = np.random.default_rng(50)
    x, y = rng.standard_normal((50, 16)), rng.standard_normal((50, 16))
    result, draws = _draws(monkeypatch, metrics.kernel_bootstrap, x, y, n_resamples=200, seed=0)
    assert abs(draws.mean() - result["value"]) < 0.002, (draws.mean(), result["value"])
    assert result["ci"][0] < result["value"] < result["ci"][1]
    # the same with whole songs resampled: pairs across two copies of one song are left out too
    (x, gx), (y, gy) = _clustered(7), _clustered(8)
    result, draws = _draws(monkeypatch, metrics.kernel_bootstrap, x, y, n_resamples=200, seed=0, groups_x=gx,
                           groups_y=gy)
    assert abs(draws.mean() - result["value"]) < 0.01, (draws.mean(), result["value"])
    assert result["ci"][0] < result["value"] < result["ci"][1]


@pytest.mark.parametrize("kad", [False, True])
def test_group_bootstrap_is_wider_on_correlated_rows(kad):
    (x, gx), (y, gy) = _clustered(7), _clustered(8)
    run = ((lambda **kw: metrics.kernel_bootstrap(x, y, n_resamples=100, **kw)) if kad
           else (lambda **kw: metrics.bootstrap(metrics.frechet_distance, x, y, n_resamples=100, **kw)))
    rows, files = run(), run(groups_x=gx, groups_y=gy)
    width = lambda r: r["ci"][1] - r["ci"][0]  # noqa: E731
    assert width(files) > 3 * width(rows), (rows["ci"], files["ci"])
    # one row per group is resampling rows: the same draws
    assert run(groups_x=np.arange(len(x)) + 5, groups_y=np.arange(len(y))[::-1])["ci"] == pytest.approx(rows["ci"])


@pytest.mark.parametrize("fn", [lambda x, y, **kw: metrics.bootstrap(metrics.frechet_distance, x, y, **kw),
                                metrics.kernel_bootstrap])
def test_bad_group_labels_are_refused(fn):
    x, y = _features(11, n=20, d=4), _features(12, n=12, d=4)
    with pytest.raises(ValueError, match=r"groups_x: expected one group label per row \(20 rows\)"):
        fn(x, y, groups_x=np.arange(19))
    with pytest.raises(ValueError, match="groups_y: expected one group label per row"):
        fn(x, y, groups_y=np.zeros((12, 1)))
    with pytest.raises(ValueError, match="groups_y: all 12 rows are in one group"):
        fn(x, y, groups_y=np.zeros(12))


def _embed_folder(path, rows_per_file, seed, shift=0.0):
    """An embed output folder with layers 3 and 7: one pooled row per file (jukemir), or with rows_per_file > 1
    that many frames per file (frames), each file's frames sharing a random offset."""
    path.mkdir()
    rng = np.random.default_rng(seed)
    lines = []
    for i, n in enumerate(rows_per_file):
        shape = [2, 8] if n == 1 else [2, n, 8]
        a = rng.standard_normal(shape) + shift + (0 if n == 1 else 2 * rng.standard_normal((2, 1, 8)))
        np.save(path / f"f{i}.npy", a.astype(np.float32))
        lines.append(json.dumps(dict(file=f"f{i}.wav", npy=f"f{i}.npy", shape=shape, layers=[3, 7],
                                     preset="jukemir" if n == 1 else "frames", pool="mean" if n == 1 else "none",
                                     model="m")))
    (path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_cli_on_embed_folders(tmp_path, capsys):
    ref = _embed_folder(tmp_path / "ref", [1] * 30, 0)
    gen = _embed_folder(tmp_path / "gen", [1] * 30, 1, shift=1.0)
    assert main(["fad", "--ref", str(ref), "--gen", str(gen), "--layer", "7", "--n_bootstrap", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = lambda p: np.stack([np.load(p / f"f{i}.npy")[1] for i in range(30)])  # noqa: E731
    assert out["value"] == pytest.approx(metrics.frechet_distance(rows(ref), rows(gen)))
    assert out["n_ref"] == 30 and out["layer"] == 7 and out["ci"][0] < out["value"] < out["ci"][1]
    assert main(["kad", "--ref", str(ref), "--gen", str(gen), "--layer", "3", "--n_bootstrap", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] > 0
    assert main(["fad", "--ref", str(ref), "--gen", str(gen)]) == 2
    assert "--layer" in capsys.readouterr().err
    assert main(["fad", "--ref", str(ref), "--gen", str(tmp_path / "none"), "--layer", "3"]) == 2
    assert "--gen" in capsys.readouterr().err


def test_cli_resamples_the_files_of_frame_rows(tmp_path, capsys):
    ref = _embed_folder(tmp_path / "ref", [6, 9, 7, 8, 5], 0)
    gen = _embed_folder(tmp_path / "gen", [7, 7, 6, 9], 1, shift=0.5)
    frames = lambda p, n: np.concatenate([np.load(p / f"f{i}.npy")[0] for i in range(n)])  # noqa: E731
    x, y = frames(ref, 5), frames(gen, 4)
    files_x, files_y = np.repeat(np.arange(5), [6, 9, 7, 8, 5]), np.repeat(np.arange(4), [7, 7, 6, 9])
    assert main(["kad", "--ref", str(ref), "--gen", str(gen), "--layer", "3", "--n_bootstrap", "30"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = metrics.kernel_bootstrap(x, y, n_resamples=30, groups_x=files_x, groups_y=files_y)
    assert out["resampled"] == "files" and out["n_ref"] == 35 and out["ref_files"] == 5 and out["preset"] == "frames"
    assert out["ci"] == pytest.approx(want["ci"]) and out["value"] == pytest.approx(want["value"])
    assert out["ci"] != pytest.approx(metrics.kernel_bootstrap(x, y, n_resamples=30)["ci"])
    assert main(["fad", "--ref", str(ref), "--gen", str(gen), "--layer", "3", "--n_bootstrap", "30"]) == 0
    want = metrics.bootstrap(metrics.frechet_distance, x, y, n_resamples=30, groups_x=files_x, groups_y=files_y)
    assert json.loads(capsys.readouterr().out)["ci"] == pytest.approx(want["ci"])
    one = _embed_folder(tmp_path / "one", [12], 2)
    assert main(["kad", "--ref", str(one), "--gen", str(gen), "--layer", "3"]) == 2
    assert "--ref: 1 file; the bootstrap resamples files" in capsys.readouterr().err
    assert main(["kad", "--ref", str(one), "--gen", str(gen), "--layer", "3", "--n_bootstrap", "0"]) == 0


def test_model_card_prints_the_distance_table(tmp_path):
    from script_modules import load_script

    model_card = load_script("model_card")
    rows = [dict(comparison="samples vs held-out", fad=12.345, fad_ci=[10.0, 15.5], kad_x1000=3.21,
                 kad_x1000_ci=[2.5, 4.0])]
    path = model_card.write_model_card(tmp_path, {"embedding_distances": {"rows": rows, "note": "Layer 8 of 16."}})
    text = path.read_text()
    assert "## FAD / KAD of samples against held-out songs" in text
    assert "| samples vs held-out | 12.35 (10.00 to 15.50) | 3.21 (2.50 to 4.00) |" in text
    assert "Layer 8 of 16." in text

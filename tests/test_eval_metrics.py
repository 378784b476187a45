"""FAD and KAD on random features: zero on identical sets, symmetric, growing with added noise, equal to the
textbook formulas computed directly with numpy/scipy; the CLI on embed output folders."""
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


def _embed_folder(path, rows_per_file, seed, shift=0.0):
    path.mkdir()
    rng = np.random.default_rng(seed)
    lines = []
    for i, n in enumerate(rows_per_file):
        np.save(path / f"f{i}.npy", (rng.standard_normal((2, 8)) + shift).astype(np.float32))
        lines.append(json.dumps(dict(file=f"f{i}.wav", npy=f"f{i}.npy", shape=[2, 8], layers=[3, 7],
                                     preset="jukemir", pool="mean", model="m")))
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

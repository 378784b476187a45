"""Lyric vocabularies, cleaning, the linear lyric window, and the label vector y (original
`data/text_processor.py`, `data/labels.py`)."""
import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from unidecode import unidecode

from jukejax.prior import labels as labels_lib
from jukejax.prior import lyrics

# The original TextProcessor's vocabulary strings and out-of-vocabulary patterns (data/text_processor.py).
ORIGINAL_V2 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?-+'\"()[] \t\n"
ORIGINAL_V3 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:;!?-'\"()[] \t\n"
NOT_V2 = re.compile("[^A-Za-z0-9.,:;!?\\-+'\"()\\[\\] \t\n]+")
NOT_V3 = re.compile("[^A-Za-z0-9.,:;!?\\-'\"()\\[\\] \t\n]+")


def original_clean(text, v3):
    return (NOT_V3 if v3 else NOT_V2).sub("", unidecode(text).replace("\\", "\n"))


# ---------------------------------------------------------------------------------------------------------------
# Vocabularies and cleaning

@pytest.mark.parametrize("v3, chars, size", [(False, ORIGINAL_V2, 80), (True, ORIGINAL_V3, 79)])
def test_vocab_tables_match_the_original(v3, chars, size):
    assert lyrics.n_vocab(v3) == size == len(chars) + 1
    table = lyrics.char_to_id(v3)
    assert table == {c: i + 1 for i, c in enumerate(chars)}
    assert table["A"] == 1 and table["a"] == 27 and table["0"] == 53 and table["\n"] == size - 1
    assert 0 not in table.values()                          # 0 is pad / unknown
    not_vocab = NOT_V3 if v3 else NOT_V2
    for code in range(128):                                 # the vocab is exactly what the regex keeps
        assert (chr(code) in table) == (not_vocab.sub("", chr(code)) == chr(code))
    assert ("+" in table) == (not v3)


def test_clean_examples():
    assert lyrics.clean_lyrics("Beyoncé – “Halo”") == 'Beyonce - "Halo"'
    assert lyrics.clean_lyrics("line one\\line two") == "line one\nline two"
    assert lyrics.clean_lyrics("😀 hi <3 @you #1") == " hi 3 you 1"
    assert lyrics.clean_lyrics("Ærøskøbing, ß") == "AEroskobing, ss"
    assert lyrics.clean_lyrics("1+1", v3=False) == "1+1"
    assert lyrics.clean_lyrics("1+1", v3=True) == "11"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60), st.booleans())
def test_clean_and_tokenize_match_the_original(text, v3):
    cleaned = lyrics.clean_lyrics(text, v3)
    assert cleaned == original_clean(text, v3)
    tokens = lyrics.tokenize(cleaned, v3)
    assert tokens.dtype == np.int64 and tokens.shape == (len(cleaned),)
    assert ((tokens >= 1) & (tokens < lyrics.n_vocab(v3))).all()
    assert lyrics.detokenize(tokens, v3) == cleaned
    assert lyrics.clean_lyrics(cleaned, v3) == cleaned


def test_tokenize_rejects_uncleaned_text_and_detokenize_drops_pad():
    with pytest.raises(ValueError, match="clean_lyrics"):
        lyrics.tokenize("café", v3=False)
    with pytest.raises(ValueError, match=r"\['\+'\]"):
        lyrics.tokenize("a+b", v3=True)
    assert lyrics.detokenize([0, 0, 34, 35, 1]) == "hiA"
    with pytest.raises(ValueError, match="outside"):
        lyrics.detokenize([80])


# ---------------------------------------------------------------------------------------------------------------
# The linear lyric window

def test_window_exact_cases():
    full = np.arange(1, 101)
    window, idx = lyrics.lyric_window(full, 1000, 0, 100, 10)          # mid 5: at the start
    np.testing.assert_array_equal(idx, np.arange(0, 10))
    np.testing.assert_array_equal(window, np.arange(1, 11))
    _, idx = lyrics.lyric_window(full, 1000, 500, 100, 10)             # mid int(100 * 550 / 1000) = 55
    np.testing.assert_array_equal(idx, np.arange(50, 60))
    _, idx = lyrics.lyric_window(full, 1000, 990, 100, 10)             # mid 104, clamped to 95
    np.testing.assert_array_equal(idx, np.arange(90, 100))
    window, idx = lyrics.lyric_window([5, 6, 7], 1000, 0, 100, 6)      # short lyrics: left-padded
    np.testing.assert_array_equal(window, [0, 0, 0, 5, 6, 7])
    np.testing.assert_array_equal(idx, [-1, -1, -1, 0, 1, 2])
    window, idx = lyrics.lyric_window([], 1000, 0, 100, 4)
    np.testing.assert_array_equal(window, [0, 0, 0, 0])
    assert lyrics.lyric_window(full, 1000, 0, 100, 0)[0].shape == (0,)
    with pytest.raises(ValueError, match="offset 1000"):
        lyrics.lyric_window(full, 1000, 1000, 100, 10)
    with pytest.raises(ValueError, match="even"):
        lyrics.lyric_window(full, 1000, 0, 100, 7)


@settings(max_examples=300, deadline=None)
@given(n_full=st.integers(0, 300), half=st.integers(0, 64), total=st.integers(1, 10 ** 9), data=st.data())
def test_window_properties(n_full, half, total, data):
    n_tokens = 2 * half
    offset = data.draw(st.integers(0, total - 1))
    duration = data.draw(st.integers(1, 10 ** 9))
    full = np.random.default_rng(n_full).integers(1, 80, n_full)
    window, idx = lyrics.lyric_window(full, total, offset, duration, n_tokens)
    assert window.shape == idx.shape == (n_tokens,)
    np.testing.assert_array_equal(window, np.where(idx >= 0, full[np.maximum(idx, 0)] if n_full else 0, 0))
    if n_full < n_tokens:                                    # padded on the left, lyrics in order
        pad = n_tokens - n_full
        assert (idx[:pad] == -1).all() and (window[:pad] == 0).all()
        np.testing.assert_array_equal(idx[pad:], np.arange(n_full))
    else:                                                    # a contiguous slice around the clamped midpoint
        mid = int(n_full * (offset + duration / 2.0) / total)
        start = min(max(mid, half), n_full - half) - half
        np.testing.assert_array_equal(idx, np.arange(start, start + n_tokens))
        if n_tokens:
            assert 0 <= idx[0] and idx[-1] < n_full


@pytest.mark.torch
def test_window_float32_matches_the_originals_tensor_arithmetic():
    """`set_y_lyric_tokens` computes the midpoint from LongTensor scalars, i.e. in float32."""
    torch = pytest.importorskip("torch", reason="torch reproduces the original's tensor arithmetic")
    rng = np.random.default_rng(0)
    n_full, differ = 5000, 0
    for _ in range(200):
        # Songs longer than 2**24 samples whose window centre maps exactly onto character k in float64;
        # float32 rounding of the offset can land just below k.
        m, k = int(rng.integers(3400, 5292)), int(rng.integers(300, 4700))
        total, duration = n_full * m, 2 * int(rng.integers(1, 2 ** 20))
        offset = k * m - duration // 2
        t = torch.tensor([total, offset, duration], dtype=torch.long)
        mid = int(n_full * (t[1] + t[2] / 2.0) / t[0])
        want = min(max(mid, 256), n_full - 256) - 256
        _, idx32 = lyrics.lyric_window(np.ones(n_full), total, offset, duration, 512, float32=True)
        _, idx64 = lyrics.lyric_window(np.ones(n_full), total, offset, duration, 512)
        assert idx32[0] == want
        assert idx64[0] == min(max(k, 256), n_full - 256) - 256
        differ += int(idx64[0] != want)
    assert differ > 0   # float64 would pick another window for some of these long songs


# ---------------------------------------------------------------------------------------------------------------
# Labels and the y vector

@pytest.fixture
def v2_labeller(tmp_path):
    (tmp_path / "a.txt").write_text("unknown;0\nvarious;0\n;0\nalan_jackson;1\nthe_beatles;2\nac_dc;3\n")
    (tmp_path / "g.txt").write_text("unknown;0\ncountry;1\nrock;2\nblues;3\npop;4\nhip;5\nhop;6\n")
    return labels_lib.Labeller.from_files(tmp_path / "a.txt", tmp_path / "g.txt", labels_v3=False,
                                          max_bow_genre_size=5, n_tokens=8)


@pytest.fixture
def v3_labeller(tmp_path):
    (tmp_path / "a3.txt").write_text("unknown;0\nalan jackson;6785\nthe beatles;7026\n")
    (tmp_path / "g3.txt").write_text("unknown;0\ncountry;507\ncountry rock;546\n")
    return labels_lib.Labeller.from_files(tmp_path / "a3.txt", tmp_path / "g3.txt", labels_v3=True,
                                          max_bow_genre_size=1, n_tokens=4)


def test_name_normalisation():
    assert labels_lib.normalise_name("  The  Beatles!! ") == "the_beatles"
    assert labels_lib.normalise_name("AC/DC") == "ac_dc"
    assert labels_lib.normalise_name("Beyoncé") == "beyonc"
    assert labels_lib.normalise_name("Hip-Hop/R&B") == "hip_hop_r_b"
    assert labels_lib.normalise_name("The Beatles", v3=True) == "the beatles"


def test_make_y_v2_layout(v2_labeller):
    text = "Hello\\world, hello"            # 18 characters after cleaning
    y = labels_lib.make_y("Alan Jackson", "Country Rock", text, 1000, 100, 200, v2_labeller)
    assert y.dtype == np.int64 and y.shape == (v2_labeller.y_width,) == (4 + 5 + 8,)
    np.testing.assert_array_equal(y[:9], [1000, 100, 200, 1, 1, 2, -1, -1, -1])
    full = lyrics.tokenize("Hello\nworld, hello")
    # mid = int(18 * (100 + 100) / 1000) = 3, clamped to 4: characters 0..7
    np.testing.assert_array_equal(y[9:], full[:8])
    assert v2_labeller.describe_y(y) == dict(artist="alan_jackson", genre="country_rock", lyrics="Hello\nwo")
    y = labels_lib.make_y("the beatles", ["hip hop", "pop"], "hi", 1000, 0, 200, v2_labeller)
    np.testing.assert_array_equal(y[:9], [1000, 0, 200, 2, 5, 6, 4, -1, -1])
    np.testing.assert_array_equal(y[9:], [0] * 6 + list(lyrics.tokenize("hi")))


def test_make_y_v3_layout(v3_labeller):
    y = labels_lib.make_y("Alan Jackson", "Country Rock", "old town road", 10_000, 0, 1000, v3_labeller)
    np.testing.assert_array_equal(y[:5], [10_000, 0, 1000, 6785, 546])
    np.testing.assert_array_equal(y[5:], lyrics.tokenize("old ", v3=True))
    with pytest.raises(ValueError, match="country pop"):
        labels_lib.make_y("Alan Jackson", "Country Pop", "", 10_000, 0, 1000, v3_labeller)


def test_unknown_names(v2_labeller):
    with pytest.warns(UserWarning, match=r"(?s)artist 'The Beatle' \(looked up as 'the_beatle'\).*'the_beatles'"):
        y = labels_lib.make_y("The Beatle", "rock", "", 1000, 0, 200, v2_labeller)
    assert y[3] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert v2_labeller.artist_id("Various") == 0        # a listed alias of unknown: no warning
    with pytest.raises(ValueError, match=r"(?s)'rok'.*'rock'"):
        v2_labeller.genre_ids("rok")
    with pytest.raises(ValueError, match="more than max_bow_genre_size 5"):
        v2_labeller.genre_ids("blues rock pop country hip hop")


def test_id_table_errors(tmp_path):
    (tmp_path / "bad.txt").write_text("rock;1\nno id here\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        labels_lib.load_id_table(tmp_path / "bad.txt")


def test_set_y_for_window(v2_labeller):
    text = "".join(chr(ord("a") + i % 26) for i in range(200))
    full = v2_labeller.full_tokens(text)
    total, hop, n_ctx = 100_000, 32, 64
    y0 = labels_lib.make_y("ac/dc", "blues", text, total, 1000, 5000, v2_labeller)
    ys = np.stack([y0, y0])
    y, idx = labels_lib.set_y_for_window(ys, 640, n_ctx * hop, hop, [full, full], v2_labeller.n_tokens)
    assert y[0, 1] == 1000 + 640 * hop and y[0, 2] == n_ctx * hop
    np.testing.assert_array_equal(y[:, 0], ys[:, 0])                # total_length kept
    np.testing.assert_array_equal(y[:, 3:9], ys[:, 3:9])            # artist and genres kept
    want, want_idx = lyrics.lyric_window(full, total, 1000 + 640 * hop, n_ctx * hop, 8)
    np.testing.assert_array_equal(y[0, 9:], want)
    np.testing.assert_array_equal(idx[1], want_idx)
    np.testing.assert_array_equal(ys[0], y0)                        # input untouched
    y_nolyrics, none = labels_lib.set_y_for_window(ys[:, :9], 10, 2048, 8, None, 0)
    assert none is None and y_nolyrics[0, 1] == 1000 + 80 and y_nolyrics[0, 2] == 2048
    with pytest.raises(ValueError, match="full_tokens"):
        labels_lib.set_y_for_window(ys, 0, 2048, 8, [full], 8)

"""What a sampling run writes (original `sample.py::_sample` + `save_html.py`), per level in `WORKDIR/level_{l}/`:

    item_{i}.wav      the level's codes decoded by the VQ-VAE at its sample rate (16-bit PCM)
    item_{i}.png      mel spectrogram of item_{i}.wav, 1024 x 256 cells with axes in Hz and seconds and the
                      level and item in its title (drawn and PNG-encoded here with numpy, zlib and struct)
    codes.npz         the codes so far, rewritten atomically after every window (see `Codes`); each distinct
                      lyrics text is stored once, and only once the level is complete (until then the lyrics
                      are the workdir's run.json's)
    index.html        an audio player per item, its labels, and the lyrics lit up in time with the music

The codes file is a plain npz (never a pickle): read it with `np.load(path)` or `read_codes`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import html
import io
import json
import pathlib
import struct
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from jukejax.audio import write_audio
from jukejax.errors import atomic_write_bytes
from jukejax.vqvae.codes import CodesError, check_codes, open_npz

CODES_FILE = "codes.npz"
INDEX_FILE = "index.html"
CODES_FORMAT = 2    # 2: lyrics stored once per distinct text (lyrics_json + lyrics_of_item), when complete


def level_dir(workdir, level: int) -> pathlib.Path:
    return pathlib.Path(workdir) / f"level_{level}"


# ------------------------------------------------------------------------------------------------------------
# Codes

@dataclasses.dataclass
class Codes:
    """The npz codes file of one level.

    z              int32 (n_samples, tokens so far) of this level
    zs             every level's codes known when written, keys `z_level_{k}` in the file (z included): upper
                   levels are final, lower ones are what the run started from (empty, a prompt, a continuation)
    lyrics         per item; in the file each distinct text once (`lyrics_json`, UTF-8 bytes of a JSON list,
                   indexed by `lyrics_of_item`), written with the complete level only
    windows_done   int64 starts of the windows sampled so far, in order; `complete` once the level is full,
                   `outputs_done` once its wavs, PNGs and index.html are written
    y              the song's label vector for this level's prior (offset 0), (n_samples, y_width)
    """
    level: int
    z: np.ndarray
    zs: Dict[int, np.ndarray]
    sr: int
    hop_lengths: Tuple[int, ...]
    artist: List[str]
    genre: List[str]
    lyrics: List[str]
    y: np.ndarray
    total_length: int
    sample_length: int
    windows_done: np.ndarray
    complete: bool = False
    outputs_done: bool = False
    settings: str = "{}"

    @property
    def hop_length(self) -> int:
        return self.hop_lengths[self.level]

    @property
    def n_samples(self) -> int:
        return self.z.shape[0]

    def seconds(self, level: Optional[int] = None) -> float:
        level = self.level if level is None else level
        z = self.zs.get(level, self.z if level == self.level else None)
        return 0.0 if z is None else z.shape[1] * self.hop_lengths[level] / self.sr


def write_codes(path, codes: Codes) -> pathlib.Path:
    """Write `codes` to `path` atomically (a temporary file renamed over it), so a killed run leaves either
    the previous file or the new one."""
    path = pathlib.Path(path)
    arrays = dict(
        format=np.int64(CODES_FORMAT), level=np.int64(codes.level), z=np.asarray(codes.z, np.int32),
        sr=np.int64(codes.sr), hop_length=np.int64(codes.hop_length),
        hop_lengths=np.asarray(codes.hop_lengths, np.int64),
        artist=np.asarray(codes.artist, dtype=np.str_), genre=np.asarray(codes.genre, dtype=np.str_),
        y=np.asarray(codes.y, np.int64),
        total_length=np.int64(codes.total_length), sample_length=np.int64(codes.sample_length),
        windows_done=np.asarray(codes.windows_done, np.int64), complete=np.bool_(codes.complete),
        outputs_done=np.bool_(codes.outputs_done), settings=np.str_(codes.settings))
    texts, of_item = dedupe(codes.lyrics)
    arrays["lyrics_of_item"] = np.asarray(of_item, np.int64)
    arrays["lyrics_sha256"] = np.asarray([text_sha256(t) for t in texts], dtype=np.str_)
    if codes.complete:  # in-progress rewrites leave the text to run.json: it is written once per run
        arrays["lyrics_json"] = _utf8(json.dumps(texts))
    for level, z in codes.zs.items():
        arrays[f"z_level_{level}"] = np.asarray(z, np.int32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path


def dedupe(texts: Sequence[str]) -> Tuple[List[str], List[int]]:
    """(distinct texts in order of first use, index of each item's text)."""
    distinct: Dict[str, int] = {}
    of_item = [distinct.setdefault(t, len(distinct)) for t in texts]
    return list(distinct), of_item


def _utf8(text: str) -> np.ndarray:
    """Text as a uint8 array of its UTF-8 bytes (numpy's str arrays take 4 bytes a character)."""
    return np.frombuffer(text.encode("utf-8"), np.uint8)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _lyrics_from_run_json(path: pathlib.Path, hashes: Sequence[str]) -> Optional[List[str]]:
    """The distinct lyrics texts of an unfinished level's codes file, from its workdir's run.json."""
    run_json = path.parent.parent / "run.json"
    try:
        items = json.loads(run_json.read_text())["items"]
        texts = list(items["lyrics_text"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    by_hash = {text_sha256(t): t for t in texts if isinstance(t, str)}
    if not all(h in by_hash for h in hashes):
        return None
    return [by_hash[h] for h in hashes]


def read_codes(path) -> Codes:
    """A codes file, checked for what needs no model: the fields a run writes, integer codes of rank 2 with one
    row per sample at every level, a level its hop lengths know. (`modes` checks the codebook
    range against the model.)"""
    path = pathlib.Path(path)
    with open_npz(path) as data:
        try:
            return _codes_from_npz(path, data)
        except CodesError:
            raise
        except (OSError, ValueError, KeyError, EOFError, TypeError, zlib.error) as e:
            raise CodesError(f"codes file {path}: cannot be read ({type(e).__name__}: {e})") from None


def _scalar_int(path, data, key) -> int:
    value = np.asarray(data[key])
    if value.shape != () or value.dtype.kind not in "iu":
        raise CodesError(f"codes file {path}: {key} is {value.dtype} {value.shape}; expected one integer")
    return int(value)


def _codes_from_npz(path: pathlib.Path, data) -> Codes:
    files = set(data.files)
    need = {"format", "level", "z", "sr", "hop_lengths", "windows_done"}
    if not need <= files:
        raise CodesError(f"codes file {path}: missing {', '.join(sorted(need - files))}; not a codes.npz "
                         f"written by sample.py")
    fmt = _scalar_int(path, data, "format")
    if fmt not in (1, CODES_FORMAT):
        raise CodesError(f"codes file {path}: format {fmt}, this version reads 1 and {CODES_FORMAT}")
    hop_lengths = tuple(int(h) for h in np.asarray(data["hop_lengths"]).reshape(-1))
    level = _scalar_int(path, data, "level")
    if not 0 <= level < len(hop_lengths):
        raise CodesError(f"codes file {path}: level {level}, but its hop lengths {hop_lengths} have levels "
                         f"0..{len(hop_lengths) - 1}")
    # Any integer dtype in the file; the codebook range is checked against the model that reads them.
    z = check_codes(data["z"], l_bins=None, name=f"codes file {path}: z")
    zs = {}
    for k in sorted(k for k in files if k.startswith("z_level_")):
        suffix = k[len("z_level_"):]
        if not suffix.isdigit() or int(suffix) >= len(hop_lengths):
            raise CodesError(f"codes file {path}: {k} is not a level of its hop lengths {hop_lengths}")
        zs[int(suffix)] = check_codes(data[k], l_bins=None, name=f"codes file {path}: {k}")
    n = z.shape[0]
    for k, zk in zs.items():
        if zk.shape[0] != n:
            raise CodesError(f"codes file {path}: z_level_{k} has {zk.shape[0]} rows, z has {n}")
    text = lambda k: [str(s) for s in np.asarray(data[k]).reshape(-1)] if k in files else [""] * n
    artist, genre = text("artist"), text("genre")
    if "lyrics_of_item" in files:
        of_item = [int(i) for i in data["lyrics_of_item"]]
        if "lyrics_json" in files:
            texts = json.loads(np.asarray(data["lyrics_json"], np.uint8).tobytes().decode("utf-8"))
            if not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
                raise CodesError(f"codes file {path}: lyrics_json is not a list of texts")
        else:
            texts = _lyrics_from_run_json(path, text("lyrics_sha256"))
            if texts is None:
                raise CodesError(f"codes file {path}: written by a run that did not finish, and its lyrics are "
                                 f"not in {path.parent.parent / 'run.json'}; finish it with --resume, or pass "
                                 f"--lyrics")
        if len(of_item) != n or any(not 0 <= i < len(texts) for i in of_item):
            raise CodesError(f"codes file {path}: lyrics_of_item does not index its {len(texts)} lyrics texts")
        lyrics = [texts[i] for i in of_item]
    else:
        lyrics = text("lyrics")
    for name, values in (("artist", artist), ("genre", genre), ("lyrics", lyrics)):
        if len(values) != n:
            raise CodesError(f"codes file {path}: {len(values)} {name} entries for {n} samples")
    return Codes(
        level=level, z=z, zs=zs, sr=_scalar_int(path, data, "sr"), hop_lengths=hop_lengths, artist=artist,
        genre=genre, lyrics=lyrics, y=data["y"] if "y" in files else np.zeros((n, 0), np.int64),
        total_length=_scalar_int(path, data, "total_length") if "total_length" in files else 0,
        sample_length=_scalar_int(path, data, "sample_length") if "sample_length" in files else 0,
        windows_done=np.asarray(data["windows_done"]).astype(np.int64).reshape(-1),
        complete=bool(data["complete"]) if "complete" in files else False,
        outputs_done=bool(data["outputs_done"]) if "outputs_done" in files else False,
        settings=str(data["settings"]) if "settings" in files else "{}")


# ------------------------------------------------------------------------------------------------------------
# Spectrogram PNG

# A dark-to-light colour ramp (black, indigo, crimson, orange, pale yellow), like the usual "magma" maps.
_RAMP = np.array([[0, 0, 4], [59, 15, 112], [183, 55, 121], [252, 137, 97], [252, 253, 191]], np.float64)


def colour_ramp(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB (..., 3) along `_RAMP`."""
    v = np.clip(np.asarray(v, np.float64), 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.minimum(np.floor(v).astype(int), len(_RAMP) - 2)
    frac = (v - lo)[..., None]
    return np.round(_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of an (H, W, 3) uint8 image: signature, IHDR, one zlib IDAT, IEND."""
    rgb = np.ascontiguousarray(rgb, np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"png_bytes needs a non-empty (H, W, 3) image, got {rgb.shape}")
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1).tobytes()  # filter 0

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# A 3 x 5 pixel font for the axes and title (drawn at 2x): every character the labels use.
_GLYPHS = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", ".": "000000000000010", ",": "000000000010100",
    "-": "000000111000000", ":": "000010000010000", " ": "000000000000000", "k": "100101110101101",
    "H": "101101111101101", "z": "000111001010111", "s": "000011110011110", "l": "110010010010111",
    "e": "000111111100011", "v": "000101101101010", "i": "010000010010010", "t": "010111010010011",
    "m": "000111111101101", "n": "000110101101101", "a": "000011101101011", "r": "000101110100100",
    "f": "011010111010010", "p": "000111101111100", "c": "000111100100111", "g": "000111101111001",
    "o": "000111101101111", "d": "001111101101111", "u": "000101101101111", "b": "100111101101111",
    "y": "000101101111001", "(": "001010010010001", ")": "100010010010100", "/": "001001010100100",
}
_SCALE = 2                       # font pixels per glyph pixel
_ADVANCE = 4 * _SCALE            # 3 columns + 1 of space


def _draw_text(img: np.ndarray, text: str, x: int, y: int, colour=(40, 40, 40)) -> None:
    """Draw `text` with its top-left corner at (x, y); characters without a glyph are skipped as spaces."""
    for c in text:
        glyph = _GLYPHS.get(c)
        if glyph is not None:
            bits = np.array([int(b) for b in glyph], bool).reshape(5, 3)
            block = np.kron(bits, np.ones((_SCALE, _SCALE), bool))
            h, w = block.shape
            region = img[y:y + h, x:x + w]
            region[block[:region.shape[0], :region.shape[1]]] = colour
        x += _ADVANCE


def _text_width(text: str) -> int:
    return len(text) * _ADVANCE


def hz_to_mel(f):
    """The HTK mel scale: 2595 log10(1 + f / 700)."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters equally spaced in mel between fmin and fmax, each
    normalised to unit area (the usual "slaney" normalisation), so every row reads as an average magnitude."""
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - freqs) / np.maximum(upper - centre, 1e-9)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    # A band narrower than one FFT bin would be empty: give it the nearest bin.
    empty = weights.sum(axis=1) == 0
    if empty.any():
        nearest = np.abs(freqs[None, :] - centre[empty]).argmin(axis=1)
        weights[np.flatnonzero(empty), nearest] = 1.0
    return weights / weights.sum(axis=1, keepdims=True)


def spectrogram(audio: np.ndarray, sr: int, width: int = 1024, n_mels: int = 256, fmin: float = 30.0,
                dynamic_range_db: float = 80.0) -> np.ndarray:
    """Log-magnitude mel spectrogram image (n_mels, width) in [0, 1], low frequencies at the bottom: `width`
    frames evenly spread over the audio (Hann windows of ~93 ms, overlapping for short audio), `n_mels`
    mel bands from `fmin` to the Nyquist frequency, the top `dynamic_range_db` dB of the loudest cell."""
    x = np.asarray(audio, np.float64).reshape(-1)
    n_fft = 1 << int(np.ceil(np.log2(max(256, 0.093 * sr))))   # 2048 at 22.05 kHz: 10.8 Hz bins
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    starts = np.linspace(0, x.size - n_fft, width).round().astype(np.int64)
    frames = x[starts[:, None] + np.arange(n_fft)[None, :]]
    mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))
    mel = mag @ mel_filterbank(sr, n_fft, n_mels, min(fmin, sr / 4), sr / 2).T
    db = 20 * np.log10(mel + 1e-9)
    v = (db - (db.max() - dynamic_range_db)) / dynamic_range_db
    return np.clip(v, 0.0, 1.0).T[::-1]


def _nice_step(span: float, max_ticks: int) -> float:
    for step in (0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600):
        if span / step <= max_ticks:
            return step
    return span / max_ticks


def _hz_label(f: float) -> str:
    return f"{f / 1000:g}k" if f >= 1000 else f"{f:g}"


# Margins around the plot, in pixels: title above, frequency labels left, time labels below.
_TOP, _LEFT, _BOTTOM, _RIGHT = 26, 64, 34, 24


def spectrogram_image(audio: np.ndarray, sr: int, title: str = "", width: int = 1024, n_mels: int = 256,
                      fmin: float = 30.0) -> np.ndarray:
    """(H, W, 3) uint8: the mel spectrogram (width x n_mels pixels) with a frequency axis in Hz (mel-spaced
    ticks), a time axis in seconds and `title` above it."""
    spec = spectrogram(audio, sr, width, n_mels, fmin)
    h, w = spec.shape
    img = np.full((_TOP + h + _BOTTOM, _LEFT + w + _RIGHT, 3), 255, np.uint8)
    img[_TOP:_TOP + h, _LEFT:_LEFT + w] = colour_ramp(spec)
    grey = (120, 120, 120)
    img[_TOP:_TOP + h + 1, _LEFT - 1] = grey           # axes
    img[_TOP + h, _LEFT - 1:_LEFT + w] = grey
    _draw_text(img, title, _LEFT, 6)

    fmin, fmax = min(fmin, sr / 4), sr / 2
    lo, hi = hz_to_mel(fmin), hz_to_mel(fmax)
    _draw_text(img, "Hz", 4, _TOP - 2 * _SCALE - 8)
    last_row = None
    for f in (50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000):
        if not fmin <= f <= fmax:
            continue
        row = _TOP + h - 1 - int(round((hz_to_mel(f) - lo) / (hi - lo) * (h - 1)))
        if last_row is not None and last_row - row < 14:  # mel squeezes the lowest ticks together
            continue
        last_row = row
        img[row, _LEFT - 6:_LEFT - 1] = grey
        label = _hz_label(f)
        _draw_text(img, label, _LEFT - 8 - _text_width(label), max(0, row - 5))

    seconds = np.asarray(audio).reshape(-1).size / sr
    step = _nice_step(seconds, 10)
    t = 0.0
    while t <= seconds + 1e-9:
        col = _LEFT + int(round(t / max(seconds, 1e-9) * (w - 1)))
        img[_TOP + h + 1:_TOP + h + 6, col] = grey
        label = f"{t:g}"
        _draw_text(img, label, max(0, col - _text_width(label) // 2), _TOP + h + 8)
        t = round(t + step, 6)
    _draw_text(img, "s", _LEFT + w + 4 - _ADVANCE, _TOP + h + 8 + 12)
    return img


def write_spectrogram_png(path, audio: np.ndarray, sr: int, title: str = "") -> pathlib.Path:
    """item_{i}.png: `spectrogram_image` as an 8-bit RGB PNG."""
    path = pathlib.Path(path)
    atomic_write_bytes(path, png_bytes(spectrogram_image(audio, sr, title)))
    return path


# ------------------------------------------------------------------------------------------------------------
# Lyric timings and the HTML page

def char_timings(alignment: Optional[np.ndarray], n_chars: int, hop_length: int, sr: int) -> List[Optional[float]]:
    """Time in seconds at which each lyric character is sung: the top-level token attending to it most.

    Column j of an alignment is the lyric key at position j, whose input is character j - 1 (keys are shifted
    by one like every autoregressive input; the original's page shows `[''] + lyrics[:-1]` for the same
    reason), so character c takes column c + 1; a character no window attended to has no time."""
    if alignment is None:
        return [None] * n_chars
    times: List[Optional[float]] = []
    peak = alignment.max(axis=0) if alignment.size else np.zeros(alignment.shape[1])
    best = alignment.argmax(axis=0) if alignment.size else np.zeros(alignment.shape[1], int)
    for c in range(n_chars):
        col = c + 1
        if col < alignment.shape[1] and peak[col] > 0:
            times.append(round((int(best[col]) + 0.5) * hop_length / sr, 3))
        else:
            times.append(None)
    return times


@dataclasses.dataclass
class HtmlItem:
    wav: str
    png: str
    artist: str
    genre: str
    lyrics: str                            # the cleaned lyrics (what the prior reads)
    timings: Optional[List[Optional[float]]] = None


_STYLE = """body{font-family:sans-serif;max-width:1500px;margin:auto;padding:1em;background:#fafafa}
.item{background:#fff;border:1px solid #ddd;border-radius:6px;padding:1em;margin:1em 0}
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start} .side{flex:1 1 280px;min-width:260px}
.spec{flex:3 1 640px;max-width:1104px} audio{width:100%} img{width:100%;height:auto}
pre{white-space:pre-wrap;font-size:1.1em;line-height:1.5} .sung{color:#c0392b} .now{background:#fde2a7}"""

_SCRIPT = """<script>
document.querySelectorAll('audio[data-item]').forEach(function (audio) {
  var spans = document.querySelectorAll('#lyrics_' + audio.dataset.item + ' span[data-t]');
  audio.addEventListener('timeupdate', function () {
    var now = audio.currentTime, last = null;
    spans.forEach(function (s) {
      var sung = parseFloat(s.dataset.t) <= now;
      s.className = sung ? 'sung' : '';
      if (sung && (last === null || parseFloat(s.dataset.t) >= parseFloat(last.dataset.t))) last = s;
    });
    if (last) last.className = 'sung now';
  });
});
</script>"""


def _lyrics_html(item: int, text: str, timings: Optional[List[Optional[float]]]) -> str:
    if not text:
        return ""
    if timings is None:
        return f"<pre id='lyrics_{item}'>{html.escape(text)}</pre>"
    spans = []
    for ch, t in zip(text, timings):
        c = html.escape(ch)
        spans.append(f"<span data-t='{t}'>{c}</span>" if t is not None else c)
    return f"<pre id='lyrics_{item}'>{''.join(spans)}</pre>"


def write_index_html(path, title: str, items: Sequence[HtmlItem], note: str = "") -> pathlib.Path:
    """One page per level: per item, its player, spectrogram, labels and lyrics (timed when aligned)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<link rel='icon' href='data:;base64,iVBORw0KGgo='><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    for i, it in enumerate(items):
        parts.append(f"<div class='item'><h2>item {i}</h2><div class='row'><div class='side'>"
                     f"<div>Artist {html.escape(it.artist)}, Genre {html.escape(it.genre)}</div>"
                     f"<audio data-item='{i}' src='{html.escape(it.wav)}' controls preload='none'></audio></div>"
                     f"<div class='spec'><img src='{html.escape(it.png)}' "
                     f"alt='mel spectrogram of {html.escape(it.wav)}'></div></div>"
                     f"{_lyrics_html(i, it.lyrics, it.timings)}</div>")
    parts.append(_SCRIPT if any(it.timings for it in items) else "")
    parts.append("</body></html>\n")
    path = pathlib.Path(path)
    atomic_write_bytes(path, "".join(parts).encode("utf-8"))
    return path


def write_level_audio(directory, audio: np.ndarray, sr: int, level: Optional[int] = None
                      ) -> List[Tuple[str, str]]:
    """item_{i}.wav and item_{i}.png for each row of audio (N, T); returns their names."""
    directory = pathlib.Path(directory)
    names = []
    for i, x in enumerate(np.asarray(audio, np.float32)):
        wav, png = f"item_{i}.wav", f"item_{i}.png"
        write_audio(directory / wav, x, sr)
        title = (f"level {level}, " if level is not None else "") + f"item {i}, mel spectrogram"
        write_spectrogram_png(directory / png, x, sr, title)
        names.append((wav, png))
    return names


def write_alignments(path, alignments: Sequence[np.ndarray]) -> pathlib.Path:
    """Per-item (T, n_chars) alignments as float16 arrays `item_{i}` of an npz."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"item_{i}": np.asarray(a, np.float16) for i, a in enumerate(alignments)})
    path = pathlib.Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_alignments(path) -> Optional[List[np.ndarray]]:
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return [data[f"item_{i}"].astype(np.float32) for i in range(len(data.files))]


def settings_json(settings: Dict) -> str:
    return json.dumps(settings, sort_keys=True)

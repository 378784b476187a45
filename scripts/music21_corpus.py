"""A demo dataset of real public-domain music: pieces of music21's bundled corpus, rendered with FluidSynth.

The recipe, one piece at a time and never more than one render process:

  1. select: every piece of each chosen corpus collection (a file, or one tune `X:` of an ABC collection
     file), in sorted corpus-path order; `max_pieces` takes evenly spaced ones of that list, so the same
     arguments always pick the same pieces;
  2. prepare: parse, expand repeats (falling back to the unexpanded score, with repeat signs removed, when
     expansion fails), drop tempo marks that carry no number and give the piece its collection's default
     tempo if none is left, set one General MIDI program per part (choir for vocal works, strings for
     quartets, violin/flute/piano for folk tunes), remove chord symbols and zero-length notes (music21
     exports them as notes whose note-off precedes the note-on: a note that never ends, the cause of
     FluidSynth renders "without end"), export MIDI;
  3. bound: parsing and export run under a time limit; the MIDI's own length (its tempo map, as FluidSynth
     reads it) is checked before rendering; longer than `max_seconds` is skipped or truncated at a bar line
     (clearly long scores are cut before export, which is slow for them); a MIDI file with a note-on that
     no note-off ends is skipped; FluidSynth runs as a subprocess with a wall-clock timeout and a hard
     output-size limit (RLIMIT_FSIZE), and the rendered length is checked against the MIDI's;
  4. write: mono PCM-16 wav at `sr`, peak-normalised, under `<out>/audio/<collection>/`, and one line per
     piece in `<out>/audio/metadata.jsonl`:
        {"file", "artist", "genre", "lyrics", "lyric_times": [[seconds, syllable], ...], ...}
     (the builder reads file/artist/genre/lyrics and ignores the other keys). MIDI files go to
     `<out>/midi/` and a report of what was rendered and skipped (with why) to `<out>/render_summary.json`
     -- both outside the audio folder, which must hold only songs and metadata.jsonl.

Composer -> artist (the collection's composer; "Traditional" for folk collections; the score's own composer
field for the trecento collection), collection -> genre, the score's lyric events -> lyrics, with the onset
time of each syllable in the rendered audio.

Needs the `music21` package (imported lazily, so the module imports without it) and, to render, the
`fluidsynth` program and a General MIDI soundfont (Debian: `fluidsynth`, `fluid-soundfont-gm` or
`timgm6mb-soundfont`); `find_renderer` says exactly what is missing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unicodedata
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from jukejax.audio import write_audio
from jukejax.errors import UserError, atomic_write_text

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.jsonl"           # the builder's name (jukejax.data.builder.METADATA_FILE)
RENDER_SUMMARY_FILE = "render_summary.json"
APT_PACKAGES = ("fluidsynth", "fluid-soundfont-gm")
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",        # fluid-soundfont-gm
    "/usr/share/sounds/sf2/default-GM.sf2",        # Debian's alternatives link
    "/usr/share/sounds/sf2/TimGM6mb.sf2",          # timgm6mb-soundfont
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
SCORE_EXTENSIONS = (".mxl", ".xml", ".musicxml", ".krn", ".abc")  # preference order among same-stem files

# General MIDI programs (0-based, as music21 and the MIDI wire format count them).
GM = {
    "piano": 0, "church_organ": 19, "accordion": 21, "violin": 40, "viola": 41, "cello": 42,
    "contrabass": 43, "timpani": 47, "strings": 48, "choir_aahs": 52, "voice_oohs": 53, "trumpet": 56,
    "trombone": 57, "french_horn": 60, "oboe": 68, "bassoon": 70, "clarinet": 71, "flute": 73,
    "recorder": 74, "fiddle": 110,
}
GM_NAMES = {v: k for k, v in GM.items()}

# Part names that mean an instrument (checked before the ensemble's default), by keyword.
_INSTRUMENT_WORDS = (
    (("violoncell", "cello", "continuo", "basso continuo"), "cello"),
    (("viola",), "viola"),
    (("violin", "violino"), "violin"),
    (("contrabass", "double bass"), "contrabass"),
    (("horn", "corno"), "french_horn"),
    (("trumpet", "tromba", "clarin"), "trumpet"),
    (("trombone",), "trombone"),
    (("timpani", "tympani"), "timpani"),
    (("oboe",), "oboe"),
    (("bassoon", "fagott"), "bassoon"),
    (("flute", "flauto", "traverso"), "flute"),
    (("recorder",), "recorder"),
    (("organ", "organo"), "church_organ"),
)


class Music21CorpusError(UserError):
    """The recipe cannot run: a missing tool, package or soundfont, or a bad argument."""


class PieceSkipped(Exception):
    """One piece cannot be used; `reason` says why (it goes to the log and the render summary)."""


@dataclasses.dataclass(frozen=True)
class Collection:
    """A folder of music21's core corpus as one genre.

    `ensemble` picks the instruments: 'vocal' (choir; instrumental parts by their name), 'quartet' (violin,
    violin, viola, cello by part name or position) or 'folk' (one of `folk_programs` per piece, chosen by a
    hash of the piece so it is stable). `artist=None` takes the score's composer field.
    """
    name: str
    genre: str
    artist: Optional[str]
    ensemble: str
    default_bpm: float = 120.0
    include: str = r".*"                  # regex on the corpus-relative path
    exclude: str = r"(?!)"
    folk_programs: Tuple[int, ...] = (GM["violin"], GM["flute"], GM["piano"])


COLLECTIONS: Dict[str, Collection] = {c.name: c for c in (
    Collection("bach", "chorale", "Johann Sebastian Bach", "vocal", 80.0,
               include=r"^bach/bwv[^/]*\.mxl$", exclude=r"^bach/bwv846\.mxl$"),   # bwv846: a WTC prelude
    Collection("monteverdi", "madrigal", "Claudio Monteverdi", "vocal", 120.0, include=r"\.mxl$"),
    Collection("palestrina", "mass", "Giovanni Pierluigi da Palestrina", "vocal", 120.0),
    Collection("trecento", "trecento", None, "vocal", 120.0),
    Collection("haydn", "string quartet", "Joseph Haydn", "quartet", 120.0),
    Collection("mozart", "string quartet", "Wolfgang Amadeus Mozart", "quartet", 120.0,
               exclude=r"^mozart/k545/"),                                           # k545: a piano sonata
    Collection("beethoven", "string quartet", "Ludwig van Beethoven", "quartet", 120.0),
    Collection("essenFolksong", "european folk song", "Traditional", "folk", 120.0),
    Collection("ryansMammoth", "american fiddle tune", "Traditional", "folk", 120.0),
    Collection("oneills1850", "irish folk tune", "Traditional", "folk", 120.0),
    Collection("airdsAirs", "scottish air", "Traditional", "folk", 100.0),
)}
DEFAULT_COLLECTIONS = ("bach", "monteverdi", "palestrina", "haydn", "mozart", "beethoven", "essenFolksong",
                       "ryansMammoth", "oneills1850")


@dataclasses.dataclass(frozen=True, order=True)
class Piece:
    """One piece: a corpus file (`path`, relative to the corpus root) or tune `number` of an ABC file."""
    collection: str
    path: str
    number: Optional[int] = None

    @property
    def id(self) -> str:
        return self.path if self.number is None else f"{self.path}#{self.number}"

    @property
    def audio_key(self) -> str:
        """Where its audio goes, relative to the audio folder: `<collection>/<path without folder>.wav`."""
        rel = pathlib.PurePosixPath(self.path)
        parts = rel.with_suffix("").parts[1:] if len(rel.parts) > 1 else rel.with_suffix("").parts
        stem = "_".join(_safe_name(p) for p in parts)
        if self.number is not None:
            stem += f"_{self.number:04d}"
        return f"{self.collection}/{stem}.wav"


def _safe_name(name: str) -> str:
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "piece"


# ----------------------------------------------------------------------------------------------------------
# music21 and the corpus

def _music21():
    try:
        import music21  # noqa: F401
    except ImportError:
        raise Music21CorpusError("the music21 package is not installed; install it into the virtualenv with "
                                 "`pip install music21==10.5.1`") from None
    return music21


def corpus_root() -> pathlib.Path:
    """The folder of music21's bundled ('core') corpus."""
    return pathlib.Path(_music21().__file__).parent / "corpus"


def corpus_files(root: Optional[pathlib.Path] = None) -> List[str]:
    """Every score file of the core corpus, corpus-relative with '/', sorted."""
    root = root or corpus_root()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in SCORE_EXTENSIONS)


def _abc_numbers(text: str) -> List[int]:
    """The tune numbers (`X:` fields) of an ABC file, in file order, without repeats."""
    seen, out = set(), []
    for m in re.finditer(r"(?m)^X:\s*(\d+)", text):
        n = int(m.group(1))
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


def list_pieces(collection: str, files: Sequence[str], read_text=None) -> List[Piece]:
    """All pieces of `collection` among corpus-relative `files`, sorted by (path, tune number).

    Files of the same stem in several formats (a movement as both .krn and .mxl) count once, in the first
    format of SCORE_EXTENSIONS. An ABC file holding several tunes gives one piece per tune;
    `read_text(path) -> str` reads it (default: from the corpus folder).
    """
    spec = _collection(collection)
    inc, exc = re.compile(spec.include), re.compile(spec.exclude)
    chosen: Dict[str, str] = {}
    for f in sorted(files):
        if not f.startswith(spec.name + "/") or not inc.search(f) or exc.search(f):
            continue
        ext = pathlib.PurePosixPath(f).suffix.lower()
        if ext not in SCORE_EXTENSIONS:
            continue
        stem = f[: -len(ext)]
        if stem not in chosen or SCORE_EXTENSIONS.index(ext) < SCORE_EXTENSIONS.index(
                pathlib.PurePosixPath(chosen[stem]).suffix.lower()):
            chosen[stem] = f
    if read_text is None:
        root = corpus_root()
        read_text = lambda p: (root / p).read_text(encoding="utf-8", errors="replace")  # noqa: E731
    pieces = []
    for f in sorted(chosen.values()):
        if f.lower().endswith(".abc"):
            numbers = _abc_numbers(read_text(f))
            if len(numbers) > 1:
                pieces.extend(Piece(spec.name, f, n) for n in numbers)
                continue
        pieces.append(Piece(spec.name, f))
    return sorted(pieces, key=lambda p: (p.path, -1 if p.number is None else p.number))


def evenly_spaced(items: Sequence[Any], n: Optional[int]) -> List[Any]:
    """`n` items spread evenly over `items` (first included), in order; all of them if `n` is None or
    large enough. Deterministic: depends only on len(items) and n."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    if n <= 0:
        return []
    return [items[(i * len(items)) // n] for i in range(n)]


def select_pieces(collections: Sequence[str], max_pieces: Optional[int] = None,
                  files: Optional[Sequence[str]] = None, read_text=None) -> List[Piece]:
    """Up to `max_pieces` pieces of each collection (evenly spaced over its sorted list), collections in
    the order given."""
    for c in collections:
        _collection(c)
    if len(set(collections)) != len(collections):
        raise Music21CorpusError(f"collections repeat: {list(collections)}")
    files = corpus_files() if files is None else files
    out = []
    for c in collections:
        pieces = list_pieces(c, files, read_text)
        if not pieces:
            log.warning("collection %s has no pieces in the corpus", c)
        out.extend(evenly_spaced(pieces, max_pieces))
    return out


def _collection(name: str) -> Collection:
    try:
        return COLLECTIONS[name]
    except KeyError:
        raise Music21CorpusError(f"unknown collection {name!r}; known: {', '.join(COLLECTIONS)}") from None


@contextlib.contextmanager
def _time_limit(seconds: Optional[float], what: str):
    """Raise PieceSkipped if the block runs longer than `seconds` (SIGALRM; only in the main thread)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    class _Expired(BaseException):  # not an Exception, so no `except Exception` inside music21 eats it
        pass

    def _alarm(signum, frame):
        raise _Expired()

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise PieceSkipped(f"{what} took longer than {seconds:g} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def load_score(piece: Piece, root: Optional[pathlib.Path] = None):
    """The piece as a music21 Score (one tune of an ABC collection when `piece.number` is set)."""
    m21 = _music21()
    root = root or corpus_root()
    kwargs = {} if piece.number is None else {"number": piece.number}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = m21.converter.parse(os.fspath(root / piece.path), **kwargs)
    if isinstance(s, m21.stream.Opus):
        scores = list(s.scores)
        if len(scores) != 1:
            raise PieceSkipped(f"parses as an opus of {len(scores)} scores, expected one")
        s = scores[0]
    if not isinstance(s, m21.stream.Score):
        score = m21.stream.Score()
        score.insert(0, s)
        s = score
    if not s.parts:
        raise PieceSkipped("the score has no parts")
    return s


# ----------------------------------------------------------------------------------------------------------
# Preparing a score: repeats, tempo, instruments

def _strip_repeats(score) -> None:
    """Turn repeat barlines into plain ones and drop repeat brackets and repeat expressions, so that MIDI
    export (which expands repeats itself) plays the score once through."""
    m21 = _music21()
    bar, spanner, repeat = m21.bar, m21.spanner, m21.repeat
    for m in score.recurse().getElementsByClass(m21.stream.Measure):
        for side in ("leftBarline", "rightBarline"):
            b = getattr(m, side)
            if isinstance(b, bar.Repeat):
                setattr(m, side, bar.Barline("regular"))
    for el in list(score.recurse().getElementsByClass((spanner.RepeatBracket, repeat.RepeatExpression))):
        site = el.activeSite
        if site is not None:
            site.remove(el)
    for sp in list(score.spannerBundle.getByClass(spanner.RepeatBracket)):
        score.spannerBundle.remove(sp)


def expand_repeats(score) -> Tuple[Any, str]:
    """(score with repeats written out, how): 'expanded', 'none' (nothing to expand), or
    'unexpanded: <why>' when expansion failed and the repeat signs were removed instead."""
    m21 = _music21()
    if not score.recurse().getElementsByClass(m21.stream.Measure):
        return score, "none"
    has_repeats = bool(score.recurse().getElementsByClass((m21.bar.Repeat, m21.spanner.RepeatBracket,
                                                            m21.repeat.RepeatExpression)))
    if not has_repeats:
        return score, "none"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expanded = score.expandRepeats()
        if not expanded.parts or expanded.highestTime <= 0:
            raise ValueError("expansion produced an empty score")
        return expanded, "expanded"
    except Exception as err:  # music21 raises many kinds on inconsistent repeat marks
        why = " ".join(str(err).split())[:160] or type(err).__name__
        _strip_repeats(score)
        return score, f"unexpanded: {type(err).__name__}: {why}"


def normalize_tempo(score, default_bpm: float) -> Optional[float]:
    """Remove tempo marks that give no playable number (MIDI export ignores them); if no mark is left,
    set `default_bpm` (quarter notes per minute) at the start. Returns the bpm it set, or None."""
    m21 = _music21()
    usable = 0
    for mm in list(score.recurse().getElementsByClass(m21.tempo.MetronomeMark)):
        try:
            bpm = mm.getQuarterBPM()
        except Exception:
            bpm = None
        if bpm is None or not (0 < bpm < 2000):
            if mm.activeSite is not None:
                mm.activeSite.remove(mm)
        else:
            usable += 1
    if usable:
        return None
    score.parts[0].insert(0, m21.tempo.MetronomeMark(number=default_bpm))
    return default_bpm


def _program_for_name(name: str) -> Optional[int]:
    low = name.lower()
    for words, gm in _INSTRUMENT_WORDS:
        if any(w in low for w in words):
            return GM[gm]
    return None


def _stable_hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def choose_programs(part_names: Sequence[str], ensemble: str, piece_id: str = "",
                    folk_programs: Sequence[int] = COLLECTIONS["ryansMammoth"].folk_programs) -> List[int]:
    """One General MIDI program per part, from the part names and the collection's ensemble.

    vocal: choir ("Choir Aahs") unless the part is named for an instrument (horn, violin, organ, ...);
    quartet: by name (viola, cello; others violin), falling back to violin/violin/viola/cello by position
    for unnamed parts; folk: every part plays one program picked from `folk_programs` by a stable hash of
    `piece_id`.
    """
    n = len(part_names)
    if ensemble == "folk":
        return [folk_programs[_stable_hash(piece_id) % len(folk_programs)]] * n
    out = []
    for i, name in enumerate(part_names):
        named = _program_for_name(name or "")
        if ensemble == "vocal":
            out.append(GM["choir_aahs"] if named is None else named)
        elif ensemble == "quartet":
            if named is not None:
                out.append(named)
            else:
                by_position = [GM["violin"], GM["violin"], GM["viola"], GM["cello"]]
                out.append(by_position[i] if n == 4 else GM["violin"] if i < n - 1 else GM["cello"])
        else:
            raise Music21CorpusError(f"unknown ensemble {ensemble!r}")
    return out


def set_programs(score, programs: Sequence[int]) -> None:
    """Replace every instrument of each part by one instrument playing `programs[i]` from the start."""
    m21 = _music21()
    parts = list(score.parts)
    if len(programs) != len(parts):
        raise ValueError(f"{len(programs)} programs for {len(parts)} parts")
    for part, program in zip(parts, programs):
        for inst in list(part.recurse().getElementsByClass(m21.instrument.Instrument)):
            if inst.activeSite is not None:
                inst.activeSite.remove(inst)
        inst = m21.instrument.Instrument()
        inst.midiProgram = int(program)
        inst.instrumentName = GM_NAMES.get(int(program), f"program {program}")
        part.insert(0, inst)


# ----------------------------------------------------------------------------------------------------------
# Lyrics

@dataclasses.dataclass(frozen=True)
class Syllable:
    offset: float            # quarter notes from the start of the score
    text: str
    syllabic: Optional[str]  # 'begin' | 'middle' | 'end' | 'single' | None


def lyric_part_syllables(score) -> Tuple[Optional[int], List[Syllable]]:
    """(index of the part the lyrics come from, its syllables in time order).

    The lyrics are the first verse of the top-most part that carries any (in chorales the soprano; in
    madrigals the top voice), so the text is sung once, in one voice's timing.
    """
    for i, part in enumerate(score.parts):
        syllables = []
        for n in part.flatten().notes:
            if not n.lyrics:
                continue
            lyr = min(n.lyrics, key=lambda l: l.number or 0)
            syllable = clean_syllable(lyr.text or "", lyr.syllabic)
            if syllable is not None:
                syllables.append(Syllable(float(n.offset), *syllable))
        if syllables:
            return i, sorted(syllables, key=lambda s: s.offset)
    return None, []


def clean_syllable(text: str, syllabic: Optional[str]) -> Optional[Tuple[str, Optional[str]]]:
    """(text, syllabic) with the hyphens that some corpus files type into the syllable itself (ASCII or
    soft hyphens: 'gio\xadvi\xad', 'par-') taken out and turned into syllabic 'middle' (joins the next
    syllable); None if nothing is left."""
    text = " ".join(text.split())
    joins_next = text.endswith(("-", "\u00ad"))
    text = text.replace("\u00ad", "").strip("-").strip()
    if not text:
        return None
    if joins_next and syllabic not in ("begin", "middle"):
        syllabic = "middle"
    return text, syllabic


def join_syllables(syllables: Iterable[Syllable]) -> str:
    """Words from syllables: 'begin'/'middle' syllables join the next one without a space."""
    out = []
    for s in syllables:
        out.append(s.text)
        out.append("" if s.syllabic in ("begin", "middle") else " ")
    return " ".join("".join(out).split())


# ----------------------------------------------------------------------------------------------------------
# MIDI and its tempo map

class TempoMap:
    """Ticks -> seconds for a MIDI file, from its set-tempo events (500000 us per quarter until the first),
    the way a MIDI player (FluidSynth) times it."""

    def __init__(self, ticks_per_quarter: int, changes: Sequence[Tuple[int, int]], last_tick: int,
                 hanging: int = 0):
        self.tpq = int(ticks_per_quarter)
        self.hanging = int(hanging)  # note-ons that no later note-off of their track ends
        points = sorted({t: us for t, us in changes}.items())
        if not points or points[0][0] > 0:
            points.insert(0, (0, 500000))
        self.ticks = [t for t, _ in points]
        self.us = [us for _, us in points]
        self.starts = [0.0]
        for k in range(1, len(points)):
            self.starts.append(self.starts[-1] + (self.ticks[k] - self.ticks[k - 1]) * self.us[k - 1]
                               / (1e6 * self.tpq))
        self.last_tick = int(last_tick)

    @classmethod
    def from_midi_bytes(cls, data: bytes) -> "TempoMap":
        m21 = _music21()
        mf = m21.midi.MidiFile()
        mf.readstr(data)
        changes, last, hanging = [], 0, 0
        note_on, note_off = m21.midi.ChannelVoiceMessages.NOTE_ON, m21.midi.ChannelVoiceMessages.NOTE_OFF
        for track in mf.tracks:
            tick = 0
            sounding: Dict[Tuple[int, int], int] = {}
            for ev in track.events:
                if isinstance(ev, m21.midi.DeltaTime):
                    tick += int(ev.time)
                    continue
                last = max(last, tick)
                if ev.type == m21.midi.MetaEvents.SET_TEMPO and ev.data and len(ev.data) >= 3:
                    changes.append((tick, int.from_bytes(bytes(ev.data[:3]), "big")))
                elif ev.type in (note_on, note_off):
                    key = (ev.channel, ev.pitch)
                    if ev.type == note_on and ev.velocity:
                        sounding[key] = sounding.get(key, 0) + 1
                    elif sounding.get(key):
                        sounding[key] -= 1
            hanging += sum(sounding.values())
        return cls(mf.ticksPerQuarterNote, changes, last, hanging)

    def seconds_at_tick(self, tick: float) -> float:
        k = max(i for i, t in enumerate(self.ticks) if t <= max(tick, 0))
        return self.starts[k] + (tick - self.ticks[k]) * self.us[k] / (1e6 * self.tpq)

    def seconds_at_quarter(self, ql: float) -> float:
        return self.seconds_at_tick(round(ql * self.tpq))

    def quarter_at_seconds(self, seconds: float) -> float:
        k = max(i for i, s in enumerate(self.starts) if s <= max(seconds, 0))
        return (self.ticks[k] + (seconds - self.starts[k]) * 1e6 * self.tpq / self.us[k]) / self.tpq

    @property
    def duration(self) -> float:
        """Seconds to the file's last event (end-of-track included)."""
        return self.seconds_at_tick(self.last_tick)


def remove_unplayable(score) -> int:
    """Remove what MIDI export turns into stuck notes: chord symbols and other harmony annotations
    (exported as zero-length chords whose note-offs come before their note-ons) and zero-length (grace)
    notes. Returns how many were removed."""
    m21 = _music21()
    doomed = list(score.recurse().getElementsByClass(m21.harmony.Harmony))
    doomed += [n for n in score.recurse().notes
               if n.duration.quarterLength == 0 and not isinstance(n, m21.harmony.Harmony)]
    for el in doomed:
        if el.activeSite is not None:
            el.activeSite.remove(el)
    return len(doomed)


def estimate_seconds_to_quarters(score):
    """(seconds at a quarter-note offset, quarter offset at seconds) from the score's own tempo marks:
    music21's estimate, without a MIDI export (which is slow for long scores). Used only to cut long pieces
    early with some slack; the exact length always comes from the exported MIDI."""
    bounds = score.metronomeMarkBoundaries()
    rows = []  # (start ql, end ql, start seconds, seconds per quarter)
    t = 0.0
    for start, end, mm in bounds:
        try:
            bpm = mm.getQuarterBPM() or 120.0
        except Exception:
            bpm = 120.0
        rows.append((float(start), float(end), t, 60.0 / bpm))
        t += (float(end) - float(start)) * 60.0 / bpm

    def seconds(ql: float) -> float:
        for start, end, t0, spq in rows:
            if ql <= end:
                return t0 + (ql - start) * spq
        start, end, t0, spq = rows[-1]
        return t0 + (ql - start) * spq

    def quarters(sec: float) -> float:
        for start, end, t0, spq in rows:
            if sec <= t0 + (end - start) * spq:
                return start + (sec - t0) / spq
        start, end, t0, spq = rows[-1]
        return start + (sec - t0) / spq

    return seconds, quarters


def unshare_conductor_elements(score) -> int:
    """Give every tempo mark, time signature and key signature its own object. Repeat expansion (of ABC
    tunes in particular) can leave one object in two measures, and MIDI export, which gathers them into a
    conductor track, then fails with 'already found in this Stream'. Returns how many were copied."""
    import copy
    m21 = _music21()
    classes = (m21.tempo.MetronomeMark, m21.meter.TimeSignature, m21.key.KeySignature)
    seen, copied = set(), 0
    for container in list(score.recurse(streamsOnly=True, includeSelf=True)):
        for el in list(container.getElementsByClass(classes)):  # direct children of `container`
            if id(el) in seen:
                container.replace(el, copy.deepcopy(el))
                copied += 1
            else:
                seen.add(id(el))
    return copied


def midi_bytes(score) -> bytes:
    m21 = _music21()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = m21.midi.translate.streamToMidiFile(score)
    return mf.writestr()


def truncate_score(score, max_quarters: float) -> bool:
    """Drop the measures that end after `max_quarters` (from every part; a bar line cut). Returns whether
    anything was removed; raises PieceSkipped if nothing would be left."""
    m21 = _music21()
    removed = False
    kept_any = False
    for part in score.parts:
        for m in list(part.getElementsByClass(m21.stream.Measure)):
            if m.offset + m.duration.quarterLength > max_quarters + 1e-6:
                part.remove(m)
                removed = True
            else:
                kept_any = True
    if not kept_any:
        raise PieceSkipped(f"cannot truncate: the first measure is longer than {max_quarters:g} quarters")
    return removed


# ----------------------------------------------------------------------------------------------------------
# Rendering

@dataclasses.dataclass(frozen=True)
class Renderer:
    fluidsynth: str
    soundfont: str
    gain: float = 0.5
    timeout_factor: float = 0.5      # wall-clock limit: timeout_base + timeout_factor * expected seconds
    timeout_base: float = 30.0
    tail_seconds: float = 12.0       # rendered length may exceed the MIDI's by this much (release tails)


def find_renderer(soundfont: Optional[str] = None, fluidsynth: Optional[str] = None,
                  install: bool = False, **kwargs) -> Renderer:
    """FluidSynth and a General MIDI soundfont, found on this machine (or installed with apt-get when
    `install` is set and we are root). Raises Music21CorpusError naming what is missing and how to get it."""
    def locate():
        fs = fluidsynth or shutil.which("fluidsynth")
        sf2 = soundfont or os.environ.get("JUKEJAX_SOUNDFONT")
        if sf2 is None:
            sf2 = next((c for c in SOUNDFONT_CANDIDATES if os.path.isfile(c)), None)
        return fs, sf2

    fs, sf2 = locate()
    if (not fs or not sf2) and install:
        if os.geteuid() != 0:
            raise Music21CorpusError("cannot install FluidSynth: not root; run `sudo apt-get install -y "
                                     f"{' '.join(APT_PACKAGES)}`")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log.info("installing %s with apt-get", " ".join(APT_PACKAGES))
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
                       check=True, env=env)
        fs, sf2 = locate()
    missing = []
    if not fs or not os.access(fs, os.X_OK):
        missing.append(f"the `fluidsynth` program ({fs or 'not on PATH'}; Debian package `fluidsynth`)")
    if not sf2 or not os.path.isfile(sf2):
        where = sf2 or ", ".join(SOUNDFONT_CANDIDATES)
        missing.append(f"a General MIDI soundfont (looked for {where}; Debian package `fluid-soundfont-gm` "
                       f"or `timgm6mb-soundfont`, or pass --soundfont / set JUKEJAX_SOUNDFONT)")
    if missing:
        raise Music21CorpusError("cannot render: missing " + " and ".join(missing) + ". Install with "
                                 f"`apt-get install -y --no-install-recommends {' '.join(APT_PACKAGES)}` "
                                 f"(or pass --install as root).")
    return Renderer(os.path.abspath(fs), os.path.abspath(sf2), **kwargs)


def render_midi(renderer: Renderer, midi_path: pathlib.Path, sr: int, expected_seconds: float,
                workdir: pathlib.Path) -> np.ndarray:
    """Render `midi_path` with FluidSynth to float32 mono at `sr`, bounded in time and output size, and
    check the result's length against `expected_seconds`. Raises PieceSkipped on any failure."""
    limit_s = renderer.timeout_base + renderer.timeout_factor * expected_seconds
    # FluidSynth writes stereo float32: 8 bytes a frame. Anything much past the expected length is a runaway.
    max_bytes = int((expected_seconds + renderer.tail_seconds + 5.0) * sr * 8) + 65536
    raw = workdir / "render.wav"
    raw.unlink(missing_ok=True)
    cmd = [renderer.fluidsynth, "-n", "-i", "-q", "-F", os.fspath(raw), "-T", "wav", "-O", "float",
           "-r", str(sr), "-g", str(renderer.gain), "-o", "synth.cpu-cores=1",
           renderer.soundfont, os.fspath(midi_path)]

    def _limit():  # in the child: a hard cap on file size (SIGXFSZ past it) and no core dumps
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    # FluidSynth links libpulse, which sets up a 64 MiB shared-memory pool (ftruncate) even when rendering
    # to a file; under RLIMIT_FSIZE that is fatal, so the pool is switched off (and no daemon spawned).
    pulse_conf = workdir / "pulse-client.conf"
    if not pulse_conf.exists():
        pulse_conf.write_text("autospawn = no\nenable-shm = no\nenable-memfd = no\n")
    env = dict(os.environ, PULSE_CLIENTCONFIG=os.fspath(pulse_conf), SDL_AUDIODRIVER="dummy")
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=limit_s,
                              preexec_fn=_limit, env=env)
    except subprocess.TimeoutExpired:
        raw.unlink(missing_ok=True)
        raise PieceSkipped(f"fluidsynth ran past its {limit_s:.0f} s wall-clock limit") from None
    output = " ".join(proc.stdout.decode(errors="replace").split())[-300:]
    if proc.returncode == -signal.SIGXFSZ:
        written = raw.stat().st_size if raw.exists() else 0
        raw.unlink(missing_ok=True)
        raise PieceSkipped(f"fluidsynth output passed the {max_bytes / 2**20:.0f} MiB size cap "
                           f"(expected {expected_seconds:.0f} s of audio; {written / 2**20:.0f} MiB written)")
    if proc.returncode != 0:
        raw.unlink(missing_ok=True)
        raise PieceSkipped(f"fluidsynth exited with {proc.returncode}: {output}")
    import soundfile as sf
    try:
        x, file_sr = sf.read(os.fspath(raw), dtype="float32", always_2d=True)
    except Exception as err:
        raise PieceSkipped(f"fluidsynth output unreadable: {err}") from None
    finally:
        raw.unlink(missing_ok=True)
    if file_sr != sr:
        raise PieceSkipped(f"fluidsynth wrote {file_sr} Hz, asked for {sr}")
    seconds = len(x) / sr
    if not (expected_seconds - 1.0 <= seconds <= expected_seconds + renderer.tail_seconds):
        raise PieceSkipped(f"rendered {seconds:.1f} s, expected {expected_seconds:.1f} s from the MIDI")
    x = x.mean(axis=1)
    x[~np.isfinite(x)] = 0.0
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak < 1e-4:
        raise PieceSkipped(f"rendered audio is silent (peak {peak:.2e})")
    return x


# ----------------------------------------------------------------------------------------------------------
# One piece, end to end

@dataclasses.dataclass
class Prepared:
    """A piece ready to render: its MIDI bytes and what goes in its metadata line."""
    piece: Piece
    midi: bytes
    tempo: TempoMap
    artist: str
    genre: str
    title: str
    programs: List[int]
    part_names: List[str]
    lyrics: str
    lyric_times: List[List[Any]]
    lyrics_part: Optional[str]
    repeats: str
    default_bpm: Optional[float]
    truncated_from: Optional[float]

    @property
    def seconds(self) -> float:
        return self.tempo.duration

    def metadata(self) -> Dict[str, Any]:
        return {
            "file": self.piece.audio_key, "artist": self.artist, "genre": self.genre, "lyrics": self.lyrics,
            "lyric_times": self.lyric_times,
            "collection": self.piece.collection, "corpus_path": self.piece.path, "number": self.piece.number,
            "title": self.title, "seconds": round(self.seconds, 3), "lyrics_part": self.lyrics_part,
            "parts": [{"name": n, "program": p, "instrument": GM_NAMES.get(p, f"program {p}")}
                      for n, p in zip(self.part_names, self.programs)],
            "repeats": self.repeats, "default_bpm": self.default_bpm, "truncated_from": self.truncated_from,
        }


def _clean_composer(text: Optional[str]) -> str:
    text = " ".join((text or "").split())
    text = re.sub(r"\s*\(.*?\)\s*", " ", text).strip(" ,;")
    return text or "Anonymous"


def _title(score, piece: Piece) -> str:
    md = score.metadata
    title = None
    if md is not None:
        title = md.title or md.movementName
    return " ".join(str(title).split()) if title else pathlib.PurePosixPath(piece.path).stem


def prepare_piece(piece: Piece, score, max_seconds: Optional[float] = None,
                  on_long: str = "skip") -> Prepared:
    """Repeats, tempo, instruments, lyrics and MIDI for one parsed score (changed in place)."""
    spec = _collection(piece.collection)
    artist = spec.artist if spec.artist is not None else _clean_composer(
        score.metadata.composer if score.metadata else None)
    title = _title(score, piece)
    score, repeats = expand_repeats(score)
    default_bpm = normalize_tempo(score, spec.default_bpm)
    part_names = [p.partName or (p.id if isinstance(p.id, str) else "") for p in score.parts]
    programs = choose_programs(part_names, spec.ensemble, piece.id, spec.folk_programs)
    set_programs(score, programs)
    remove_unplayable(score)
    unshare_conductor_elements(score)
    if on_long not in ("skip", "truncate"):
        raise Music21CorpusError(f"on_long is {on_long!r}; expected 'skip' or 'truncate'")
    truncated_from = None
    if max_seconds is not None:
        # Exporting a long score to MIDI takes minutes (a whole quartet: ~90 s), so clearly long pieces are
        # cut (or skipped) first from music21's own tempo estimate, with slack; the MIDI decides exactly.
        seconds_at, quarters_at = estimate_seconds_to_quarters(score)
        estimate = seconds_at(float(score.highestTime))
        if estimate > 1.25 * max_seconds + 10:
            if on_long == "skip":
                raise PieceSkipped(f"about {estimate:.0f} s long (after repeats), over max_seconds "
                                   f"{max_seconds:g}")
            truncated_from = round(estimate, 3)
            truncate_score(score, quarters_at(1.1 * max_seconds + 5))
    data = midi_bytes(score)
    tempo = TempoMap.from_midi_bytes(data)
    if max_seconds is not None and tempo.duration > max_seconds:
        if on_long == "skip":
            raise PieceSkipped(f"{tempo.duration:.0f} s long (after repeats), over max_seconds "
                               f"{max_seconds:g}")
        truncated_from = truncated_from or round(tempo.duration, 3)
        # Cut at the last bar line before max_seconds; notes held over the bar line and the export's end
        # delay can still overshoot, so cut earlier by the overshoot and try again (the kept beginning,
        # and so its tempo map, stays the same).
        target = max_seconds
        for _ in range(4):
            if not truncate_score(score, tempo.quarter_at_seconds(target)):
                raise PieceSkipped(f"{tempo.duration:.0f} s long and cannot be cut at a bar line")
            data = midi_bytes(score)
            tempo = TempoMap.from_midi_bytes(data)
            over = tempo.duration - max_seconds
            if over <= 1.0:
                break
            target -= over + 0.5
        else:
            raise PieceSkipped(f"still {tempo.duration:.0f} s after truncation to {max_seconds:g} s")
    if tempo.duration <= 0.5:
        raise PieceSkipped(f"only {tempo.duration:.2f} s of music")
    if tempo.hanging:
        # A note that is never released keeps FluidSynth rendering without end.
        raise PieceSkipped(f"the MIDI export leaves {tempo.hanging} note(s) without a note-off")
    part_index, syllables = lyric_part_syllables(score)
    lyric_times = [[round(tempo.seconds_at_quarter(s.offset), 3), s.text] for s in syllables]
    return Prepared(piece, data, tempo, artist, spec.genre, title, programs, part_names,
                    join_syllables(syllables), lyric_times,
                    part_names[part_index] if part_index is not None else None, repeats, default_bpm,
                    truncated_from)


# ----------------------------------------------------------------------------------------------------------
# The whole recipe

def write_metadata(path: pathlib.Path, entries: Sequence[Dict[str, Any]]) -> None:
    """One JSON object per line, keys in a fixed order, UTF-8 (not ASCII-escaped)."""
    atomic_write_text(path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))


def make_audio_folder(out_dir, pieces: Sequence[Piece], renderer: Renderer, sr: int = 22050,
                      max_seconds: Optional[float] = 300.0, on_long: str = "truncate",
                      parse_timeout: Optional[float] = 120.0, peak: float = 0.89,
                      progress=None) -> Dict[str, Any]:
    """Render `pieces` into `<out_dir>/audio` (+ metadata.jsonl), `<out_dir>/midi`, and write
    `<out_dir>/render_summary.json`; returns that summary. Pieces are rendered one at a time."""
    out_dir = pathlib.Path(out_dir)
    audio_dir, midi_dir = out_dir / "audio", out_dir / "midi"
    for d in (audio_dir, midi_dir):
        if d.exists() and any(d.iterdir()):
            raise Music21CorpusError(f"{d} is not empty; remove it or choose another --out")
        d.mkdir(parents=True, exist_ok=True)
    keys: Dict[str, str] = {}
    for piece in pieces:
        other = keys.setdefault(piece.audio_key, piece.id)
        if other != piece.id:
            raise Music21CorpusError(f"{piece.id} and {other} would both be written to {piece.audio_key}")
    t0 = time.time()
    entries, skipped, rendered = [], [], []
    with tempfile.TemporaryDirectory(prefix="render-", dir=out_dir) as work:
        work = pathlib.Path(work)
        for i, piece in enumerate(pieces):
            t_piece = time.time()
            try:
                with _time_limit(parse_timeout, "parsing and MIDI export"):
                    score = load_score(piece)
                    prep = prepare_piece(piece, score, max_seconds, on_long)
                midi_path = midi_dir / pathlib.PurePosixPath(piece.audio_key).with_suffix(".mid")
                midi_path.parent.mkdir(parents=True, exist_ok=True)
                midi_path.write_bytes(prep.midi)
                x = render_midi(renderer, midi_path, sr, prep.seconds, work)
                x = x * (peak / float(np.max(np.abs(x))))
                wav = audio_dir / prep.piece.audio_key
                wav.parent.mkdir(parents=True, exist_ok=True)
                write_audio(wav, x, sr)
                entry = prep.metadata()
                entry["seconds"] = round(len(x) / sr, 3)
                entries.append(entry)
                rendered.append({"piece": piece.id, "seconds": entry["seconds"],
                                 "wall_s": round(time.time() - t_piece, 2)})
                status = f"ok {entry['seconds']:.0f} s"
            except PieceSkipped as err:
                skipped.append({"piece": piece.id, "collection": piece.collection, "reason": str(err)})
                log.warning("skipping %s: %s", piece.id, err)
                status = f"skipped: {err}"
            except Exception as err:  # a parser/exporter crash on one piece must not end the run
                reason = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
                skipped.append({"piece": piece.id, "collection": piece.collection, "reason": reason})
                log.warning("skipping %s: %s", piece.id, reason)
                status = f"skipped: {reason}"
            if progress:
                progress(i, len(pieces), piece, status, time.time() - t_piece)
    write_metadata(audio_dir / METADATA_FILE, entries)
    summary = summarize(entries, skipped, pieces, sr, time.time() - t0, renderer)
    (out_dir / RENDER_SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n",
                                               encoding="utf-8")
    return summary


def summarize(entries, skipped, pieces, sr, wall_s, renderer=None) -> Dict[str, Any]:
    per: Dict[str, Dict[str, Any]] = {}
    for p in pieces:
        per.setdefault(p.collection, {"selected": 0, "rendered": 0, "skipped": 0, "hours": 0.0,
                                      "with_lyrics": 0, "truncated": 0})["selected"] += 1
    for e in entries:
        c = per[e["collection"]]
        c["rendered"] += 1
        c["hours"] += e["seconds"] / 3600.0
        c["with_lyrics"] += bool(e["lyrics"])
        c["truncated"] += e["truncated_from"] is not None
    for s in skipped:
        per[s["collection"]]["skipped"] += 1
    for c in per.values():
        c["hours"] = round(c["hours"], 4)
    return {
        "sample_rate": sr, "channels": 1, "pieces_selected": len(pieces), "pieces_rendered": len(entries),
        "pieces_skipped": len(skipped),
        "hours_rendered": round(sum(e["seconds"] for e in entries) / 3600.0, 4),
        "render_wall_s": round(wall_s, 1), "per_collection": per, "skipped": skipped,
        "fluidsynth": renderer.fluidsynth if renderer else None,
        "soundfont": renderer.soundfont if renderer else None,
    }

"""scripts/music21_corpus.py: the music21-corpus demo dataset recipe.

Selection, instruments, lyrics with times, repeats, the stuck-note guard and the metadata format are
checked without FluidSynth (tiny music21 streams built here; the tests that need the music21 package skip
without it). One test renders two short pieces end to end and builds the TFDS dataset; it runs only where
`fluidsynth` and a General MIDI soundfont are installed (Debian: fluidsynth, fluid-soundfont-gm).
"""
import json
import pathlib

import numpy as np
import pytest
import soundfile as sf

from jukejax.data import BuildConfig, build_dataset, load_source
from script_modules import load_script

mc = load_script("music21_corpus")
GM, Piece, Syllable = mc.GM, mc.Piece, mc.Syllable

try:
    import music21  # noqa: F401
    HAVE_MUSIC21 = True
except ImportError:
    HAVE_MUSIC21 = False
needs_music21 = pytest.mark.skipif(not HAVE_MUSIC21, reason="the music21 package is not installed")


# --- selection (a fake corpus listing: no music21 needed) --------------------------------------------------

FAKE_FILES = [
    "bach/bwv2.6.mxl", "bach/bwv1.6.mxl", "bach/bwv10.7.mxl", "bach/bwv846.mxl", "bach/bwv277.krn",
    "bach/choraleAnalyses/riemenschneider001.rntxt",
    "beethoven/opus18no1/movement1.krn", "beethoven/opus18no1/movement1.mxl", "beethoven/opus74.mxl",
    "mozart/k545/movement1.mxl", "mozart/k80/movement1.mxl",
    "essenFolksong/b.abc", "essenFolksong/a.abc",
]
FAKE_ABC = {"essenFolksong/a.abc": "X:1\nT:one\nK:C\nC\n\nX: 2\nT:two\nK:C\nD\n\nX:10\nK:C\nE\n",
            "essenFolksong/b.abc": "X:1\nT:only\nK:C\nC\n"}


def _select(collections, n=None):
    return mc.select_pieces(collections, n, files=FAKE_FILES, read_text=FAKE_ABC.__getitem__)


def test_selection_is_sorted_deduplicated_and_filtered():
    assert [p.id for p in _select(["bach"])] == ["bach/bwv1.6.mxl", "bach/bwv10.7.mxl", "bach/bwv2.6.mxl"]
    # the .krn twin of a movement counts once (as .mxl); the piano sonata is not a quartet
    assert [p.path for p in _select(["beethoven", "mozart"])] == [
        "beethoven/opus18no1/movement1.mxl", "beethoven/opus74.mxl", "mozart/k80/movement1.mxl"]
    # an ABC collection file is one piece per tune; a one-tune file is one piece
    assert [p.id for p in _select(["essenFolksong"])] == [
        "essenFolksong/a.abc#1", "essenFolksong/a.abc#2", "essenFolksong/a.abc#10", "essenFolksong/b.abc"]


def test_selection_is_deterministic_and_evenly_spaced():
    a = _select(["essenFolksong", "bach"], 2)
    assert a == _select(["essenFolksong", "bach"], 2)
    assert a == mc.select_pieces(["essenFolksong", "bach"], 2, files=list(reversed(FAKE_FILES)),
                                 read_text=FAKE_ABC.__getitem__)  # listing order does not matter
    assert [p.id for p in a] == ["essenFolksong/a.abc#1", "essenFolksong/a.abc#10", "bach/bwv1.6.mxl",
                                 "bach/bwv10.7.mxl"]
    assert mc.evenly_spaced(range(10), 3) == [0, 3, 6]
    assert mc.evenly_spaced(range(3), 5) == [0, 1, 2]
    assert mc.evenly_spaced(range(3), None) == [0, 1, 2]
    with pytest.raises(mc.Music21CorpusError, match="unknown collection"):
        _select(["nope"])


def test_time_limit_stops_a_stuck_step():
    import time
    with pytest.raises(mc.PieceSkipped, match="parsing took longer than 0.2 s"):
        with mc._time_limit(0.2, "parsing"):
            try:
                time.sleep(5)
            except Exception:  # a library's broad handler must not swallow the limit
                pass
    with mc._time_limit(5, "parsing"):
        pass


def test_audio_keys_are_stable_and_unique():
    assert Piece("bach", "bach/bwv1.6.mxl").audio_key == "bach/bwv1.6.wav"
    assert Piece("haydn", "haydn/opus1no1/movement1.mxl").audio_key == "haydn/opus1no1_movement1.wav"
    assert Piece("essenFolksong", "essenFolksong/a.abc", 7).audio_key == "essenFolksong/a_0007.wav"
    assert Piece("trecento", "trecento/PMFC_01-Rex quem metrorum.xml").audio_key == \
        "trecento/PMFC_01-Rex_quem_metrorum.wav"


# --- instruments --------------------------------------------------------------------------------------------

def test_instrument_assignment_fits_the_genre():
    assert mc.choose_programs(["Soprano", "Alto", "Tenor", "Bass"], "vocal") == [GM["choir_aahs"]] * 4
    assert mc.choose_programs(["Horn 2", "Timpani", "Soprano", "Organ"], "vocal") == [
        GM["french_horn"], GM["timpani"], GM["choir_aahs"], GM["church_organ"]]
    assert mc.choose_programs(["Violin I", "Violin II", "Viola", "Cello"], "quartet") == [
        GM["violin"], GM["violin"], GM["viola"], GM["cello"]]
    assert mc.choose_programs(["", "", "", ""], "quartet") == [GM["violin"], GM["violin"], GM["viola"],
                                                               GM["cello"]]
    folk = mc.choose_programs(["", ""], "folk", "ryansMammoth/x.abc")
    assert folk[0] == folk[1] and folk[0] in (GM["violin"], GM["flute"], GM["piano"])
    assert folk == mc.choose_programs(["", ""], "folk", "ryansMammoth/x.abc")  # stable per piece
    picks = {mc.choose_programs([""], "folk", f"t{i}")[0] for i in range(40)}
    assert picks == {GM["violin"], GM["flute"], GM["piano"]}  # and varied across pieces


# --- lyrics and the tempo map (pure) ----------------------------------------------------------------------

def test_syllables_join_into_words_and_hyphens_are_cleaned():
    syl = [Syllable(0, "Hal", "begin"), Syllable(1, "le", "middle"), Syllable(2, "lu", "middle"),
           Syllable(3, "jah", "end"), Syllable(4, "A", "single"), Syllable(5, "men.", None)]
    assert mc.join_syllables(syl) == "Hallelujah A men."
    assert mc.clean_syllable("gio\u00advi\u00ad", None) == ("giovi", "middle")
    assert mc.clean_syllable("par-", "single") == ("par", "middle")
    assert mc.clean_syllable("  Herz  ", "end") == ("Herz", "end")
    assert mc.clean_syllable(" - ", None) is None


def test_tempo_map_converts_ticks_and_back():
    tm = mc.TempoMap(480, [(0, 1_000_000), (4 * 480, 500_000)], last_tick=8 * 480)  # 60 bpm, then 120
    assert tm.seconds_at_quarter(2) == pytest.approx(2.0)
    assert tm.seconds_at_quarter(6) == pytest.approx(5.0)
    assert tm.duration == pytest.approx(6.0)
    assert tm.quarter_at_seconds(5.0) == pytest.approx(6.0)
    assert mc.TempoMap(480, [], 480).duration == pytest.approx(0.5)  # MIDI's default 120 bpm


# --- metadata ---------------------------------------------------------------------------------------------

def test_metadata_with_lyric_times_builds(tmp_path):
    """The builder reads file/artist/genre/lyrics and ignores lyric_times and the other extra keys."""
    audio = tmp_path / "audio"
    entries = []
    for i, (artist, genre, lyrics) in enumerate([("Johann Sebastian Bach", "chorale", "Singen wir"),
                                                 ("Traditional", "irish folk tune", ""),
                                                 ("Joseph Haydn", "string quartet", "")]):
        key = f"c{i}/p{i}.wav"
        (audio / key).parent.mkdir(parents=True, exist_ok=True)
        sf.write(audio / key, np.random.default_rng(i).uniform(-0.3, 0.3, 4000), 8000, subtype="PCM_16")
        entries.append({"file": key, "artist": artist, "genre": genre, "lyrics": lyrics,
                        "lyric_times": [[0.0, "Sin"], [0.25, "gen"], [0.5, "wir"]] if lyrics else [],
                        "collection": f"c{i}", "number": None, "parts": [{"name": "", "program": 0}]})
    mc.write_metadata(audio / mc.METADATA_FILE, entries)
    lines = (audio / mc.METADATA_FILE).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == entries
    summary = build_dataset(BuildConfig(audio_dir=str(audio), sr=8000, channels=1, window_seconds=0.25,
                                        test_fraction=0.34, seed=0), tmp_path / "data")
    assert summary["num_skipped"] == 0 and summary["songs"] == {"train": 2, "test": 1}
    assert summary["artists"] == 4 and summary["genres"] == 4  # + 'unknown'
    records = [r for split in ("train", "test") for r in
               (load_source(tmp_path / "data", split)[i] for i in range(len(load_source(tmp_path / "data",
                                                                                       split))))]
    assert {r["lyrics"].decode() for r in records} == {"Singen wir", ""}


# --- with music21 -----------------------------------------------------------------------------------------

def _tiny_score(chord_symbol=False, repeat=None):
    """Two parts, 4/4, 60 bpm for two bars then 120 bpm; the top part sings 'Hal-le-lu-jah A-men'."""
    from music21 import bar, harmony, meter, note, stream, tempo
    words = [("Hal", "begin"), ("le", "middle"), ("lu", "middle"), ("jah", "end"), ("A", "begin"),
             ("men", "end")]
    top, low = stream.Part(), stream.Part()
    top.partName, low.partName = "Soprano", "Bass"
    k = 0
    for i in range(3):
        mt, ml = stream.Measure(number=i + 1), stream.Measure(number=i + 1)
        if i == 0:
            mt.insert(0, meter.TimeSignature("4/4"))
            ml.insert(0, meter.TimeSignature("4/4"))
            mt.insert(0, tempo.MetronomeMark(number=60))
        if i == 2:
            mt.insert(0, tempo.MetronomeMark(number=120))
        if chord_symbol and i == 1:
            mt.insert(0, harmony.ChordSymbol("D"))
        for j in range(2):
            n = note.Note("E4" if j == 0 else "G4", quarterLength=2)
            if k < len(words):
                n.addLyric(words[k][0])
                n.lyrics[0].syllabic = words[k][1]
                k += 1
            mt.append(n)
        ml.append(note.Note("C3", quarterLength=4))
        if repeat == "good" and i == 1:
            mt.rightBarline, ml.rightBarline = bar.Repeat(direction="end"), bar.Repeat(direction="end")
        if repeat == "bad" and i >= 1:
            mt.leftBarline, ml.leftBarline = bar.Repeat(direction="start"), bar.Repeat(direction="start")
        top.append(mt)
        low.append(ml)
    return stream.Score([top, low])


@needs_music21
def test_lyrics_have_the_times_of_the_rendered_midi():
    from music21 import midi
    prep = mc.prepare_piece(Piece("bach", "bach/tiny.mxl"), _tiny_score())
    assert prep.lyrics == "Hallelujah Amen" and prep.lyrics_part == "Soprano"
    # bars 1-2 at 60 bpm (2 s a half note), bar 3 at 120 (1 s)
    assert prep.lyric_times == [[0.0, "Hal"], [2.0, "le"], [4.0, "lu"], [6.0, "jah"], [8.0, "A"],
                                [9.0, "men"]]
    assert prep.default_bpm is None and prep.seconds == pytest.approx(10.0, abs=1.1)  # + end delay
    # the MIDI's own lyric events sit exactly there
    mf = midi.MidiFile()
    mf.readstr(prep.midi)
    lyric_ticks = sorted(midi.translate.lyricTimingsFromEvents(midi.translate.getTimeForEvents(mf.tracks[1])))
    assert [round(prep.tempo.seconds_at_tick(t), 3) for t in lyric_ticks] == [t for t, _ in prep.lyric_times]
    meta = prep.metadata()
    assert {"file", "artist", "genre", "lyrics", "lyric_times"} <= set(meta)
    assert meta["artist"] == "Johann Sebastian Bach" and meta["genre"] == "chorale"
    json.dumps(meta)  # serialisable as is


@needs_music21
def test_programs_reach_the_midi_file():
    from music21 import midi
    score = _tiny_score()
    prep = mc.prepare_piece(Piece("haydn", "haydn/tiny.mxl"), score)  # quartet rules on 2 parts
    assert prep.programs == [GM["violin"], GM["cello"]]
    mf = midi.MidiFile()
    mf.readstr(prep.midi)
    found = {ev.data for tr in mf.tracks for ev in tr.events
             if not isinstance(ev, midi.DeltaTime) and ev.type == midi.ChannelVoiceMessages.PROGRAM_CHANGE}
    assert found == {GM["violin"], GM["cello"]}


@needs_music21
def test_default_tempo_when_the_score_has_none():
    from music21 import tempo
    score = _tiny_score()
    for mm in list(score.recurse().getElementsByClass(tempo.MetronomeMark)):
        mm.activeSite.remove(mm)
    plain = mc.prepare_piece(Piece("bach", "bach/tiny.mxl"), score)
    assert plain.default_bpm == 80.0  # the collection's default
    assert plain.lyric_times[1] == [1.5, "le"]  # a half note at 80 bpm
    # a tempo word alone implies its number (music21's table: Adagio = 56), in the MIDI too
    score = _tiny_score()
    for mm in list(score.recurse().getElementsByClass(tempo.MetronomeMark)):
        mm.activeSite.remove(mm)
    score.parts[0].measure(1).insert(0, tempo.MetronomeMark(text="Adagio", number=None))
    worded = mc.prepare_piece(Piece("bach", "bach/tiny.mxl"), score)
    assert worded.default_bpm is None
    assert worded.lyric_times[1] == [round(2 * 60 / 56, 3), "le"]


@needs_music21
def test_repeats_expand_or_fall_back():
    good = mc.prepare_piece(Piece("bach", "bach/tiny.mxl"), _tiny_score(repeat="good"))
    assert good.repeats == "expanded"
    assert [s for _, s in good.lyric_times] == ["Hal", "le", "lu", "jah", "Hal", "le", "lu", "jah", "A", "men"]
    bad = mc.prepare_piece(Piece("bach", "bach/tiny.mxl"), _tiny_score(repeat="bad"))
    assert bad.repeats.startswith("unexpanded: ExpanderException")
    assert [s for _, s in bad.lyric_times] == ["Hal", "le", "lu", "jah", "A", "men"]  # played once


@needs_music21
def test_long_pieces_are_skipped_or_cut_at_a_bar_line():
    with pytest.raises(mc.PieceSkipped, match="over max_seconds"):
        mc.prepare_piece(Piece("bach", "bach/tiny.mxl"), _tiny_score(), max_seconds=5, on_long="skip")
    cut = mc.prepare_piece(Piece("bach", "bach/tiny.mxl"), _tiny_score(), max_seconds=5, on_long="truncate")
    assert cut.truncated_from is not None and cut.seconds <= 6.0
    assert [s for _, s in cut.lyric_times] == ["Hal", "le"]  # bar 1 only (bar 2 ends at 8 s)


@needs_music21
def test_chord_symbols_would_leave_stuck_notes_and_are_removed():
    """music21 exports a chord symbol as a zero-length chord whose note-offs precede its note-ons: a note
    that never ends, which keeps FluidSynth rendering without end. The recipe removes them."""
    score = _tiny_score(chord_symbol=True)
    assert mc.TempoMap.from_midi_bytes(mc.midi_bytes(score)).hanging == 3
    prep = mc.prepare_piece(Piece("bach", "bach/tiny.mxl"), _tiny_score(chord_symbol=True))
    assert prep.tempo.hanging == 0


@needs_music21
def test_one_time_signature_in_two_measures_still_exports():
    """Some ABC tunes parse with one TimeSignature object in two measures; MIDI export then fails
    ('already found in this Stream'). The recipe gives each its own copy."""
    def shared():
        score = _tiny_score()
        score.parts[0].measure(3).insert(0, score.parts[0].measure(1).timeSignature)  # the same object
        return score

    with pytest.raises(Exception, match="already found"):
        mc.midi_bytes(shared())
    score = shared()
    assert mc.unshare_conductor_elements(score) == 1
    assert mc.TempoMap.from_midi_bytes(mc.midi_bytes(score)).duration > 0
    prep = mc.prepare_piece(Piece("ryansMammoth", "ryansMammoth/tiny.abc"), shared())
    assert [s for _, s in prep.lyric_times] == ["Hal", "le", "lu", "jah", "A", "men"]


@needs_music21
def test_real_corpus_selection_is_deterministic():
    a = mc.select_pieces(["bach", "essenFolksong", "haydn"], 3)
    assert a == mc.select_pieces(["bach", "essenFolksong", "haydn"], 3)
    assert [p.collection for p in a] == ["bach"] * 3 + ["essenFolksong"] * 3 + ["haydn"] * 3
    assert a[0] == Piece("bach", "bach/bwv1.6.mxl")
    assert all(p.number is not None for p in a[3:6])  # Essen files are collections of tunes


# --- rendering (needs fluidsynth and a soundfont) -----------------------------------------------------------

def _renderer():
    try:
        return mc.find_renderer()
    except mc.Music21CorpusError as err:
        pytest.skip(str(err))


@needs_music21
def test_render_two_short_pieces_and_build(tmp_path):
    renderer = _renderer()
    pieces = [Piece("oneills1850", "oneills1850/0001-0050.abc", 7),   # a 27 s tune
              Piece("bach", "bach/bwv187.7.mxl")]                      # a chorale with lyrics, ~67 s
    summary = mc.make_audio_folder(tmp_path, pieces, renderer, sr=16000, max_seconds=30, on_long="truncate")
    assert summary["pieces_rendered"] == 2, summary["skipped"]
    entries = [json.loads(line) for line in (tmp_path / "audio" / mc.METADATA_FILE).read_text().splitlines()]
    assert [e["file"] for e in entries] == [p.audio_key for p in pieces]
    for e in entries:
        x, sr = sf.read(tmp_path / "audio" / e["file"])
        assert sr == 16000 and x.ndim == 1 and 0.5 < np.abs(x).max() <= 0.9
        assert len(x) / sr == pytest.approx(e["seconds"]) and e["seconds"] < 30 + 12
    chorale = entries[1]
    assert chorale["truncated_from"] > 30 and chorale["lyrics"].startswith("Singen wir")
    assert chorale["lyric_times"][0] == [0.0, "Sin"] and all(t < 30 for t, _ in chorale["lyric_times"])
    assert sorted(p.name for p in (tmp_path / "audio").rglob("*") if p.is_file()) == sorted(
        [mc.METADATA_FILE] + [pathlib.PurePosixPath(e["file"]).name for e in entries])  # nothing else
    built = build_dataset(BuildConfig(audio_dir=str(tmp_path / "audio"), sr=16000, channels=1,
                                      window_seconds=8.0, test_fraction=0.5, seed=0), tmp_path / "data")
    assert built["num_skipped"] == 0 and built["songs"] == {"train": 1, "test": 1}


@needs_music21
def test_a_runaway_render_is_stopped(tmp_path):
    """A MIDI file with a note that never ends renders without end; the size cap stops it."""
    renderer = _renderer()
    midi_path = tmp_path / "stuck.mid"
    midi_path.write_bytes(mc.midi_bytes(_tiny_score(chord_symbol=True)))  # hanging notes, not removed
    with pytest.raises(mc.PieceSkipped, match="size cap|rendered .* expected"):
        mc.render_midi(renderer, midi_path, 8000, expected_seconds=11.0, workdir=tmp_path)
    assert not (tmp_path / "render.wav").exists()

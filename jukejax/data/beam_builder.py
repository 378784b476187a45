"""Building the `jukejax_music` dataset on Apache Beam: the same builder, spread over a runner's workers.

`build_dataset(config, data_dir, runner="DirectRunner" | "DataflowRunner" | "FlinkRunner" | "SparkRunner")`
plans exactly as the local path does (walk the folder, read metadata.jsonl, read every header, split by song,
number songs and labels) and writes that plan as one JSON line per song. The pipeline, one per split, then
reads the plan, spreads the songs over workers (one song per element), decodes, resamples and windows each
with the local path's own functions (`decode_song`, `song_examples`), and hands the windows to TFDS's
`BeamWriter`, which writes ArrayRecord shards sorted by the same key hash as the local writer. A song that
cannot be built is not an error: its outcome line (built with its length, or skipped with its reason) goes to
a side output, which the driver reads after the job to write the same window tables and build summary as
the local path.

Everything is written under the hidden temporary folder of `build_dataset` and renamed into place only once
the job has succeeded, so a failed job leaves no dataset that looks complete, and a rerun starts from an
empty folder (it never appends to a failed run's records). Runner retries are safe: TFDS's writer and Beam's
text sink only commit the output of bundles that finished.

Every worker must see `audio_dir` and `data_dir` as local paths (one machine, or a shared filesystem such
as NFS, Filestore or a gcsfuse mount on every worker), and have jukejax installed.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any, Dict, Iterator, List, Sequence, Tuple, Union

import apache_beam as beam
import tensorflow_datasets as tfds

from jukejax.config import ConfigError
from jukejax.data.builder import (JukejaxMusic, NAME, SongSkipped, _no_song_decoded, _Plan, _Song, decode_song,
                                  song_examples)

PLAN_FILE = "plan-{split}.jsonl"
OUTCOMES = "outcomes-{split}"


def _song_line(song: _Song) -> str:
    return json.dumps({"song_id": song.song_id, "key": song.key, "path": os.fspath(song.path),
                       "split": song.split, "artist": song.artist, "genre": song.genre, "lyrics": song.lyrics})


def _song_of(line: str) -> _Song:
    d = json.loads(line)
    return _Song(d["song_id"], d["key"], pathlib.Path(d["path"]), d["split"], d["artist"], d["genre"], d["lyrics"])


class _DecodeAndWindow(beam.DoFn):
    """One song (a plan line) -> its (key, record) windows, and one outcome line on the "outcomes" output."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.built = beam.metrics.Metrics.counter(NAME, "songs_built")
        self.skipped = beam.metrics.Metrics.counter(NAME, "songs_skipped")

    def process(self, line: str) -> Iterator[Any]:
        song = _song_of(line)
        try:
            pcm = decode_song(song, self.config)
        except SongSkipped as err:
            self.skipped.inc()
            yield beam.pvalue.TaggedOutput("outcomes", json.dumps({"song_id": song.song_id, "key": song.key,
                                                                   "skipped": err.reason}))
            return
        for key, _, example in song_examples(song, pcm, self.config):
            yield key, example
        self.built.inc()
        yield beam.pvalue.TaggedOutput("outcomes", json.dumps({"song_id": song.song_id, "key": song.key,
                                                               "total": len(pcm)}))


class _SplitExamples(beam.PTransform):
    """Plan file of one split -> its (key, record) windows; outcome lines written beside the plan."""

    def __init__(self, config, plan_file: str, outcomes: str):
        super().__init__()
        self.config, self.plan_file, self.outcomes = config, plan_file, outcomes

    def expand(self, pbegin):
        results = (pbegin
                   | "ReadPlan" >> beam.io.ReadFromText(self.plan_file)
                   # The plan is one small file: without a reshuffle one worker would decode every song.
                   | "SpreadSongs" >> beam.Reshuffle()
                   | "DecodeAndWindow" >> beam.ParDo(_DecodeAndWindow(self.config)).with_outputs("outcomes",
                                                                                                  main="windows"))
        _ = results.outcomes | "WriteOutcomes" >> beam.io.WriteToText(self.outcomes, file_name_suffix=".jsonl")
        return results.windows


class JukejaxMusicOnBeam(JukejaxMusic, skip_registration=True):
    """`JukejaxMusic` whose splits are Beam pipelines; fills `windows` and the plan's skips after the job."""

    name = NAME

    def __init__(self, *, plan: _Plan, work_dir: pathlib.Path, **kwargs):
        self._work_dir = pathlib.Path(work_dir)
        super().__init__(plan=plan, **kwargs)

    def _generate_examples(self, split: str):
        songs = self._plan.songs_of(split)
        plan_file = self._work_dir / PLAN_FILE.format(split=split)
        plan_file.write_text("".join(_song_line(s) + "\n" for s in songs), encoding="utf-8")
        return _SplitExamples(self._plan.config, os.fspath(plan_file),
                              os.fspath(self._work_dir / OUTCOMES.format(split=split)))

    def collect_outcomes(self) -> None:
        """Read the jobs' outcome lines: window rows per split, skipped songs in song order (as the local
        path records them), and the empty-split error of the local path."""
        plan, width = self._plan, self._plan.config.window_length
        present = [s for s in ("train", "test") if plan.songs_of(s)]
        for split in present:
            outcomes = []
            for path in sorted(self._work_dir.glob(OUTCOMES.format(split=split) + "*.jsonl")):
                outcomes += [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
            outcomes.sort(key=lambda o: o["song_id"])
            songs = plan.songs_of(split)
            if [o["song_id"] for o in outcomes] != [s.song_id for s in songs]:
                raise RuntimeError(f"split {split!r}: the job reported {len(outcomes)} outcome(s) for "
                                   f"{len(songs)} planned song(s)")
            rows = self.windows.setdefault(split, [])
            for o in outcomes:
                if "skipped" in o:
                    plan.skip(o["key"], o["skipped"])
                    continue
                total = o["total"]
                for k, offset in enumerate(range(0, total, width)):
                    rows.append((f"{o['key']}#{k}", (o["song_id"], k, offset, min(width, total - offset), total)))
            if not rows:
                raise _no_song_decoded(split, len(songs))


_EMPTY_SPLIT = re.compile(r"total number of generated examples is 0 for split (\w+)")


def prepare(plan: _Plan, tmp_root: pathlib.Path, runner: str, options: Sequence[str]) -> JukejaxMusicOnBeam:
    """Run the build job into `tmp_root` (a fresh folder); returns the builder with its windows collected."""
    from apache_beam.options.pipeline_options import PipelineOptions
    try:
        beam.runners.create_runner(runner)
    except (ValueError, ImportError) as err:
        raise ConfigError(f"--runner {runner!r}: {' '.join(str(err).split())}") from None
    work_dir = tmp_root / "beam"
    work_dir.mkdir()
    builder = JukejaxMusicOnBeam(plan=plan, work_dir=work_dir, data_dir=os.fspath(tmp_root),
                                 file_format="array_record")
    config = tfds.download.DownloadConfig(beam_runner=runner, beam_options=PipelineOptions(list(options)))
    try:
        builder.download_and_prepare(file_format="array_record", download_config=config)
    except Exception as err:
        # TFDS's writer refuses an empty split inside the job; the local path reports the same case itself.
        empty = _EMPTY_SPLIT.search(str(err))
        if empty is None:
            raise
        split = empty.group(1)
        raise _no_song_decoded(split, len(plan.songs_of(split))) from err
    builder.collect_outcomes()
    return builder

"""`sample.py`'s job: sample a song level by level from a model bundle and write what it made.

    result = run(config, workdir)      # config: configs/sample_defaults.py, overridden from the command line

Order of work (the original `sample.py::_sample`): check every setting and the workdir, read the bundle
(configs, id tables, VQ-VAE; param shapes from checkpoint metadata), build the start codes of the mode
(`modes`), then for each sampled level from the top down: load that level's prior, fill the level window by
window (`schedule.sample_level`), saving `level_{l}/codes.npz` atomically after every window, drop the prior,
decode the level with the VQ-VAE and write its wavs, spectrograms and index.html before the next level starts.

Resume contract (`--resume`): the workdir's run.json records every setting that decides the tokens (max_batch_size
and progress do not; anything else differing is an error). A window's tokens depend only on its inputs and
its key (see `schedule`), and codes.npz holds exactly the windows that finished, so a resumed run re-samples
no finished window, loses none, and ends with the codes an uninterrupted run would have made. Levels whose
outputs were written are skipped; a level that finished sampling but not writing is decoded again.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np

from jukejax import errors as errors_lib
from jukejax.checkpoint import CheckpointError
from jukejax.config import ConfigError
from jukejax.errors import UserError
from jukejax.prior import lyrics as lyrics_lib
from jukejax.prior.conditioners import check_labels
from jukejax.prior.labels import make_y, set_y_for_window, split_y
from jukejax.sample import modes, outputs, schedule
from jukejax.sample.bundle import Bundle, BundlePrior, load_bundle

RUN_FILE = "run.json"
ALIGNMENT_FILE = "alignment.npz"

# Settings that do not change any token: a resumed run may change them.
_NOT_RECORDED = ("max_batch_size", "resume", "progress", "alignment", "mesh")


class SampleError(UserError):
    """A setting or input the run cannot use; the message names it (sample.py prints it and exits 2)."""


# Everything sample.py turns into a one-line error instead of a traceback (all of the above are UserErrors).
USER_ERRORS = errors_lib.USER_ERRORS


# ------------------------------------------------------------------------------------------------------------
# Settings

def _split(value: Any) -> List[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)):
        return [str(value)]
    return [str(v).strip() for v in (value or ())]


def parse_floats(value: Any, name: str) -> Tuple[float, ...]:
    try:
        return tuple(float(v) for v in _split(value))
    except ValueError:
        raise SampleError(f"{name} {value!r}: expected numbers separated by commas") from None


def parse_ints(value: Any, name: str) -> Tuple[int, ...]:
    try:
        return tuple(int(v) for v in _split(value))
    except ValueError:
        raise SampleError(f"{name} {value!r}: expected integers separated by commas") from None


@dataclasses.dataclass(frozen=True)
class Settings:
    checkpoint: str
    mode: str
    artist: Tuple[str, ...]          # one name, or one per item ('|'-separated), repeated to n_samples
    genre: Tuple[str, ...]
    lyrics: Optional[str]            # None: from the codes file (continue/upsample) or none
    sample_length_in_seconds: float
    total_sample_length_in_seconds: float
    n_samples: Optional[int]         # None: the mode decides (1, or the codes file's / --keep's count)
    hop_fraction: Tuple[float, ...]
    temperature: Tuple[float, ...]
    top_k: int
    top_p: float
    levels: Tuple[int, ...]
    max_batch_size: Tuple[int, ...]
    seed: int
    audio_file: Tuple[str, ...]
    prompt_length_in_seconds: float
    codes_file: str
    keep: Tuple[int, ...]
    resume: bool
    dtype: str
    cache_dtype: str
    alignment: bool
    progress: bool
    mesh: Tuple[int, ...]         # (data, fsdp, tensor): batch chunks split over data x fsdp, params by logical axes

    def per_level(self, name: str, level: int, n_levels: int):
        values = getattr(self, name)
        if len(values) == 1:
            return values[0]
        if len(values) != n_levels:
            raise SampleError(f"{name} has {len(values)} values {values}; give one, or one per level "
                              f"(levels 0..{n_levels - 1}: {n_levels})")
        return values[level]


def _sampling_mesh(s: "Settings"):
    """The device mesh a run samples on (None: one device). Tokens do not depend on it: every item draws
    with its own key."""
    from jukejax import parallel
    from jukejax.config import ConfigError, MeshConfig
    if len(s.mesh) != 3:
        raise SampleError(f"mesh {s.mesh}: expected three sizes data,fsdp,tensor (-1 = the remaining devices)")
    try:
        mesh = parallel.make_mesh(MeshConfig(*s.mesh))
    except ConfigError as e:
        raise SampleError(str(e)) from None
    return None if mesh.size == 1 else mesh


def _place_params(params, config, mesh):
    """Prior params on the mesh by their logical axes (fsdp/tensor splits for big priors, else replicated)."""
    if mesh is None:
        return params
    from jukejax import parallel
    from jukejax.prior.prior import abstract_params
    shardings = parallel.param_shardings(abstract_params(config), mesh)
    return jax.tree.map(lambda x, sh: parallel.put_global(x, sh), params, shardings)


def resolve_settings(config) -> Settings:
    """Typed, checked settings from a configs/sample_defaults.py ConfigDict (with command-line overrides)."""
    get = lambda name, default=None: config.get(name, default)
    lyrics = get("lyrics", "") or ""
    if get("lyrics_file", ""):
        path = pathlib.Path(get("lyrics_file"))
        try:
            lyrics = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SampleError(f"lyrics_file {path}: cannot be read ({e})") from None
    n_samples = int(get("n_samples", -1))
    if n_samples != -1 and n_samples < 1:
        raise SampleError(f"n_samples {n_samples}: must be at least 1")
    s = Settings(
        checkpoint=str(get("checkpoint", "") or ""), mode=str(get("mode", "ancestral")),
        artist=tuple(a.strip() for a in str(get("artist", "") or "").split("|") if a.strip()),
        genre=tuple(g.strip() for g in str(get("genre", "") or "").split("|") if g.strip()),
        lyrics=lyrics or None,
        sample_length_in_seconds=float(get("sample_length_in_seconds", 0.0)),
        total_sample_length_in_seconds=float(get("total_sample_length_in_seconds", 0.0)),
        n_samples=None if n_samples == -1 else n_samples,
        hop_fraction=parse_floats(get("hop_fraction", (0.5, 0.5, 0.125)), "hop_fraction"),
        temperature=parse_floats(get("temperature", (0.99,)), "temperature"),
        top_k=int(get("top_k", 0)), top_p=float(get("top_p", 0.0)),
        levels=parse_ints(get("levels", ()), "levels"),
        max_batch_size=parse_ints(get("max_batch_size", (16,)), "max_batch_size"),
        seed=int(get("seed", 0)), audio_file=tuple(_split(get("audio_file", ""))),
        prompt_length_in_seconds=float(get("prompt_length_in_seconds", 0.0) or 0.0),
        codes_file=str(get("codes_file", "") or ""), keep=parse_ints(get("keep", ()), "keep"),
        resume=bool(get("resume", False)), dtype=str(get("dtype", "") or ""),
        cache_dtype=str(get("cache_dtype", "") or ""), alignment=bool(get("alignment", True)),
        progress=bool(get("progress", True)), mesh=parse_ints(get("mesh", (-1, 1, 1)), "mesh"))
    if not s.checkpoint:
        raise SampleError("--checkpoint is required (a bundle directory with vqvae/ and prior_level_*/)")
    if s.mode not in modes.MODES:
        raise SampleError(f"mode {s.mode!r} is not one of {', '.join(modes.MODES)}")
    for t in s.temperature:
        if not t > 0:
            raise SampleError(f"temperature {t:g}: must be > 0")
    if not s.temperature:
        raise SampleError("temperature: give at least one value")
    if s.top_k < 0:
        raise SampleError(f"top_k {s.top_k}: must be >= 0 (0 turns it off)")
    if not 0.0 <= s.top_p <= 1.0:
        raise SampleError(f"top_p {s.top_p:g}: must lie in [0, 1] (0 turns it off)")
    if s.top_k > 0 and s.top_p > 0:
        raise SampleError(f"top_k {s.top_k} and top_p {s.top_p:g} cannot be used together (as in the original); "
                          f"set one of them to 0")
    if not s.max_batch_size or any(b < 1 for b in s.max_batch_size):
        raise SampleError(f"max_batch_size {s.max_batch_size}: must be at least 1")
    if not s.hop_fraction:
        raise SampleError("hop_fraction: give one value, or one per level")
    for name in ("sample_length_in_seconds", "total_sample_length_in_seconds", "prompt_length_in_seconds"):
        if getattr(s, name) < 0:
            raise SampleError(f"{name} {getattr(s, name):g}: must not be negative")
    if s.mode == "primed" and not s.audio_file:
        raise SampleError("mode primed needs --audio_file (comma-separated files)")
    if s.mode == "primed" and not s.prompt_length_in_seconds > 0:
        raise SampleError("mode primed needs --prompt_length_in_seconds > 0")
    if s.mode in ("continue", "upsample") and not s.codes_file:
        raise SampleError(f"mode {s.mode} needs --codes_file (a level_*/codes.npz written by an earlier run)")
    if s.keep and s.mode != "continue":
        raise SampleError("--keep (co-composition) works with --mode=continue")
    if (s.mode in ("ancestral", "primed")
            and 0 < s.total_sample_length_in_seconds < s.sample_length_in_seconds):
        raise SampleError(f"total_sample_length_in_seconds {s.total_sample_length_in_seconds:g} is shorter than "
                          f"sample_length_in_seconds {s.sample_length_in_seconds:g}")
    return s


def check_workdir(workdir) -> pathlib.Path:
    """Create the workdir and prove it writable before any work."""
    if not workdir:
        raise SampleError("--workdir is required")
    return errors_lib.check_workdir(workdir)


# ------------------------------------------------------------------------------------------------------------
# Labels per item and level

@dataclasses.dataclass
class Items:
    artist: List[str]
    genre: List[str]
    lyrics: List[str]


def _repeat(values: Sequence[str], n: int) -> List[str]:
    return [values[i % len(values)] for i in range(n)]


def resolve_items(s: Settings, start: modes.Start) -> Items:
    n = start.n_samples
    from_codes = start.labels
    artist = _repeat(s.artist, n) if s.artist else (from_codes[0] if from_codes else ["unknown"] * n)
    genre = _repeat(s.genre, n) if s.genre else (from_codes[1] if from_codes else ["unknown"] * n)
    if s.lyrics is not None:
        lyrics = [s.lyrics] * n
    else:
        lyrics = from_codes[2] if from_codes else [""] * n
    return Items(list(artist), list(genre), list(lyrics))


def song_labels(prior: BundlePrior, items: Items, total_length: int
                ) -> Tuple[Optional[np.ndarray], Optional[List[np.ndarray]]]:
    """(y (N, y_width) at offset 0, full lyric tokens per item) of one prior; (None, None) without labels."""
    if prior.labeller is None:
        return None, None
    lab = prior.labeller
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = np.stack([make_y(a, g, l, total_length, 0, prior.config.sample_length, lab)
                      for a, g, l in zip(items.artist, items.genre, items.lyrics)])
    for message in sorted({str(w.message) for w in caught}):
        print(f"warning: {prior.name}: {message}", file=sys.stderr)
    full = [lab.full_tokens(l) for l in items.lyrics] if prior.config.n_tokens else None
    return y, full


def _check_window_labels(prior: BundlePrior, y: Optional[np.ndarray], full, windows) -> None:
    """Label values of a level's first and last windows, checked before any sampling (timing ranges, ids)."""
    c = prior.config
    if y is None:
        return
    for w in {windows[0].start: windows[0], windows[-1].start: windows[-1]}.values():
        yw, _ = set_y_for_window(y, w.start, c.sample_length, c.raw_to_tokens, full, c.n_tokens)
        try:
            check_labels(split_y(yw, c.n_tokens)[0], c.labels)
        except ValueError as e:
            hint = "; set --total_sample_length_in_seconds" if "total_length" in str(e) else ""
            raise SampleError(f"{prior.name} labels: {e}{hint}") from None


# ------------------------------------------------------------------------------------------------------------
# The run

@dataclasses.dataclass
class RunResult:
    workdir: pathlib.Path
    zs: Dict[int, np.ndarray]
    levels: List[int]
    stats: Dict[int, schedule.LevelStats]
    sample_length: int
    sr: int
    alignments: Optional[List[np.ndarray]] = None

    def index(self, level: int) -> pathlib.Path:
        return outputs.level_dir(self.workdir, level) / outputs.INDEX_FILE


def _record(s: Settings, start: modes.Start, items: Items, levels: List[int], total_length: int) -> Dict[str, Any]:
    record = {k: v for k, v in dataclasses.asdict(s).items() if k not in _NOT_RECORDED}
    record.update(checkpoint=str(pathlib.Path(s.checkpoint).resolve()), n_samples=start.n_samples,
                  sample_length=start.sample_length, total_length=total_length, levels=levels,
                  items=dataclasses.asdict(items))
    return json.loads(json.dumps(record))  # tuples -> lists, as read back


def _is_writer() -> bool:
    """Every process samples every token; process 0 alone writes the workdir (which must be one shared folder
    for --resume on several hosts: every process reads it back)."""
    return jax.process_index() == 0


def _check_resume(workdir: pathlib.Path, record: Dict[str, Any], resume: bool) -> None:
    path = workdir / RUN_FILE
    exists = path.is_file()
    if jax.process_count() > 1:  # every process looks before process 0 writes
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("jukejax sample: run.json checked")
    if exists:
        if not resume:
            raise SampleError(f"workdir {workdir} already holds a sampling run ({RUN_FILE}); pass --resume to "
                              f"continue it, or choose another --workdir")
        try:
            previous = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SampleError(f"{path}: cannot be read ({e})") from None
        for key in sorted(set(previous) | set(record)):
            if previous.get(key) != record.get(key):
                raise SampleError(f"--resume: {key} is {record.get(key)!r} but the run in {workdir} used "
                                  f"{previous.get(key)!r}; resume with the same settings or use another workdir")
        return
    if _is_writer():
        errors_lib.atomic_write_bytes(path, json.dumps(record, indent=2, sort_keys=True).encode())


def run(config, workdir, *, on_window: Optional[Callable[[int, int], None]] = None) -> RunResult:
    """Sample as `config` says into `workdir`. `on_window(level, start)` runs after every window is saved
    (progress hooks; an exception from it stops the run like a kill would, and `--resume` picks it up)."""
    s = resolve_settings(config)
    workdir = check_workdir(workdir)
    bundle = load_bundle(s.checkpoint, dtype=s.dtype or None)
    start = modes.prepare(bundle, s.mode, n_samples=s.n_samples, sample_seconds=s.sample_length_in_seconds,
                          audio_files=s.audio_file, prompt_seconds=s.prompt_length_in_seconds,
                          codes_file=s.codes_file, keep=s.keep)
    n, sr, top = start.n_samples, bundle.sr, bundle.top_level
    sample_length = start.sample_length
    total_length = (int(s.total_sample_length_in_seconds * sr) if s.total_sample_length_in_seconds > 0
                    else start.total_length or sample_length)
    if total_length < sample_length:
        raise SampleError(f"total_sample_length_in_seconds {total_length / sr:g} is shorter than the sample "
                          f"({sample_length / sr:g} s)")
    levels = sorted(set(s.levels or start.default_levels), reverse=True)
    for level in levels:
        if level not in bundle.priors:
            raise SampleError(f"level {level}: the bundle {s.checkpoint} has no prior_level_{level} (has "
                              f"{', '.join(map(str, sorted(bundle.priors))) or 'none'})")
    items = resolve_items(s, start)
    zs = dict(start.zs)

    # Everything that can be checked before sampling: lengths, hops, labels of every level.
    plans = {}
    for level in levels:
        prior = bundle.priors[level]
        c = prior.config
        total = schedule.level_total(c, sample_length)
        hop = schedule.hop_tokens(c, float(s.per_level("hop_fraction", level, bundle.levels)))
        if c.upsampler is not None and level + 1 not in levels:
            have = zs[level + 1].shape[1] * bundle.hop_lengths[level + 1]
            if have < sample_length:
                raise SampleError(f"level {level} is conditioned on level-{level + 1} codes, which cover "
                                  f"{have / sr:g} s of the {sample_length / sr:g} s sample; sample level "
                                  f"{level + 1} too (--levels) or start from codes that cover it")
        y, full = song_labels(prior, items, total_length)
        _check_window_labels(prior, y, full, schedule.level_windows(total, c.n_ctx, hop))
        plans[level] = dict(total=total, hop=hop, y=y, full=full)

    record = _record(s, start, items, levels, total_length)
    _check_resume(workdir, record, s.resume)
    print(f"sampling {n} x {sample_length / sr:g} s (levels {', '.join(map(str, levels))}, mode {s.mode}) "
          f"into {workdir}", flush=True)

    key = jax.random.key(s.seed)
    mesh = _sampling_mesh(s)
    alignments = outputs.read_alignments(workdir / ALIGNMENT_FILE) if s.resume else None
    stats: Dict[int, schedule.LevelStats] = {}

    def make_job(level: int, params) -> schedule.LevelJob:
        prior = bundle.priors[level]
        plan = plans.get(level)
        if plan is None:  # the top prior, only for alignment
            c = prior.config
            y, full = song_labels(prior, items, total_length)
            plan = dict(hop=schedule.hop_tokens(c, float(s.per_level("hop_fraction", level, bundle.levels))),
                        y=y, full=full)
        return schedule.LevelJob(
            config=prior.config, params=params, key=jax.random.fold_in(key, level), y=plan["y"],
            full_tokens=plan["full"], temperature=float(s.per_level("temperature", level, bundle.levels)),
            top_k=s.top_k, top_p=s.top_p, hop=plan["hop"],
            max_batch_size=int(s.per_level("max_batch_size", level, bundle.levels)),
            cache_dtype=s.cache_dtype or None, mesh=mesh)

    for level in levels:
        prior = bundle.priors[level]
        directory = outputs.level_dir(workdir, level)
        directory.mkdir(parents=True, exist_ok=True)
        codes_path = directory / outputs.CODES_FILE
        initial = zs[level]
        previous = outputs.read_codes(codes_path) if s.resume and codes_path.is_file() else None
        windows_done: List[int] = []
        if previous is not None:
            z_prev = previous.z
            if z_prev.shape[0] != n or not np.array_equal(z_prev[:, :initial.shape[1]], initial):
                raise SampleError(f"--resume: {codes_path} does not extend this run's starting codes of level "
                                  f"{level}")
            zs[level] = z_prev
            windows_done = [int(w) for w in previous.windows_done]
        plan = plans[level]

        def save(z: np.ndarray, complete: bool = False, done: bool = False, level=level, plan=plan,
                 codes_path=codes_path):
            if not _is_writer():
                return
            outputs.write_codes(codes_path, outputs.Codes(
                level=level, z=z, zs={**zs, level: z}, sr=sr, hop_lengths=bundle.hop_lengths,
                artist=items.artist, genre=items.genre, lyrics=items.lyrics,
                y=plan["y"] if plan["y"] is not None else np.zeros((n, 0), np.int64), total_length=total_length,
                sample_length=sample_length, windows_done=np.asarray(windows_done, np.int64), complete=complete,
                outputs_done=done, settings=outputs.settings_json(record)))

        if previous is not None and previous.outputs_done and zs[level].shape[1] == plan["total"]:
            print(f"level {level}: already finished in {directory}", flush=True)
            continue
        job = None
        if zs[level].shape[1] < plan["total"]:
            job = make_job(level, _place_params(prior.load_params(), prior.config, mesh))

            def on_sampled(window: schedule.Window, z: np.ndarray, level=level, save=save):
                windows_done.append(window.start)
                save(z)
                if on_window is not None:
                    on_window(level, window.start)

            z, stats[level] = schedule.sample_level(job, zs, plan["total"], on_window=on_sampled,
                                                    progress=s.progress)
            zs[level] = z
            st = stats[level]
            print(f"level {level}: {st.windows_sampled} windows, {st.tokens} tokens in {st.seconds:.1f} s "
                  f"({st.tokens_per_second:.1f} tokens/s)", flush=True)
        save(zs[level], complete=True)

        top_prior = bundle.priors.get(top)
        if (alignments is None and s.alignment and top_prior is not None and zs[top].shape[1] > 0
                and schedule.alignment_layer(top_prior.config)):
            # As the original: aligned once, by the top prior, after the first level sampled (align.py).
            top_job = job if level == top and job is not None else None
            job = None  # this level's params go before the top prior's are loaded
            alignments = schedule.lyric_alignment(top_job or make_job(top, top_prior.load_params()), zs[top])
            if _is_writer():
                outputs.write_alignments(workdir / ALIGNMENT_FILE, alignments)
            del top_job
        del job

        if _is_writer():  # decoding to audio is for the files alone
            audio = schedule.decode_level(bundle.vqvae_config, bundle.vqvae_variables, zs[level], level)
            names = outputs.write_level_audio(directory, audio, sr)
            _write_html(directory, level, bundle, items, names, alignments, s)
            save(zs[level], complete=True, done=True)
            print(f"level {level}: {len(names)} wavs, spectrograms and {directory / outputs.INDEX_FILE}",
                  flush=True)

    print(f"samples in {workdir}: open " + ", ".join(str(outputs.level_dir(workdir, l) / outputs.INDEX_FILE)
                                                    for l in levels), flush=True)
    return RunResult(workdir, zs, levels, stats, sample_length, sr, alignments)


def _write_html(directory: pathlib.Path, level: int, bundle: Bundle, items: Items, names, alignments,
                s: Settings) -> None:
    top = bundle.priors.get(bundle.top_level)
    v3 = bool(top is not None and top.config.labels is not None and top.config.hps.labels_v3)
    html_items = []
    for i, (wav, png) in enumerate(names):
        text = items.lyrics[i]
        timings = None
        if alignments is not None:
            text = lyrics_lib.clean_lyrics(text, v3)  # the characters the alignment indexes
            timings = outputs.char_timings(alignments[i], len(text), bundle.hop_lengths[-1], bundle.sr)
        html_items.append(outputs.HtmlItem(wav, png, items.artist[i], items.genre[i], text, timings))
    note = (f"mode {s.mode}, seed {s.seed}, level {level} of {bundle.levels} "
            f"(hop {bundle.hop_lengths[level]} samples at {bundle.sr} Hz)")
    outputs.write_index_html(directory / outputs.INDEX_FILE, f"level {level}", html_items, note)

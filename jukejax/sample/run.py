"""`sample.py`'s job: sample a song level by level from a model folder and write what it made.

    result = run(config, workdir)      # config: configs/sample_defaults.py, overridden from the command line

Three steps (the original `sample.py::_sample`):

1. `make_plan`: every setting, the model folder (configs, id tables, VQ-VAE, weights finite; prior param shapes
   from checkpoint metadata), the mode's start codes (codes files checked against the codebooks), each level's
   lengths, hops and labels. It reads and checks everything and writes nothing, so a bad setting or input
   stops the run before the workdir exists.
2. `open_workdir`: take the workdir's lock (one writer), delete what a killed writer left, and write run.json
   (or, with `--resume`, check it against this plan, weights fingerprints included).
3. Per sampled level, top down: `resume_level` (what a killed run finished), `sample_level_step` (the level
   window by window, `level_{l}/codes.npz` saved atomically after every window), `align_step` (lyric timings,
   once) and `write_level_step` (decode with the VQ-VAE, wavs, spectrograms, index.html).

Resume contract (`--resume`): run.json records every setting that decides the tokens (max_batch_size, mesh and
progress do not; anything else differing is an error) and a fingerprint of every checkpoint the run reads. A
window's tokens depend only on its inputs and its key (see `schedule`), and codes.npz holds exactly the windows
that finished, so a resumed run re-samples no finished window, loses none, and ends with the codes an
uninterrupted run would have made. Levels whose outputs were written are skipped; a level that finished
sampling but not writing is decoded again.
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
from jukejax.config import ConfigError
from jukejax.errors import atomic_write_text
from jukejax.prior import lyrics as lyrics_lib
from jukejax.prior.conditioners import check_labels
from jukejax.prior.labels import make_y, set_y_for_window, split_y
from jukejax.sample import modes, outputs, schedule
from jukejax.sample import settings as settings_lib
from jukejax.sample import workdir as workdir_lib
from jukejax.sample.bundle import VQVAE_DIR, Bundle, BundlePrior, fingerprint, load_bundle, prior_dir
from jukejax.sample.settings import SampleError, SampleSettings
from jukejax.vqvae.codes import check_codes

RUN_FILE = "run.json"
ALIGNMENT_FILE = "alignment.npz"
Settings = SampleSettings

# Everything sample.py turns into a one-line error instead of a traceback (every UserError, and OSError).
USER_ERRORS = errors_lib.USER_ERRORS


def resolve_settings(config) -> SampleSettings:
    """Typed, checked settings from a configs/sample_defaults.py ConfigDict (with command-line overrides)."""
    return settings_lib.from_config(config)


def check_workdir(workdir) -> pathlib.Path:
    """Prove the workdir writable before any work, leaving nothing behind."""
    return workdir_lib.check_writable(workdir)


def _sampling_mesh(s: SampleSettings):
    """The device mesh a run samples on (None: one device). Tokens do not depend on it: every item draws
    with its own key."""
    from jukejax import parallel
    from jukejax.config import MeshConfig
    try:
        mesh = parallel.make_mesh(MeshConfig(*s.mesh))
    except ConfigError as e:
        raise SampleError(str(e)) from None
    return None if mesh.size == 1 else mesh


def _place_params(params, config, mesh, scan: bool = False):
    """Prior params on the mesh by their logical axes (fsdp/tensor splits for big priors, else replicated), the
    transformer's dense layers in the compute dtype (`decode.decode_params`: cast once, not every token)."""
    from jukejax.sample import decode
    params = decode.decode_params(params, config, scan)
    if mesh is None:
        return params
    from jukejax import parallel
    from jukejax.prior.prior import abstract_params
    shardings = decode.decode_shardings(parallel.param_shardings(abstract_params(config), mesh), config, scan)
    return jax.tree.map(lambda x, sh: parallel.put_global(x, sh), params, shardings)


# ------------------------------------------------------------------------------------------------------------
# Labels per item and level

@dataclasses.dataclass
class Items:
    artist: List[str]
    genre: List[str]
    lyrics: List[str]

    def record(self) -> Dict[str, Any]:
        """As run.json keeps them: each distinct lyrics text once."""
        texts, of_item = outputs.dedupe(self.lyrics)
        return dict(artist=list(self.artist), genre=list(self.genre), lyrics_text=texts, lyrics_of_item=of_item)


def _repeat(values: Sequence[str], n: int) -> List[str]:
    return [values[i % len(values)] for i in range(n)]


def resolve_items(s: SampleSettings, start: modes.Start) -> Items:
    n = start.n_samples
    from_codes = start.labels
    artist = _repeat(s.artist, n) if s.artist else (from_codes[0] if from_codes else ["unknown"] * n)
    genre = _repeat(s.genre, n) if s.genre else (from_codes[1] if from_codes else ["unknown"] * n)
    if s.lyrics:
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
# 1. The plan: everything read and checked, nothing written

@dataclasses.dataclass
class LevelPlan:
    """One level's share of the run: tokens to fill, window hop, sampling settings and labels."""
    level: int
    total: int
    hop: int
    temperature: float
    max_batch_size: int
    y: Optional[np.ndarray]
    full: Optional[List[np.ndarray]]


@dataclasses.dataclass
class Plan:
    settings: SampleSettings
    bundle: Bundle
    start: modes.Start
    levels: List[int]                 # sampled, top first
    items: Items
    total_length: int
    level_plans: Dict[int, LevelPlan]
    record: Dict[str, Any]            # what run.json holds

    @property
    def n(self) -> int:
        return self.start.n_samples

    @property
    def codes_record(self) -> Dict[str, Any]:
        """The record as every codes.npz keeps it: lyrics by their sha256, not their text."""
        items = dict(self.record["items"])
        items["lyrics_sha256"] = [outputs.text_sha256(t) for t in items.pop("lyrics_text")]
        return {**self.record, "items": items}

    @property
    def sample_length(self) -> int:
        return self.start.sample_length


def _per_level(s: SampleSettings, name: str, level: int, n_levels: int):
    return s.per_level(name, level, n_levels, settings_lib.per_level_defaults(n_levels)[name][level])


def level_plan(s: SampleSettings, bundle: Bundle, items: Items, level: int, sample_length: int,
               total_length: int) -> LevelPlan:
    prior = bundle.priors[level]
    c = prior.config
    total = schedule.level_total(c, sample_length)
    hop = schedule.hop_tokens(c, float(_per_level(s, "hop_fraction", level, bundle.levels)))
    y, full = song_labels(prior, items, total_length)
    _check_window_labels(prior, y, full, schedule.level_windows(total, c.n_ctx, hop))
    return LevelPlan(level, total, hop, float(_per_level(s, "temperature", level, bundle.levels)),
                     int(_per_level(s, "max_batch_size", level, bundle.levels)), y, full)


def _uses_alignment(s: SampleSettings, bundle: Bundle) -> bool:
    top = bundle.priors.get(bundle.top_level)
    return bool(s.alignment and top is not None and schedule.alignment_layer(top.config))


def make_plan(s: SampleSettings) -> Plan:
    """Read the model folder and the mode's inputs and check everything the run needs; writes nothing."""
    bundle = load_bundle(s.checkpoint, dtype=s.dtype or None)
    n_levels = bundle.levels
    for name in ("hop_fraction", "temperature", "max_batch_size"):
        for level in range(n_levels):
            _per_level(s, name, level, n_levels)  # one value or one per level of this model
    bad = [level for level in s.levels if level >= n_levels]
    if bad:
        raise SampleError(f"levels {list(s.levels)}: this model has levels 0..{n_levels - 1}")
    start = modes.prepare(bundle, s.mode, n_samples=None if s.n_samples == -1 else s.n_samples,
                          sample_seconds=s.sample_length_in_seconds, audio_files=s.audio_file,
                          prompt_seconds=s.prompt_length_in_seconds, codes_file=s.codes_file, keep=s.keep)
    sr, sample_length = bundle.sr, start.sample_length
    total_length = (int(s.total_sample_length_in_seconds * sr) if s.total_sample_length_in_seconds > 0
                    else start.total_length or sample_length)
    if total_length < sample_length:
        raise SampleError(f"total_sample_length_in_seconds {total_length / sr:g} is shorter than the sample "
                          f"({sample_length / sr:g} s)")
    levels = sorted(set(s.levels or start.default_levels), reverse=True)
    for level in levels:
        if level not in bundle.priors:
            raise SampleError(f"level {level}: the model folder {s.checkpoint} has no {prior_dir(level)} (has "
                              f"{', '.join(map(str, sorted(bundle.priors))) or 'none'})")
    items = resolve_items(s, start)
    level_plans = {}
    for level in levels:
        c = bundle.priors[level].config
        if c.upsampler is not None and level + 1 not in levels:
            have = start.zs[level + 1].shape[1] * bundle.hop_lengths[level + 1]
            if have < sample_length:
                raise SampleError(f"level {level} is conditioned on level-{level + 1} codes, which cover "
                                  f"{have / sr:g} s of the {sample_length / sr:g} s sample; sample level "
                                  f"{level + 1} too (--levels) or start from codes that cover it")
        level_plans[level] = level_plan(s, bundle, items, level, sample_length, total_length)

    used = {VQVAE_DIR: bundle.directory / VQVAE_DIR}
    for level in set(levels) | ({bundle.top_level} if _uses_alignment(s, bundle) else set()):
        used[prior_dir(level)] = bundle.priors[level].workdir
    record = {k: v for k, v in s.recorded().items() if k not in ("lyrics", "lyrics_file")}
    record.update(checkpoint=str(pathlib.Path(s.checkpoint).resolve()), n_samples=start.n_samples,
                  sample_length=sample_length, total_length=total_length, levels=levels, items=items.record(),
                  per_level={l: dict(hop=p.hop, temperature=p.temperature) for l, p in level_plans.items()},
                  weights={name: fingerprint(path) for name, path in sorted(used.items())})
    record = json.loads(json.dumps(record))  # tuples -> lists, int keys -> str, as read back
    return Plan(s, bundle, start, levels, items, total_length, level_plans, record)


# ------------------------------------------------------------------------------------------------------------
# 2. The workdir: one writer, run.json

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
            if previous.get(key) == record.get(key):
                continue
            if key == "weights":
                was, now = previous.get(key) or {}, record[key]
                changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
                raise SampleError(f"--resume: the weights of {', '.join(changed)} in {record['checkpoint']} changed "
                                  f"since the run in {workdir} started; its codes came from the old ones, so "
                                  f"start a new run in another --workdir")
            if key == "items":
                raise SampleError(f"--resume: the artists, genres or lyrics differ from the run in {workdir}; "
                                  f"resume with the same settings or use another workdir")
            raise SampleError(f"--resume: {key} is {record.get(key)!r} but the run in {workdir} used "
                              f"{previous.get(key)!r}; resume with the same settings or use another workdir")
        return
    if resume:
        print(f"warning: --resume: {workdir} holds no run yet; starting one", file=sys.stderr)
    if _is_writer():
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))


def open_workdir(workdir: pathlib.Path, plan: Plan) -> Optional[workdir_lib.WorkdirLock]:
    """Take the workdir (the writer: its lock, leftovers of a killed writer removed) and write or check
    run.json. Returns the lock to release when the run ends (None on processes that do not write)."""
    lock = workdir_lib.WorkdirLock(workdir).acquire() if _is_writer() else None
    try:
        if lock is not None:
            workdir_lib.remove_leftovers(workdir)
        _check_resume(workdir, plan.record, plan.settings.resume)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


# ------------------------------------------------------------------------------------------------------------
# 3. Per level: resume, sample, align, write

@dataclasses.dataclass
class LevelState:
    """A level's codes and finished windows as the run goes (read back from codes.npz on --resume)."""
    level: int
    path: pathlib.Path
    windows_done: List[int]
    outputs_done: bool = False


def resume_level(workdir: pathlib.Path, plan: Plan, zs: Dict[int, np.ndarray], level: int) -> LevelState:
    """The level's state: fresh, or what the killed run's codes.npz holds (it must extend this run's start)."""
    path = outputs.level_dir(workdir, level) / outputs.CODES_FILE
    state = LevelState(level, path, [])
    if not (plan.settings.resume and path.is_file()):
        return state
    previous = outputs.read_codes(path)
    previous.z = check_codes(previous.z, l_bins=plan.bundle.vqvae_config.l_bins, name=f"codes file {path}: z")
    initial = zs[level]
    if previous.z.shape[0] != plan.n or not np.array_equal(previous.z[:, :initial.shape[1]], initial):
        raise SampleError(f"--resume: {path} does not extend this run's starting codes of level {level}")
    zs[level] = previous.z
    state.windows_done = [int(w) for w in previous.windows_done]
    state.outputs_done = previous.outputs_done
    return state


def save_level(plan: Plan, zs: Dict[int, np.ndarray], state: LevelState, z: np.ndarray, *,
               complete: bool = False, outputs_done: bool = False) -> None:
    if not _is_writer():
        return
    level_plan_ = plan.level_plans[state.level]
    bundle = plan.bundle
    codes = outputs.Codes(
        level=state.level, z=z, zs={**zs, state.level: z}, sr=bundle.sr, hop_lengths=bundle.hop_lengths,
        artist=plan.items.artist, genre=plan.items.genre, lyrics=plan.items.lyrics,
        y=level_plan_.y if level_plan_.y is not None else np.zeros((plan.n, 0), np.int64),
        total_length=plan.total_length, sample_length=plan.sample_length,
        windows_done=np.asarray(state.windows_done, np.int64), complete=complete, outputs_done=outputs_done,
        settings=outputs.settings_json(plan.codes_record))
    try:
        outputs.write_codes(state.path, codes)
    except OSError as e:
        raise SampleError(f"level {state.level}: cannot save {state.path} ({e.strerror or e}); the file keeps the "
                          f"windows saved before: make room and run the same command with --resume") from None


def make_job(plan: Plan, level: int, params, mesh) -> schedule.LevelJob:
    """The schedule's job for one level (the top prior's also serves the lyric alignment)."""
    s, bundle = plan.settings, plan.bundle
    lp = plan.level_plans.get(level)
    if lp is None:  # the top prior, only for alignment
        lp = level_plan(s, bundle, plan.items, level, plan.sample_length, plan.total_length)
    return schedule.LevelJob(
        config=bundle.priors[level].config, params=params, key=jax.random.fold_in(jax.random.key(s.seed), level),
        y=lp.y, full_tokens=lp.full, temperature=lp.temperature, top_k=s.top_k, top_p=s.top_p, hop=lp.hop,
        max_batch_size=lp.max_batch_size, cache_dtype=s.cache_dtype or None, scan=s.decode_scan, mesh=mesh)


def sample_level_step(plan: Plan, zs: Dict[int, np.ndarray], state: LevelState, mesh,
                      on_window: Optional[Callable[[int, int], None]]
                      ) -> Tuple[Optional[schedule.LevelJob], Optional[schedule.LevelStats]]:
    """Fill the level window by window, saving codes.npz after each; (its job, to reuse for alignment, and
    stats), both None when the codes were already full."""
    level = state.level
    lp = plan.level_plans[level]
    if zs[level].shape[1] >= lp.total:
        return None, None
    prior = plan.bundle.priors[level]
    job = make_job(plan, level, _place_params(prior.load_params(), prior.config, mesh, plan.settings.decode_scan),
                   mesh)

    def on_sampled(window: schedule.Window, z: np.ndarray) -> None:
        state.windows_done.append(window.start)
        save_level(plan, zs, state, z)
        if on_window is not None:
            on_window(level, window.start)

    z, stats = schedule.sample_level(job, zs, lp.total, on_window=on_sampled, progress=plan.settings.progress)
    zs[level] = z
    print(f"level {level}: {stats.windows_sampled} windows, {stats.tokens} tokens in {stats.seconds:.1f} s "
          f"({stats.tokens_per_second:.1f} tokens/s)", flush=True)
    return job, stats


def align_step(workdir: pathlib.Path, plan: Plan, zs: Dict[int, np.ndarray], level: int,
               job: Optional[schedule.LevelJob], mesh) -> Optional[List[np.ndarray]]:
    """As the original (align.py): the lyric alignment, once, by the top prior, after the first level sampled."""
    bundle = plan.bundle
    top = bundle.top_level
    if not _uses_alignment(plan.settings, bundle) or zs[top].shape[1] == 0:
        return None
    top_job = job if level == top and job is not None else None
    if top_job is None:
        top_job = make_job(plan, top, bundle.priors[top].load_params(), None)
    alignments = schedule.lyric_alignment(top_job, zs[top])
    if _is_writer():
        outputs.write_alignments(workdir / ALIGNMENT_FILE, alignments)
    return alignments


def write_level_step(workdir: pathlib.Path, plan: Plan, zs: Dict[int, np.ndarray], state: LevelState,
                     alignments) -> None:
    """Decode the level with the VQ-VAE and write its wavs, spectrograms and index.html (the writer only)."""
    if not _is_writer():
        return
    bundle, level = plan.bundle, state.level
    directory = state.path.parent
    audio = schedule.decode_level(bundle.vqvae_config, bundle.vqvae_variables, zs[level], level)
    try:
        names = outputs.write_level_audio(directory, audio, bundle.sr, level)
        _write_html(directory, level, bundle, plan.items, names, alignments, plan.settings)
    except OSError as e:
        raise SampleError(f"level {level}: cannot write its wavs and pages in {directory} ({e.strerror or e}); its "
                          f"codes are saved: make room and run the same command with --resume") from None
    save_level(plan, zs, state, zs[level], complete=True, outputs_done=True)
    print(f"level {level}: {len(names)} wavs, spectrograms and {directory / outputs.INDEX_FILE}", flush=True)


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


def run(config, workdir, *, on_window: Optional[Callable[[int, int], None]] = None) -> RunResult:
    """Sample as `config` says into `workdir`. `on_window(level, start)` runs after every window is saved
    (progress hooks; an exception from it stops the run like a kill would, and `--resume` picks it up)."""
    s = resolve_settings(config)
    # Only the writer probes (and removes what the probe created): another process of a multi-host run would
    # race with the writer creating the folder.
    workdir = check_workdir(workdir) if _is_writer() else pathlib.Path(workdir)
    plan = make_plan(s)
    mesh = _sampling_mesh(s)
    lock = open_workdir(workdir, plan)
    try:
        print(f"sampling {plan.n} x {plan.sample_length / plan.bundle.sr:g} s (levels "
              f"{', '.join(map(str, plan.levels))}, mode {s.mode}) into {workdir}", flush=True)
        zs = dict(plan.start.zs)
        alignments = outputs.read_alignments(workdir / ALIGNMENT_FILE) if s.resume else None
        stats: Dict[int, schedule.LevelStats] = {}
        for level in plan.levels:
            outputs.level_dir(workdir, level).mkdir(parents=True, exist_ok=True)
            state = resume_level(workdir, plan, zs, level)
            if state.outputs_done and zs[level].shape[1] == plan.level_plans[level].total:
                print(f"level {level}: already finished in {state.path.parent}", flush=True)
                continue
            job, level_stats = sample_level_step(plan, zs, state, mesh, on_window)
            if level_stats is not None:
                stats[level] = level_stats
            save_level(plan, zs, state, zs[level], complete=True)
            if alignments is None:
                alignments = align_step(workdir, plan, zs, level, job, mesh)
            del job  # this level's params go before the next level's are loaded
            write_level_step(workdir, plan, zs, state, alignments)
    finally:
        if lock is not None:
            lock.release()
    print(f"samples in {workdir}: open " + ", ".join(str(outputs.level_dir(workdir, l) / outputs.INDEX_FILE)
                                                    for l in plan.levels), flush=True)
    return RunResult(workdir, zs, plan.levels, stats, plan.sample_length, plan.bundle.sr, alignments)


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


"""The demo model's MODEL_CARD.md, written from the measured numbers in its training.json (nothing typed in by
hand). Shared by scripts/train_demo.py (after training) and scripts/check_reconstructions.py (--update_card).
"""
from __future__ import annotations

import pathlib

from jukejax.errors import atomic_write_text


def _fmt(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def embedding_distance_table(rows) -> list:
    """Markdown lines: one row per comparison with FAD and KAD x 1000 and their bootstrap intervals."""
    lines = ["| comparison | FAD (95% CI) | KAD x 1000 (95% CI) |", "|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['comparison']} | {r['fad']:.2f} ({r['fad_ci'][0]:.2f} to {r['fad_ci'][1]:.2f}) | "
                     f"{r['kad_x1000']:.2f} ({r['kad_x1000_ci'][0]:.2f} to {r['kad_x1000_ci'][1]:.2f}) |")
    return lines


def write_model_card(out: pathlib.Path, card: dict) -> pathlib.Path:
    """MODEL_CARD.md from the measured numbers in training.json (nothing here is typed in by hand)."""
    data = card.get("data", {})
    held = card.get("held_out", {})
    lines = ["# jukejax demo model", "",
             "A whole Jukebox, shrunk to train on a 2-core CPU: a 3-level VQ-VAE (hops 8/32/128 at 22,050 Hz), a "
             "1b_lyrics-like top prior (lyrics + artist/genre/timing, attn_order 12) and two upsamplers with "
             "music-token conditioners. It exists so that `make sample` makes music on a fresh machine; it is far "
             "too small and too briefly trained to sound like the released models.", "",
             "## Data", "",
             "Public-domain scores from the `music21` corpus rendered with FluidSynth and the FluidR3 General MIDI "
             "soundfont (`scripts/make_demo_dataset.py`): composer = artist, corpus collection = genre, the "
             "scores' lyric events = lyrics. Split by piece.", ""]
    if data:
        per_split = lambda d, fmt: ", ".join(f"{k} {fmt(v)}" for k, v in (d or {}).items())  # noqa: E731
        lines += [f"- songs: {per_split(data.get('songs'), str)}",
                  f"- hours: {per_split(data.get('hours'), lambda h: f'{h:.2f}')}",
                  f"- artists: {data.get('artists', 'see ids/artist_ids.txt')}", ""]
    lines += ["## Commands", "", "```", "python scripts/make_demo_dataset.py --out DEMO_DATA --sr 22050 "
              "--render_sr 44100 --max_pieces 15 --max_seconds 240",
              f"python scripts/train_demo.py --data DEMO_DATA --out models/demo "
              f"{card.get('train_args') or '--minutes ' + str(card.get('minutes', ''))}",
              "make sample", "```", "", "## Training (measured on the 2-core development machine)", "",
              "| stage | config | steps | wall time | first logged loss | last logged loss |", "|---|---|---|---|---|---|"]
    for name, stage in card.get("stages", {}).items():
        first, last = stage.get("first_log", {}), stage.get("last_log", {})
        steps, wall = f"{stage['steps']}", f"{stage['wall_seconds'] / 60:.1f} min"
        before = stage.get("started_from")
        if before:   # fine-tuned from an earlier model folder's weights: its training, then this run's
            steps, wall = f"{before['steps']} + {steps}", f"{before['wall_seconds'] / 60:.1f} + {wall}"
            first = before.get("first_log", first)
        kept = " (kept from the earlier model)" if stage.get("kept_from") else ""
        lines.append(f"| {name}{kept} | `{stage['config']}` | {steps} | {wall} | "
                     f"{_fmt(first.get('loss'))} | {_fmt(last.get('loss'))} |")
    if "encode_seconds" in card:
        lines.append(f"\nPre-encoding every song at all three levels: {card['encode_seconds'] / 60:.1f} min.")
    lines += ["", "## Held-out results (test split, EMA weights)", ""]
    vq = held.get("vqvae", {})
    if vq:
        lines += ["Spectral convergence of each level's reconstruction (dB, lower is better; the paper reports "
                  "about -23 / -12 / -8 dB for the released VQ-VAE):", ""]
        for k, hop in ((1, 8), (2, 32), (3, 128)):
            lines.append(f"- level {k - 1} (hop {hop}): {_fmt(vq.get(f'spectral_convergence_l{k}'), 1)} dB")
        lines.append(f"- multispectral loss {_fmt(vq.get('multispectral_loss'))}, commit loss "
                     f"{_fmt(vq.get('commit_loss'), 4)}")
        lines.append("")
    for name in ("prior_level_2", "prior_level_1", "prior_level_0"):
        m = held.get(name, {})
        if m:
            extra = f", lyric (prime) loss {_fmt(m.get('prime_loss'))} bits/char" if m.get("prime_loss") else ""
            lines.append(f"- {name}: {_fmt(m.get('gen_loss'))} bits per token{extra}")
    check = card.get("reconstruction_check")
    if check:
        m = check["mean"]
        lines += ["", "## Are the reconstructions the same music?", "",
                  f"`scripts/check_reconstructions.py` on {check['songs']} held-out songs, "
                  f"{check['seconds_per_song']:g} s each: chroma similarity is the mean cosine of the 12 "
                  "pitch-class energies of original and reconstruction, frame by frame (1 = the same notes); "
                  "against the reconstruction of another piece it shows what unrelated music scores.", "",
                  "| level | spectral convergence | chroma similarity | vs another piece |", "|---|---|---|---|"]
        for level in range(3):
            if f"sc_db_l{level}" in m:
                lines.append(f"| {level} | {m[f'sc_db_l{level}']:.1f} dB | {m[f'chroma_l{level}']:.3f} | "
                             f"{_fmt(m.get(f'chroma_other_l{level}'))} |")
    listening = card.get("listening")
    if listening:
        lines += ["", "## Does it sound like music? Pitch clarity per level", "",
                  "`scripts/demo_quality.py`: pitch clarity is the mean over non-silent 2048-sample frames of the "
                  "highest normalised autocorrelation at 60-1000 Hz pitch lags (held notes score near 1, white "
                  "noise near 0); in brackets, the chroma similarity of each level's audio to the level above "
                  "(1 = the same notes; unrelated music scores about 0.5).", "",
                  "| samples | level 2 | level 1 (chroma vs 2) | level 0 (chroma vs 1) |", "|---|---|---|---|"]
        for s in listening["samples"]:
            cells = []
            for level in ("2", "1", "0"):
                row = s["levels"].get(level)
                cell = "-" if row is None else f"{row['pitch_clarity']:.3f}"
                if row is not None and "chroma_vs_above" in row:
                    cell += f" ({row['chroma_vs_above']:.3f})"
                cells.append(cell)
            lines.append(f"| {s.get('label', s['folder'])} ({s['items']} items) | " + " | ".join(cells) + " |")
        held_out = listening.get("held_out")
        if held_out:
            lines += ["", f"Held-out songs ({held_out['songs']} songs, {held_out['seconds']:g} s each): pitch "
                          f"clarity {held_out['pitch_clarity']:.3f}; noise with each song's average spectrum: "
                          f"{held_out['noise_pitch_clarity']:.3f}."]
    distances = card.get("embedding_distances")
    if distances:
        lines += ["", "## FAD / KAD of samples against held-out songs", "",
                  "`scripts/demo_fad.py` (`jukejax.embed` + `jukejax.eval`): Fréchet audio distance and kernel (MMD) "
                  "distance between the top prior's activations of `make sample`-style samples and of held-out songs, "
                  "next to two held-out halves (the floor: real vs real) and noise with the held-out songs' spectra "
                  "(the ceiling). Lower is closer.", ""]
        lines += embedding_distance_table(distances["rows"]) + ["", distances["note"]]
    lines += ["", "## Limits", "", "Trained for minutes, not weeks: expect textures and rough pitch contours of the "
              "training collections, not coherent pieces. The "
              "scores are public domain; the FluidR3 soundfont is MIT-licensed.", ""]
    path = out / "MODEL_CARD.md"
    atomic_write_text(path, "\n".join(lines))
    return path

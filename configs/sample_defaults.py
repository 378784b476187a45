"""Sampling defaults: every setting of `jukejax.sample.settings.SampleSettings` (where each is defined, with
its help text) at its default; sample.py's flags of the same names override them.

Sample 2 songs of 20 s (top level, then both upsamplers), 3 minutes long in the timing conditioning:

    python sample.py --checkpoint=models/1b_lyrics --workdir=runs/s1 --artist="Alan Jackson" --genre=Country \
        --lyrics_file=lyrics.txt --sample_length_in_seconds=20 --total_sample_length_in_seconds=180 \
        --n_samples=2 --hop_fraction=0.5,0.5,0.125

Other modes: --mode=primed --audio_file=a.wav,b.wav --prompt_length_in_seconds=12;
--mode=continue --codes_file=runs/s1/level_0/codes.npz --sample_length_in_seconds=40;
--mode=upsample --codes_file=runs/s1/level_2/codes.npz; co-composition: --mode=continue --levels=2
--codes_file=runs/s1/level_2/codes.npz --keep=1 --n_samples=3 --sample_length_in_seconds=4. A killed run goes
on with the same command plus --resume.
"""
from jukejax.sample.settings import defaults_config


def get_config():
    return defaults_config()

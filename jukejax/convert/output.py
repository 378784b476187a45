"""The output folder of a conversion: written as DIR.partial-<pid> and renamed to DIR at the end, with the
components' workdirs, copied id files, manifest.json and README.txt."""
from __future__ import annotations

import datetime
import glob
import json
import os
import pathlib
import shutil
from typing import Any, Callable, Dict, List, Optional, Sequence

from jukejax.convert import torch_io
from jukejax.errors import process_running
from jukejax.convert.component import (IDS, MANIFEST, README, VQVAE, Component, ConversionError, convert_component,
                                       write_workdir)


class OutputDir:
    """Writes into DIR.partial-<pid> and renames it to DIR at the end, so a failed run leaves no half DIR. The
    partial folders of killed runs (their pid no longer runs) are removed when the next run starts."""

    def __init__(self, out: str):
        self.final = pathlib.Path(out).absolute()
        if self.final.exists() and (not self.final.is_dir() or any(self.final.iterdir())):
            raise ConversionError(f"{self.final}: already exists and is not empty; choose a new --out")
        for stale in self.final.parent.glob(f"{glob.escape(self.final.name)}.partial-*"):
            pid = stale.name.rsplit("-", 1)[1]
            if pid.isdigit() and (int(pid) == os.getpid() or not process_running(int(pid))):
                shutil.rmtree(stale, ignore_errors=True)
        self.tmp = self.final.with_name(f"{self.final.name}.partial-{os.getpid()}")
        try:
            self.tmp.mkdir(parents=True)
        except OSError as e:
            raise ConversionError(f"--out {self.final}: cannot be created ({e.strerror or e})") from None

    def finish(self) -> pathlib.Path:
        if self.final.exists():
            self.final.rmdir()
        self.tmp.rename(self.final)
        return self.final

    def abandon(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def copy_ids(output: OutputDir, paths: Sequence[str]) -> List[str]:
    copied = []
    for p in paths:
        src = pathlib.Path(p)
        if not src.is_file():
            raise ConversionError(f"{src}: id file not found")
        dst = output.tmp / IDS / src.name
        if dst.exists():
            raise ConversionError(f"{src}: another id file named {src.name} was already given")
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
        copied.append(f"{IDS}/{src.name}")
    return copied


def file_record(path: pathlib.Path) -> Dict[str, Any]:
    return {"path": str(path.absolute()), "bytes": path.stat().st_size, "sha256": torch_io.sha256(path)}


def write_components(output: OutputDir, components: List[Component], source: Dict[str, Any], dtype: str,
               ids: List[str], notes: List[str], progress: Optional[Callable[[str], None]]) -> Dict[str, Any]:
    manifest: Dict[str, Any] = {
        "format": "jukejax-converted-v1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": source, "dtype": dtype, "components": {}, "ids": ids, "notes": notes}
    vqvae_dir = str(output.final / VQVAE) if any(c.name == VQVAE for c in components) else ""
    for component in components:
        if component.name != VQVAE and vqvae_dir:
            component.config.vqvae_checkpoint = vqvae_dir
        state, entry = convert_component(component, dtype)
        write_workdir(output.tmp / component.name, component.config, state)
        del state
        manifest["components"][component.name] = entry
        if progress:
            progress(f"{component.name}: {entry['params']:,} params from {component.source}")
    (output.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (output.tmp / README).write_text(_readme(manifest, output.final))
    return manifest


def _readme(manifest: Dict[str, Any], final: pathlib.Path) -> str:
    lines = ["Jukebox weights converted to jukejax (python -m jukejax.convert).", "",
             f"Source: {manifest['source']['from']} checkpoint(s)"]
    lines += [f"  {f['path']} ({f['bytes']:,} bytes, sha256 {f['sha256']})" for f in manifest["source"]["files"]]
    lines += ["", "Components (one jukejax workdir each: config.json + checkpoints/0, Orbax):"]
    for name, e in manifest["components"].items():
        lines.append(f"  {name}/  {e['params']:,} params ({e['stored_dtype']}), config count "
                     f"{e['params_from_config']:,}, from {e['source']}")
    if manifest["ids"]:
        lines += ["", "Artist/genre ids: " + ", ".join(manifest["ids"])]
    if manifest["notes"]:
        lines += ["", "Notes:"] + [f"  - {n}" for n in manifest["notes"]]
    lines += ["", "Use:",
              f"  python -m jukejax.convert --describe {final}          # param counts, checkpoint vs config"]
    if VQVAE in manifest["components"]:
        lines += [f"  python -m jukejax.vqvae encode song.wav --checkpoint {final / VQVAE} --out codes.npz",
                  f"  python -m jukejax.vqvae decode codes.npz --checkpoint {final / VQVAE} --level 0 --out x.wav"]
    lines += ["  In Python: jukejax.checkpoint.load_variables(DIR/<component>) -> (config, variables, step)",
              "", "The Jukebox weights are released under OpenAI's non-commercial license.", ""]
    return "\n".join(lines)


def write_output(output: OutputDir, build) -> Dict[str, Any]:
    try:
        manifest = build()
    except BaseException:
        output.abandon()
        raise
    output.finish()
    return manifest

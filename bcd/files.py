"""The files bcd ships beside its code: the example config, the systemd unit, the Grafana dashboards and
provisioning, the Prometheus rules and scrape job, and the demo estate (`bcd files` prints where they are).

They live in the repository's top-level `config/`, `systemd/`, `grafana/` and `prometheus/`; `bcd/data/` holds
symlinks to those four directories, which setuptools follows, so a wheel carries real copies under
`bcd/data/`. Both are found the same way, through `importlib.resources`.
"""

from __future__ import annotations

import shutil
import sys
from importlib import resources
from pathlib import Path

TREES = ("config", "systemd", "grafana", "prometheus")  # the directories under bcd/data, copied whole
KINDS = {  # what `bcd files` prints, one line each: kind, then where it is
    "config-example": "config/bcd.example.yaml",
    "systemd-unit": "systemd/bcd.service",
    "dashboards": "grafana/dashboards",
    "grafana-provisioning": "grafana/provisioning",
    "prometheus-rules": "prometheus/alerts.yml",
    "prometheus-scrape": "prometheus/scrape.example.yml",
    "demo": "config/demo.yaml",
}


def data_dir() -> Path:
    """The directory holding the shipped trees (in a checkout, its entries are symlinks)."""
    root = resources.files("bcd").joinpath("data")
    if not isinstance(root, Path):  # a zipped install: bcd only runs from an unpacked one
        raise FileNotFoundError(f"bcd's data files are not on the file system ({root})")
    return root


def path(kind: str) -> Path:
    """Where the file (or directory) of `kind`, a key of KINDS, is; symlinks resolved."""
    return (data_dir() / KINDS[kind]).resolve()


def copy(dest: Path) -> list[Path]:
    """Copy every shipped tree into `dest` (`dest/config/…`, `dest/systemd/…`, …) and return the files
    written. Nothing is overwritten: if any target exists, raise FileExistsError naming them, having
    copied nothing."""
    sources = [(source, dest / tree / source.relative_to(data_dir() / tree))
               for tree in TREES for source in sorted((data_dir() / tree).rglob("*")) if source.is_file()]
    existing = [str(target) for _, target in sources if target.exists() or target.is_symlink()]
    if existing:
        raise FileExistsError(f"would overwrite {', '.join(existing)}")
    for source, target in sources:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return [target for _, target in sources]


def command(copy_to: str | None) -> int:
    """`bcd files [--copy DIR]`: print `kind path` lines (of the copies, with --copy); exit 0, or 1 with one
    line on stderr when the copy cannot be made."""
    if copy_to is None:
        for kind in KINDS:
            print(f"{kind} {path(kind)}")
        return 0
    dest = Path(copy_to).absolute()
    try:
        copy(dest)
    except OSError as exc:
        print(f"bcd files: cannot copy into {dest}: {exc}", file=sys.stderr)
        return 1
    for kind, relative in KINDS.items():
        print(f"{kind} {dest / relative}")
    return 0

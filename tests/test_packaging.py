"""A non-editable install gets every package: setup.cfg lists each folder that has an __init__.py."""
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_setup_cfg_lists_every_package():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    on_disk = set()
    for top, name in (("etam_mobile", "etam_mobile"), ("export", "etam_export")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            on_disk.add(".".join((name,) + rel))
    assert on_disk <= listed, f"packages missing from setup.cfg: {sorted(on_disk - listed)}"

"""The object-id rule, in one place: ids are integers 1..255.

Masks are written as palette PNGs whose pixel is the object id in one byte, with 0 the
background; an id outside 1..255 would wrap to another object's id or vanish. Every
writer of ids (track, streaming, evaluation outputs) and every reader of prompts checks
ids here before any model work.
"""
from __future__ import annotations

MIN_OBJ_ID = 1
MAX_OBJ_ID = 255


def check_obj_id(obj_id, where: str) -> int:
    """Return `obj_id` if it is an int in MIN_OBJ_ID..MAX_OBJ_ID, else raise PromptError naming `where`."""
    from .tracker import PromptError  # tracker imports this module's users; import lazily

    if isinstance(obj_id, bool) or not isinstance(obj_id, int) or not MIN_OBJ_ID <= obj_id <= MAX_OBJ_ID:
        shown = "a huge number" if isinstance(obj_id, int) and abs(obj_id) >= 10**12 else repr(obj_id)[:40]
        raise PromptError(f"{where}: object id {shown} must be an integer 1..255 (masks store one byte per pixel, "
                          "0 is the background); renumber the objects")
    return obj_id

"""DAVIS and SA-V dataset layouts: detect, validate everything up front, describe videos.

DAVIS  DIR/JPEGImages/480p/<video>/*.jpg, DIR/Annotations/480p/<video>/*.png (palette
       label maps; the first frame's labels are the objects, as the official DAVIS
       evaluation counts them), optional DIR/ImageSets/**/*.txt split files.
SA-V   DIR/JPEGImages_24fps/<video>/*.jpg, DIR/Annotations_6fps/<video>/<obj>/*.png
       (one binary mask per object and annotated frame; only annotated frames are scored).

A `Video` holds only paths and small facts, so it pickles cheaply to workers; pixels are
read where the task runs. Palette index 255 is void (DAVIS convention: pixels to ignore),
never an object, so object ids are 1..254: DAVIS ids are kept, SA-V object folders 000..
become palette ids folder+1 (recorded in `Video.objects`). Void pixels are left out of the
prompts (an object's mask never contains them) and of J/F (`Video.annotation`, metrics.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import EvalError

DAVIS, SAV = "davis", "sav"
VOID = 255  # DAVIS-layout palette index of void / ignore pixels
MAX_PALETTE_ID = 254
EXPECTED_TREES = (
    "DAVIS: DIR/JPEGImages/480p/<video>/00000.jpg.. + DIR/Annotations/480p/<video>/00000.png.. "
    "(+ optional DIR/ImageSets/2017/val.txt); "
    "SA-V: DIR/JPEGImages_24fps/<video>/00000.jpg.. + DIR/Annotations_6fps/<video>/<obj 000>/00000.png.."
)


@dataclass
class Video:
    name: str
    layout: str
    frames: list  # absolute paths of every frame, in order
    width: int
    height: int
    annotated: list  # indices (into frames) with ground truth, in order
    eval_frames: list  # the annotated indices that are scored (first and last skipped)
    objects: dict = field(default_factory=dict)  # palette id -> dataset object name
    first_frame: dict = field(default_factory=dict)  # palette id -> index of its first non-empty mask
    ann_dir: str = ""

    def stem(self, i: int) -> str:
        return Path(self.frames[i]).stem

    def gt(self, i: int) -> dict:
        """{palette id: HxW bool} ground truth on frame index i (must be annotated)."""
        return self.annotation(i)[0]

    def annotation(self, i: int) -> tuple:
        """({palette id: HxW bool}, HxW bool void pixels or None) on annotated frame index i."""
        stem = self.stem(i)
        if self.layout == DAVIS:
            labels = _read_labels(Path(self.ann_dir) / f"{stem}.png")
            void = labels == VOID
            return {pid: labels == pid for pid in self.objects}, (void if void.any() else None)
        return ({pid: _read_labels(Path(self.ann_dir) / name / f"{stem}.png") > 0 for pid, name in self.objects.items()},
                None)


def _read_labels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA"):
            raise EvalError(f"annotation {path} is an RGB image; save annotations as palette (P) or grayscale PNGs")
        return np.asarray(im).astype(np.int64)


def _frame_files(folder: Path) -> list:
    files = [p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return sorted(files, key=lambda p: p.stem)


def detect_layout(root: Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"--dataset {root} does not exist; pass a DAVIS or SA-V dataset folder ({EXPECTED_TREES})")
    if (root / "JPEGImages" / "480p").is_dir() and (root / "Annotations" / "480p").is_dir():
        return DAVIS
    if (root / "JPEGImages_24fps").is_dir() and (root / "Annotations_6fps").is_dir():
        return SAV
    raise EvalError(f"--dataset {root} is in no known layout; expected {EXPECTED_TREES}")


def _split_names(root: Path, split, ann_root: Path) -> list:
    if split is None:
        return sorted(p.name for p in ann_root.iterdir() if p.is_dir())
    path = Path(split)
    if not path.is_file() and (root / split).is_file():
        path = root / split
    if not path.is_file():
        raise EvalError(f"--split {split} does not exist; pass a text file with one video name per line "
                        "(e.g. DIR/ImageSets/2017/val.txt)")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not names:
        raise EvalError(f"--split {path} lists no videos; put one video name per line")
    return names


def _size(path: Path) -> tuple:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:
        raise EvalError(f"{path} is not a readable image; replace or remove it") from None


def _check_id(pid: int, what: str) -> None:
    if not 1 <= pid <= MAX_PALETTE_ID:
        raise EvalError(f"{what} has object id {pid}, but palette PNG masks hold only object ids 1..{MAX_PALETTE_ID} "
                        f"({VOID} marks void pixels); renumber the objects of that video")


def _video_frames(root: Path, frame_dir: Path, name: str) -> tuple:
    if not frame_dir.is_dir():
        raise EvalError(f"video {name} has annotations but no frames folder {frame_dir}; add its frames or drop it from --split")
    frames = _frame_files(frame_dir)
    if not frames:
        raise EvalError(f"{frame_dir} holds no .jpg frames; add the frames of video {name}")
    sizes = {_size(p) for p in (frames[0], frames[-1])}
    if len(sizes) > 1:
        raise EvalError(f"frames of video {name} have different sizes {sorted(sizes)}; resize them to one size")
    (w, h), = sizes
    return frames, w, h


def _skip_ends(annotated: list) -> list:
    """DAVIS semi-supervised / SA-V val+test convention: first and last annotated frames not scored."""
    return annotated[1:-1] if len(annotated) > 2 else list(annotated)


def _davis_video(root: Path, name: str) -> Video:
    frames, w, h = _video_frames(root, root / "JPEGImages" / "480p" / name, name)
    ann_dir = root / "Annotations" / "480p" / name
    if not ann_dir.is_dir():
        raise EvalError(f"video {name} has no annotation folder {ann_dir}; add it or drop the video from --split")
    index = {p.stem: i for i, p in enumerate(frames)}
    anns = sorted(ann_dir.glob("*.png"), key=lambda p: p.stem)
    first = frames[0].stem
    if not anns or anns[0].stem != first:
        raise EvalError(f"video {name} has no annotation for its first frame {first} ({ann_dir}/{first}.png); "
                        "semi-supervised evaluation needs every object annotated on the first frame")
    objects, first_frame, annotated = {}, {}, []
    for k, p in enumerate(anns):
        if p.stem not in index:
            raise EvalError(f"annotation {p} has no frame {p.stem} in {root / 'JPEGImages' / '480p' / name}; "
                            "remove it or add the frame")
        if _size(p) != (w, h):
            raise EvalError(f"annotation {p} is {_size(p)[0]}x{_size(p)[1]} but the frames of video {name} are "
                            f"{w}x{h}; resize the annotations to the frame size")
        ids = [int(v) for v in np.unique(_read_labels(p)) if v not in (0, VOID)]  # void is never an object
        for pid in ids:
            _check_id(pid, str(p))
        if k == 0:
            if not ids:
                raise EvalError(f"first-frame annotation {p} is empty; annotate the objects on the first frame")
            objects = {pid: str(pid) for pid in ids}
            first_frame = {pid: index[p.stem] for pid in ids}
        else:
            extra = sorted(set(ids) - set(objects))
            if extra:
                raise EvalError(f"annotation {p} uses palette index {extra[0]}, which is no object of the first frame "
                                f"(objects {sorted(objects)}); DAVIS objects must be annotated on the first frame — "
                                "fix the annotation or add the object there")
        annotated.append(index[p.stem])
    return Video(name, DAVIS, [str(p) for p in frames], w, h, annotated, _skip_ends(annotated),
                 objects, first_frame, str(ann_dir))


def _sav_video(root: Path, name: str) -> Video:
    frames, w, h = _video_frames(root, root / "JPEGImages_24fps" / name, name)
    ann_dir = root / "Annotations_6fps" / name
    if not ann_dir.is_dir():
        raise EvalError(f"video {name} has no annotation folder {ann_dir}; add it or drop the video from --split")
    index = {p.stem: i for i, p in enumerate(frames)}
    obj_dirs = sorted(p for p in ann_dir.iterdir() if p.is_dir())
    if not obj_dirs:
        raise EvalError(f"{ann_dir} has no object folders (000, 001, ...); add one folder of masks per object")
    per_obj = {}
    for d in obj_dirs:
        if not d.name.isdigit():
            raise EvalError(f"object folder {d} is not a number; SA-V object folders are named 000, 001, ...")
        per_obj[d] = sorted(d.glob("*.png"), key=lambda p: p.stem)
    stems = sorted({p.stem for files in per_obj.values() for p in files})
    if not stems:
        raise EvalError(f"{ann_dir} holds no masks; add the annotated frames' PNGs")
    for s in stems:
        if s not in index:
            raise EvalError(f"annotation {ann_dir}/*/{s}.png has no frame {s} in {root / 'JPEGImages_24fps' / name}; "
                            "remove it or add the frame")
    objects, first_frame = {}, {}
    for d, files in per_obj.items():
        pid = int(d.name) + 1
        _check_id(pid, f"object folder {d} (palette id = folder number + 1)")
        have = {p.stem for p in files}
        if stems[0] not in have:
            raise EvalError(f"object {d.name} of video {name} has no annotation on the first annotated frame {stems[0]} "
                            f"({d}/{stems[0]}.png); add an (empty if absent) mask for it")
        missing = [s for s in stems if s not in have]
        if missing:
            raise EvalError(f"object {d.name} of video {name} lacks the mask of annotated frame {missing[0]}; "
                            "every object needs a mask on every annotated frame")
        for p in files:
            if _size(p) != (w, h):
                raise EvalError(f"annotation {p} is {_size(p)[0]}x{_size(p)[1]} but the frames of video {name} are "
                                f"{w}x{h}; resize the annotations to the frame size")
            if pid not in first_frame:
                vals = np.unique(_read_labels(p))
                if len(vals[vals != 0]) > 1:
                    raise EvalError(f"mask {p} holds several values {vals.tolist()}; SA-V masks are binary, one object per folder")
                if len(vals[vals != 0]):
                    first_frame[pid] = index[p.stem]
        if pid not in first_frame:
            raise EvalError(f"object {d.name} of video {name} is empty on every annotated frame; remove its folder")
        objects[pid] = d.name
    annotated = [index[s] for s in stems]
    return Video(name, SAV, [str(p) for p in frames], w, h, annotated, _skip_ends(annotated),
                 objects, first_frame, str(ann_dir))


def load_dataset(root, split=None) -> tuple:
    """(layout, [Video]) with every video validated; raises EvalError on the first problem."""
    root = Path(root)
    layout = detect_layout(root)
    ann_root = root / ("Annotations/480p" if layout == DAVIS else "Annotations_6fps")
    names = _split_names(root, split, ann_root)
    if not names:
        raise EvalError(f"{ann_root} holds no videos; add annotation folders ({EXPECTED_TREES})")
    make = _davis_video if layout == DAVIS else _sav_video
    return layout, [make(root, n) for n in names]

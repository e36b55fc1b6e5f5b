"""Image folders: class sub-folders, train/val split folders, and the X_image + X_label/*.txt layout."""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataWarning, UserError
from .images import IMAGE_EXTENSIONS, is_image_file

SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
NAMED = 5  # files a note names before it counts the rest: enough to find them, short enough to read


@dataclass
class FileList:
    """Labelled image files found by a scan, and what it ignored."""

    files: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)      # class name of each file
    ignored: Counter = field(default_factory=Counter)   # why (an extension, "(missing file)", ...) -> count skipped
    ignored_paths: list[tuple[str, str]] = field(default_factory=list)  # (why, file) of each, in scan order

    def ignore(self, path: Path | str, why: str) -> None:
        self.ignored[why] += 1
        self.ignored_paths.append((why, str(path)))

    def extend(self, other: "FileList") -> None:
        self.files += other.files
        self.names += other.names
        self.ignored.update(other.ignored)
        self.ignored_paths += other.ignored_paths


MISSING = "(missing file)"                    # a manifest row whose file does not exist
WITHOUT_LABEL = "(image without label file)"  # X_image/<name>.<ext> with no X_label/<name>.txt


def ignored_notes(scans: Iterable[FileList]) -> list[str]:
    """Warnings of what the scans left out, each naming the first NAMED files and counting the rest (a count
    alone, '1 .gif', left the user to hunt for the file)."""
    left = [entry for scan in scans for entry in scan.ignored_paths]
    missing = [path for why, path in left if why == MISSING]
    unlabelled = [path for why, path in left if why == WITHOUT_LABEL]
    others = [(why, path) for why, path in left if why not in (MISSING, WITHOUT_LABEL)]
    notes = [DataWarning(f"skipped {len(missing)} manifest row(s) whose file does not exist: {named(missing)}")] \
        if missing else []
    if unlabelled:
        notes.append(DataWarning(f"ignored {len(unlabelled)} image(s) without a label file (X_label/NAME.txt): "
                                 f"{named(unlabelled)}"))
    if others:
        kinds = ", ".join(f"{n} {why}" for why, n in Counter(why for why, _ in others).most_common())
        notes.append(DataWarning(f"ignored {len(others)} non-image file(s) ({kinds}): "
                                 f"{named([path for _, path in others])}"))
    return notes


def named(paths: list[str]) -> str:
    """The first NAMED paths, and how many more."""
    return ", ".join(paths[:NAMED]) + (f" and {len(paths) - NAMED} more" if len(paths) > NAMED else "")


def visible_children(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def images_below(folder: Path, found: FileList, class_name: str) -> None:
    """Every visible file below `folder`, in the order sorted(folder.rglob("*")) gives, as one class."""
    for parent, name in _files_below(folder):
        suffix = _suffix(name)
        if suffix in IMAGE_EXTENSIONS:
            found.files.append(parent / name)  # a child of a Path: half the cost of parsing the whole string
            found.names.append(class_name)
        else:
            found.ignore(parent / name, suffix or "(no extension)")


def _files_below(folder: Path) -> Iterator[tuple[Path, str]]:
    """(folder, name) of each visible file below `folder`; hidden files and folders skipped, symlinked folders not
    entered, as rglob does.

    os.scandir knows each entry's type from the directory listing itself: no stat per file, and no Path until a
    file is kept (rglob + is_file + relative_to took 2.2 s for 60,000 files). Each folder's entries sorted by name,
    walked depth first, come in exactly the order of sorted paths.
    """
    with os.scandir(folder) as listing:
        entries = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _files_below(folder / entry.name)
        elif entry.is_file():
            yield folder, entry.name


def _suffix(name: str) -> str:
    """Path(name).suffix.lower(), without building a Path."""
    dot = name.rfind(".")
    return name[dot:].lower() if 0 < dot < len(name) - 1 else ""


def label_folder_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(X_image, X_label) folder pairs directly inside `folder`."""
    pairs = []
    for child in visible_children(folder):
        if child.is_dir() and child.name.endswith("_image"):
            label_dir = child.with_name(child.name[: -len("_image")] + "_label")
            if label_dir.is_dir():
                pairs.append((child, label_dir))
    return pairs


def scan_label_folders(folder: Path) -> FileList:
    """Each X_image/<name>.<ext> has X_label/<name>.txt holding its class name."""
    found = FileList()
    for image_dir, label_dir in label_folder_pairs(folder):
        for path in visible_children(image_dir):
            if not path.is_file():
                continue
            if not is_image_file(path):
                found.ignore(path, path.suffix.lower() or "(no extension)")
                continue
            label_file = label_dir / (path.stem + ".txt")
            if not label_file.is_file():
                found.ignore(path, WITHOUT_LABEL)
                continue
            name = label_file.read_text(encoding="utf-8", errors="replace").strip()
            if not name:
                raise UserError(f"label file {label_file} is empty; it must hold the class name")
            found.files.append(path)
            found.names.append(name.splitlines()[0].strip())
    return found


def scan_class_folders(folder: Path) -> FileList:
    found = FileList()
    for child in visible_children(folder):
        if child.is_dir():
            images_below(child, found, child.name)
        elif child.is_file():
            found.ignore(child, child.suffix.lower() or "(no extension)")
    return found


def scan_folder(folder: Path) -> FileList:
    """Whichever layout `folder` uses: label folders if it has X_image/X_label pairs, class folders otherwise."""
    return scan_label_folders(folder) if label_folder_pairs(folder) else scan_class_folders(folder)


def find_split_dirs(folder: Path) -> dict[str, Path]:
    found = {}
    for split, aliases in SPLIT_NAMES.items():
        for alias in aliases:
            for candidate in (folder / alias, folder / alias.capitalize()):
                if candidate.is_dir() and split not in found:
                    found[split] = candidate
    if "train" not in found:
        return {}
    if len(found) > 1:
        return found
    # train/ alone is a split folder only when nothing else is beside it (else "train" may be a class, as in vehicles)
    others = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p != found["train"]]
    return found if not others else {}

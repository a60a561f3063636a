"""Runs inside SadTalker's own Python environment, with its checkout as the working folder.

Not imported by persona_video: ``SadTalkerRunner`` starts it as a subprocess.
It only imports SadTalker's modules (the checkout's ``src`` package) and the
standard library, because SadTalker's environment does not have ours.

    python sadtalker_driver.py coeff  --checkout DIR --checkpoint-dir DIR --audio WAV --portrait IMG --out-dir DIR ...
    python sadtalker_driver.py render --checkout DIR --checkpoint-dir DIR --coeff MAT --audio WAV --portrait IMG ...

``coeff`` writes SadTalker's ``{portrait}##{audio}.mat`` and ``sadtalker_source.json``
(portrait .mat, cropped portrait, crop box); ``render`` writes the MP4 and
``sadtalker_render.json`` naming it.

SadTalker reads its face models from ``gfpgan/weights`` under the working folder
and would download missing ones; it joins audio and video with an ``ffmpeg``
found on PATH and leaves its temporary files in the working folder. So each step
runs in ``--out-dir``, with ``gfpgan/weights`` linked to the face models found in
``--checkpoint-dir`` or the checkout (a missing one stops the step and is named,
nothing is downloaded) and, when PATH has no ffmpeg, imageio-ffmpeg's on PATH.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

logger = logging.getLogger("sadtalker_driver")

SOURCE_INFO_NAME = "sadtalker_source.json"
RENDER_INFO_NAME = "sadtalker_render.json"
#: Face detection and landmark models SadTalker's cropper loads (facexlib's release files).
FACE_MODELS = ("detection_Resnet50_Final.pth", "alignment_WFLW_4HG.pth")
#: What its own GFPGAN pass (``--enhancer gfpgan``) loads as well.
ENHANCER_MODELS = ("GFPGANv1.4.pth", "parsing_parsenet.pth")
#: Where SadTalker looks for them, relative to the working folder.
FACE_MODELS_DIR = Path("gfpgan") / "weights"


def _use_checkout(checkout: Path) -> None:
    """Import SadTalker's ``src`` from the checkout, not modules beside this file (gfpgan.py would shadow gfpgan)."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(checkout))


def _find_model(name: str, checkout: Path, checkpoint_dir: Path) -> Path | None:
    """A face model file: under SadTalker's checkpoints folder (``gfpgan/weights``, where the
    fetcher puts it, or the folder itself), in GFPGAN's own folder beside it, or in the
    checkout's ``gfpgan/weights`` (where SadTalker's download script puts it)."""
    folders = (
        checkpoint_dir / FACE_MODELS_DIR,
        checkpoint_dir,
        checkpoint_dir.parent / "gfpgan",
        checkout / FACE_MODELS_DIR,
    )
    for folder in folders:
        if (folder / name).is_file():
            return (folder / name).resolve()
    return None


def _link_face_models(args: argparse.Namespace) -> None:
    """Give the working folder a ``gfpgan/weights`` with the models this step loads, or stop naming the missing."""
    names = FACE_MODELS + (ENHANCER_MODELS if getattr(args, "enhancer", None) else ())
    found = {name: _find_model(name, args.checkout, args.checkpoint_dir) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise SystemExit(
            f"SadTalker's face model(s) {', '.join(missing)} are in neither {args.checkpoint_dir} nor "
            f"{args.checkout / FACE_MODELS_DIR}: run python -m persona_video fetch sadtalker "
            "(SadTalker would otherwise download them itself)"
        )
    weights = args.out_dir / FACE_MODELS_DIR
    weights.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        link = weights / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path)


def _ffmpeg_on_path(work: Path) -> None:
    """SadTalker calls ``ffmpeg`` through the shell and ignores its failure; make sure there is one."""
    if shutil.which("ffmpeg"):
        return
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise SystemExit(
            "SadTalker needs ffmpeg on PATH: install ffmpeg, or imageio-ffmpeg in SadTalker's environment"
        ) from e
    bin_dir = work / ".bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / "ffmpeg"
    if not link.exists():
        link.symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


def _enter_work_dir(args: argparse.Namespace) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _link_face_models(args)
    _ffmpeg_on_path(args.out_dir)
    os.chdir(args.out_dir)


def _paths(args: argparse.Namespace) -> dict:
    from src.utils.init_path import init_path

    return init_path(str(args.checkpoint_dir), str(args.checkout / "src" / "config"), args.size, False, args.preprocess)


def _to_json(value: object) -> object:
    """Crop boxes hold tuples and numpy numbers: make them plain lists of floats."""
    if value is None or isinstance(value, (int, float, str)):
        return value
    if hasattr(value, "tolist"):
        return value.tolist()
    return [_to_json(v) for v in value]  # type: ignore[union-attr]


def run_coeff(args: argparse.Namespace) -> None:
    from src.generate_batch import get_data
    from src.test_audio2coeff import Audio2Coeff
    from src.utils.preprocess import CropAndExtract

    paths = _paths(args)
    first_frame_dir = args.out_dir / "first_frame_dir"
    first_frame_dir.mkdir(parents=True, exist_ok=True)
    cropper = CropAndExtract(paths, args.device)
    no_face = f"SadTalker found no face in {args.portrait}: use a frontal photo with one face"
    try:
        source_mat, cropped_portrait, crop_info = cropper.generate(
            str(args.portrait), str(first_frame_dir), args.preprocess, source_image_flag=True, pic_size=args.size
        )
    except TypeError as e:
        # its cropper "raises" a plain string when it finds no landmarks, which Python turns into a TypeError
        if "must derive from BaseException" in str(e):
            raise SystemExit(no_face) from e
        raise
    if source_mat is None:
        raise SystemExit(no_face)
    batch = get_data(source_mat, str(args.audio), args.device, None, still=args.still)
    coeff_mat = Audio2Coeff(paths, args.device).generate(batch, str(args.out_dir), args.pose_style, None)
    info = {
        "coeff_mat": str(Path(coeff_mat).resolve()),
        "source_mat": str(Path(source_mat).resolve()),
        "cropped_portrait": str(Path(cropped_portrait).resolve()),
        "crop_info": _to_json(crop_info),
        "preprocess": args.preprocess,
        "size": args.size,
    }
    (args.out_dir / SOURCE_INFO_NAME).write_text(json.dumps(info, indent=2), encoding="utf-8")


def run_render(args: argparse.Namespace) -> None:
    from src.facerender.animate import AnimateFromCoeff
    from src.generate_facerender_batch import get_facerender_data

    info = json.loads((args.out_dir / SOURCE_INFO_NAME).read_text(encoding="utf-8"))
    size, box = info["crop_info"][0], info["crop_info"][1:]
    crop_info = (tuple(size), *(tuple(b) if b is not None else None for b in box))
    data = get_facerender_data(
        str(args.coeff),
        info["cropped_portrait"],
        info["source_mat"],
        str(args.audio),
        args.batch_size,
        None,
        None,
        None,
        expression_scale=1.0,
        still_mode=args.still,
        preprocess=args.preprocess,
        size=args.size,
    )
    animator = AnimateFromCoeff(_paths(args), args.device)
    video = animator.generate(
        data,
        str(args.out_dir),
        str(args.portrait),
        crop_info,
        enhancer=args.enhancer,
        background_enhancer=None,
        preprocess=args.preprocess,
        img_size=args.size,
    )
    (args.out_dir / RENDER_INFO_NAME).write_text(json.dumps({"video": str(Path(video).resolve())}), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["coeff", "render"])
    parser.add_argument("--checkout", type=Path, required=True)
    parser.add_argument("--checkpoint-dir", type=Path, required=True)
    parser.add_argument("--audio", type=Path, required=True)
    parser.add_argument("--portrait", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--coeff", type=Path)
    parser.add_argument("--preprocess", choices=["crop", "full"], default="crop")
    parser.add_argument("--size", type=int, choices=[256, 512], default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--pose-style", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--enhancer", choices=["gfpgan"], default=None)
    parser.add_argument("--still", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    args.checkout = args.checkout.resolve()
    args.checkpoint_dir = args.checkpoint_dir.resolve()
    args.out_dir = args.out_dir.resolve()
    _use_checkout(args.checkout)
    _enter_work_dir(args)
    if args.step == "coeff":
        run_coeff(args)
    else:
        if args.coeff is None:
            parser.error("render needs --coeff")
        run_render(args)


if __name__ == "__main__":
    main()

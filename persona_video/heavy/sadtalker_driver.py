"""Runs inside SadTalker's own Python environment, with its checkout as the working folder.

Not imported by persona_video: ``SadTalkerRunner`` starts it as a subprocess.
It only imports SadTalker's modules (the checkout's ``src`` package) and the
standard library, because SadTalker's environment does not have ours.

    python sadtalker_driver.py coeff  --checkout DIR --checkpoint-dir DIR --audio WAV --portrait IMG --out-dir DIR ...
    python sadtalker_driver.py render --checkout DIR --checkpoint-dir DIR --coeff MAT --audio WAV --portrait IMG ...

``coeff`` writes SadTalker's ``{portrait}##{audio}.mat`` and ``sadtalker_source.json``
(portrait .mat, cropped portrait, crop box); ``render`` writes the MP4 and
``sadtalker_render.json`` naming it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("sadtalker_driver")

SOURCE_INFO_NAME = "sadtalker_source.json"
RENDER_INFO_NAME = "sadtalker_render.json"


def _use_checkout(checkout: Path) -> None:
    """Import SadTalker's ``src`` from the checkout, not modules beside this file (gfpgan.py would shadow gfpgan)."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(checkout))
    os.chdir(checkout)


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
    source_mat, cropped_portrait, crop_info = cropper.generate(
        str(args.portrait), str(first_frame_dir), args.preprocess, source_image_flag=True, pic_size=args.size
    )
    if source_mat is None:
        raise SystemExit(f"SadTalker found no face in {args.portrait}: use a frontal photo with one face")
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
    _use_checkout(args.checkout.resolve())
    if args.step == "coeff":
        run_coeff(args)
    else:
        if args.coeff is None:
            parser.error("render needs --coeff")
        run_render(args)


if __name__ == "__main__":
    main()

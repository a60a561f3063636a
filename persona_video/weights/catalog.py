"""Every weight file the project can use: where it comes from, its size, SHA-256 and licence.

Each pin was looked up from public records of the publisher's file (see the
"Weights" section of the README for the source of each one). ``sha256=None``
means no public record confirmed the hash: ``fetch`` then checks the size,
records the SHA-256 it computed and ``doctor`` shows the file as unverified.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub model repository, at one commit."""

    repo_id: str
    #: A full commit hash, so the bytes behind it never change.
    revision: str
    filename: str

    def describe(self) -> str:
        return f"huggingface.co/{self.repo_id} {self.filename} @ {self.revision[:12]}"


@dataclass(frozen=True)
class ReleaseUrl:
    """A file attached to a release (e.g. a GitHub release asset), fetched over HTTPS."""

    url: str

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class Weight:
    """One weights file.

    name: registry name, e.g. "llm" or "xtts_model".
    backend: the backend that loads it ("local" script writer, "xtts", "sadtalker", "gfpgan").
    relative_path: where it lives under the checkpoints folder, e.g. "llm/qwen2.5-1.5b-instruct-q4_k_m.gguf".
    description: one line for people.
    group: the name ``fetch`` takes for it and the files that go with it ("llm", "xtts", ...).
    source: where ``fetch`` downloads it from.
    size: exact size in bytes.
    sha256: lower-case hex digest, or None when no public record confirmed it.
    licence: the licence of the file, e.g. "Apache-2.0".
    required: False for a file the backend only needs for an optional step; it does
        not make the backend unavailable when missing.
    agreement_env: an environment variable that must be "1" before ``fetch`` downloads
        it (the licence asks for explicit agreement), or None.
    licence_url: where the licence text is, for the agreement message.
    """

    name: str
    backend: str
    relative_path: str
    description: str
    group: str
    source: HubFile | ReleaseUrl
    size: int
    sha256: str | None
    licence: str
    required: bool = True
    agreement_env: str | None = None
    licence_url: str | None = None


_QWEN_15B = HubFile(
    "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "91cad51170dc346986eccefdc2dd33a9da36ead9", "qwen2.5-1.5b-instruct-q4_k_m.gguf"
)
_QWEN_05B = HubFile(
    "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "9217f5db79a29953eb74d5343926648285ec7e67", "qwen2.5-0.5b-instruct-q4_k_m.gguf"
)
_XTTS_REPO = "coqui/XTTS-v2"
_XTTS_REVISION = "6c2b0d75eae4b7047358e3b6bd9325f857d43f77"
_XTTS_LICENCE = "Coqui Public Model License 1.0.0 (non-commercial)"
_XTTS_LICENCE_URL = f"https://huggingface.co/{_XTTS_REPO}/blob/{_XTTS_REVISION}/LICENSE.txt"
_SADTALKER_RELEASE = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc"
_FACEXLIB_RELEASE = "https://github.com/xinntao/facexlib/releases/download"


def _xtts(name: str, filename: str, description: str, size: int, sha256: str) -> Weight:
    return Weight(
        name=name,
        backend="xtts",
        relative_path=f"xtts_v2/{filename}",
        description=description,
        group="xtts",
        source=HubFile(_XTTS_REPO, _XTTS_REVISION, filename),
        size=size,
        sha256=sha256,
        licence=_XTTS_LICENCE,
        # coqui-tts asks for the same agreement before it downloads the model itself.
        agreement_env="COQUI_TOS_AGREED",
        licence_url=_XTTS_LICENCE_URL,
    )


def _sadtalker(
    name: str, filename: str, description: str, size: int, sha256: str, required: bool = True, group: str = "sadtalker"
) -> Weight:
    return Weight(
        name=name,
        backend="sadtalker",
        relative_path=f"sadtalker/{filename}",
        description=description,
        group=group,
        source=ReleaseUrl(f"{_SADTALKER_RELEASE}/{filename}"),
        size=size,
        sha256=sha256,
        licence="Apache-2.0 (SadTalker)",
        required=required,
    )


def _face_model(
    name: str,
    release: str,
    filename: str,
    description: str,
    size: int,
    sha256: str,
    licence: str,
    required: bool = True,
) -> Weight:
    # SadTalker's preprocessing (and its optional GFPGAN pass) loads these from gfpgan/weights
    # under its working directory, downloading them there at run time when they are missing.
    return Weight(
        name=name,
        backend="sadtalker",
        relative_path=f"sadtalker/gfpgan/weights/{filename}",
        description=description,
        group="sadtalker",
        source=ReleaseUrl(f"{_FACEXLIB_RELEASE}/{release}/{filename}"),
        size=size,
        sha256=sha256,
        licence=licence,
        required=required,
    )


WEIGHT_LIST: tuple[Weight, ...] = (
    Weight(
        name="llm",
        backend="local",
        relative_path=f"llm/{_QWEN_15B.filename}",
        description="default script model: Qwen2.5-1.5B-Instruct, GGUF Q4_K_M",
        group="llm",
        source=_QWEN_15B,
        size=1_117_320_736,
        sha256="6a1a2eb6d15622bf3c96857206351ba97e1af16c30d7a74ee38970e434e9407e",
        licence="Apache-2.0",
    ),
    Weight(
        name="llm_small",
        backend="local",
        relative_path=f"llm/{_QWEN_05B.filename}",
        description="smaller script model: Qwen2.5-0.5B-Instruct, GGUF Q4_K_M",
        group="llm-small",
        source=_QWEN_05B,
        size=491_400_032,
        sha256="74a4da8c9fdbcd15bd1f6d01d621410d31c6fc00986f5eb687824e7b93d7a9db",
        licence="Apache-2.0",
    ),
    _xtts(
        "xtts_model",
        "model.pth",
        "XTTS v2 model (GPT + HiFi-GAN decoder)",
        1_867_929_118,
        "c7ea20001c6a0a841c77e252d8409f6a74fb423e79b3206a0771ba5989776187",
    ),
    _xtts(
        "xtts_config",
        "config.json",
        "XTTS v2 model config",
        4_368,
        "ef262b1454dd2a77e1461b0b2cd53e19b8a7624cc131b837d36df67356bc75e8",
    ),
    _xtts(
        "xtts_vocab",
        "vocab.json",
        "XTTS v2 BPE tokenizer vocabulary",
        361_219,
        "928260878a59da8a72a2a5b7687fea29d5106137669d90945430fe17e415304a",
    ),
    _xtts(
        "xtts_speakers",
        "speakers_xtts.pth",
        "XTTS v2 built-in speaker latents",
        7_754_818,
        "f0f6137c19a4eab0cbbe4c99b5babacf68b1746e50da90807708c10e645b943b",
    ),
    _sadtalker(
        "sadtalker_256",
        "SadTalker_V0.0.2_256.safetensors",
        "SadTalker 256 px models",
        725_066_984,
        "c211f5d6de003516bf1bbda9f47049a4c9c99133b1ab565c6961e5af16477bff",
    ),
    _sadtalker(
        "sadtalker_512",
        "SadTalker_V0.0.2_512.safetensors",
        "SadTalker 512 px models (only for renders at --size 512)",
        725_066_984,
        # One public record each for this size and this hash (the others have two or more): in a
        # group of its own, so a wrong pin here cannot stop `fetch sadtalker`.
        "0e063f7ff5258240bdb0f7690783a7b1374e6a4a81ce8fa33456f4cd49694340",
        required=False,
        group="sadtalker-512",
    ),
    _sadtalker(
        "sadtalker_mapping_full",
        "mapping_00109-model.pth.tar",
        "mapping net, full",
        155_779_231,
        "84a8642468a3fcfdd9ab6be955267043116c2bec2284686a5262f1eaf017f64c",
    ),
    _sadtalker(
        "sadtalker_mapping_crop",
        "mapping_00229-model.pth.tar",
        "mapping net, crop",
        155_521_183,
        "62a1e06006cc963220f6477438518ed86e9788226c62ae382ddc42fbcefb83f1",
    ),
    _face_model(
        "sadtalker_face_alignment",
        "v0.1.0",
        "alignment_WFLW_4HG.pth",
        "98-point face landmarks (AWing FAN) for SadTalker's cropper",
        193_670_248,
        "bbfd137307a4c7debd5c283b9b0ce539466cee417ac0a155e184d857f9f2899c",
        "Apache-2.0 (AdaptiveWingLoss, via facexlib)",
    ),
    _face_model(
        "sadtalker_face_detection",
        "v0.1.0",
        "detection_Resnet50_Final.pth",
        "RetinaFace ResNet-50 face detector for SadTalker's cropper",
        109_497_761,
        "6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        "MIT (Pytorch_Retinaface, via facexlib)",
    ),
    _face_model(
        "sadtalker_face_parsing",
        "v0.2.2",
        "parsing_parsenet.pth",
        "ParseNet face parsing, only for SadTalker's own --enhancer gfpgan pass",
        85_331_193,
        "3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
        "MIT (face-parsing.PyTorch, via facexlib)",
        required=False,
    ),
    Weight(
        name="gfpgan",
        backend="gfpgan",
        relative_path="gfpgan/GFPGANv1.4.pth",
        description="GFPGAN v1.4 face restorer (GFPGANv1Clean)",
        group="gfpgan",
        source=ReleaseUrl("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"),
        size=348_632_874,
        sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        licence="Apache-2.0 (GFPGAN)",
    ),
)

#: Group name -> what the page and the CLI call it while it downloads.
GROUP_LABELS: dict[str, str] = {
    "llm": "the script model",
    "llm-small": "the small script model",
    "xtts": "the XTTS v2 voice model",
    "sadtalker": "the SadTalker models",
    "sadtalker-512": "the SadTalker 512 px model",
    "gfpgan": "the GFPGAN face restorer",
}
#: ``fetch all`` takes every group.
ALL_GROUP = "all"

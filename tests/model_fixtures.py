"""Small prepared data, a tiny backbone directory and params.yaml files for the model-stage tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from mmp_core.data import GenerateConfig, build_tokenizer, generate_embedded, load_prepared, prepare
from mmp_core.model.backbone import load_backbone
from mmp_core.scenarios import MissingScenario

REPO = Path(__file__).resolve().parents[1]
TINY_IMAGE = {"shorter_side": 64, "longer_side": 96, "patch_size": 16}


def make_prepared(root: Path, train: int = 96, dev: int = 32, test: int = 48) -> Path:
    """The embedded dataset at a tiny size, prepared with vocab and the default scenario tables."""
    generate_embedded(root / "raw", GenerateConfig(train=train, dev=dev, test=test), workers=2)
    scenarios = [MissingScenario(t, r) for t in ("text", "image", "both") for r in (0.0, 0.5, 0.7, 1.0)]
    prepare("embedded", root / "prepared", raw_dir=root / "raw", vocab_size=512, workers=2, missing_scenarios=scenarios)
    return root / "prepared"


def make_workspace(root: Path) -> Path:
    """`root` with tiny prepared data (`root/prepared`) and a backbone directory made for it (`root/backbone`)."""
    make_backbone_dir(root / "backbone", make_prepared(root))
    return root


def make_backbone_dir(directory: Path, prepared: Path) -> Path:
    """A random tiny ViLT saved like a downloaded checkpoint: save_pretrained + vocab.txt."""
    vocab = load_prepared(prepared).vocab_path
    tokenizer = build_tokenizer(vocab)
    model = load_backbone("small:tiny", seed=0, vocab_size=len(tokenizer), max_position_embeddings=40, image_size=64)
    model.save_pretrained(directory)
    shutil.copy(vocab, directory / "vocab.txt")
    return directory


def save_to_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], *, ref: str = "main") -> str:
    """Lay `files` out as the Hugging Face hub cache does after a download: `models--org--name/blobs/<sha256>`,
    `snapshots/<commit>/<name>` symlinks to the blobs, `refs/<ref>` holding the commit. Returns the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(
        repr(sorted((name, hashlib.sha256(data).hexdigest()) for name, data in files.items())).encode()
    ).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / name).symlink_to(Path("../../blobs") / blob)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return commit


def save_backbone_to_hub_cache(cache: Path, repo_id: str, backbone_dir: Path, *, ref: str = "main") -> str:
    """A backbone directory (config.json, model.safetensors, vocab.txt) as a cached hub model; its commit."""
    files = {path.name: path.read_bytes() for path in sorted(backbone_dir.iterdir()) if path.is_file()}
    return save_to_hub_cache(cache, repo_id, files, ref=ref)


# The tests count steps and validations: epochs alone decide, no early stop, one learning rate.
TINY_RECIPE = {"min_steps": 1, "patience": 0, "head_lr": None}


def write_params(path: Path, backbone: Path, **train_overrides) -> Path:
    train = {
        "backbone": str(backbone),
        "max_text_len": 40,
        "image": TINY_IMAGE,
        "prompt_length": 6,
        "prompt_layers": [0, 1, 2],
        "epochs": 3,
        "batch_size": 8,
        "effective_batch_size": 16,
        "lr": 0.01,
        **TINY_RECIPE,
        "val_per_epoch": 2,
        "train_missing": {"type": "both", "rate": 0.7},
        "val_missing": {"type": "both", "rate": 0.7},
        **train_overrides,
    }
    params = {
        "pretrain": {"config": "tiny", "epochs": 1, "batch_size": 16},
        "train": train,
        "evaluate": {"rates": [0.0, 0.5, 0.7, 1.0], "batch_size": 16},
    }
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def mmp_env(tmp: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the venv's ninja for DeepSpeed
    env.setdefault("DS_ACCELERATOR", "cpu")
    env["MMP_CACHE_DIR"] = str(tmp / "cache")
    return env


def run_mmp(args: list[str], cwd: Path, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """`mmp ...` as a user runs it (a fresh process); fails the test with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mmp_core.cli", *args],
        cwd=cwd,
        env=env or mmp_env(cwd),
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )
    assert result.returncode == 0, f"mmp {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result

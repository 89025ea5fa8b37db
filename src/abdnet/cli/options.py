"""Option help shared by the sub-commands that take a model."""

from __future__ import annotations

__all__ = ["CHECKPOINT_HELP"]

CHECKPOINT_HELP = (
    "run folder (checkpoints/best, else last), checkpoint folder, model.safetensors, the "
    "authors' .pth.tar, an https:// URL (pinned: URL#sha256=HEX; downloads are verified and "
    "cached in $ABDNET_CACHE, default ~/.cache/abdnet; ABDNET_OFFLINE=1 uses only the cache) "
    "or hf://OWNER/REPO[/FILE][@REVISION] (Hugging Face Hub)"
)

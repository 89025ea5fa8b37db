"""Training engine: two-step schedule, mixed precision, DDP, run state and atomic
checkpoints, the Embedder and its embedding space, the feature-extraction loop and model
evaluation."""

from abdnet.engine.checkpoint import (
    Checkpoint,
    drop_training_state,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from abdnet.engine.distributed import (
    DistContext,
    broadcast_object,
    cleanup,
    failed_ranks,
    gather_objects,
    init_distributed,
    shard,
    wrap_ddp,
)
from abdnet.engine.embedder import (
    Embedder,
    EmbedInput,
    Extraction,
    FrameBox,
    ModelEmbedder,
    crop_frame,
)
from abdnet.engine.evaluate import (
    evaluate_embedder,
    evaluate_model,
    evaluate_tracklets,
    verify_embedder,
)
from abdnet.engine.inference import Runner, device_of, embed_batch, extract_features
from abdnet.engine.precision import (
    Precision,
    choose_precision,
    cpu_has_native_bf16,
    cpu_identity,
    cpu_info,
    resolve_device,
)
from abdnet.engine.schedule import EpochPlan, TransferSchedule, apply_freeze, set_learning_rate
from abdnet.engine.space import EmbeddingSpace, FaissMetric, MilvusMetric, SpaceMismatchError
from abdnet.engine.state import TrainState, capture_rng_state, restore_rng_state, unwrap_model
from abdnet.engine.trainer import TrainResult, build_optimizer, seed_everything, train, train_step

__all__ = [
    "train",
    "train_step",
    "TrainResult",
    "TrainState",
    "build_optimizer",
    "seed_everything",
    "evaluate_embedder",
    "evaluate_model",
    "evaluate_tracklets",
    "verify_embedder",
    "EmbedInput",
    "Embedder",
    "EmbeddingSpace",
    "FaissMetric",
    "MilvusMetric",
    "Extraction",
    "FrameBox",
    "ModelEmbedder",
    "Runner",
    "SpaceMismatchError",
    "crop_frame",
    "device_of",
    "embed_batch",
    "extract_features",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "restore_checkpoint",
    "drop_training_state",
    "capture_rng_state",
    "restore_rng_state",
    "unwrap_model",
    "DistContext",
    "init_distributed",
    "wrap_ddp",
    "broadcast_object",
    "cleanup",
    "failed_ranks",
    "gather_objects",
    "shard",
    "Precision",
    "choose_precision",
    "cpu_has_native_bf16",
    "cpu_identity",
    "cpu_info",
    "resolve_device",
    "EpochPlan",
    "TransferSchedule",
    "apply_freeze",
    "set_learning_rate",
]

"""Training engine: two-step schedule, mixed precision, DDP, atomic checkpoints, evaluation."""

from abdnet.engine.checkpoint import (
    Checkpoint,
    atomic_directory,
    capture_rng_state,
    checkpoint_path,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
    unwrap_model,
)
from abdnet.engine.distributed import DistContext, init_distributed, wrap_ddp
from abdnet.engine.evaluate import EvalReport, evaluate_model, extract_features
from abdnet.engine.precision import Precision, choose_precision, cpu_has_native_bf16, resolve_device
from abdnet.engine.schedule import (
    LR_SCHEDULES,
    EpochPlan,
    TransferSchedule,
    apply_freeze,
    set_learning_rate,
)
from abdnet.engine.trainer import (
    StepLosses,
    TrainResult,
    build_optimizer,
    seed_everything,
    train,
    train_step,
)

__all__ = [
    "train",
    "train_step",
    "TrainResult",
    "StepLosses",
    "build_optimizer",
    "seed_everything",
    "evaluate_model",
    "extract_features",
    "EvalReport",
    "Checkpoint",
    "atomic_directory",
    "capture_rng_state",
    "checkpoint_path",
    "load_checkpoint",
    "load_model_weights",
    "restore_rng_state",
    "save_checkpoint",
    "unwrap_model",
    "DistContext",
    "init_distributed",
    "wrap_ddp",
    "Precision",
    "choose_precision",
    "cpu_has_native_bf16",
    "resolve_device",
    "LR_SCHEDULES",
    "EpochPlan",
    "TransferSchedule",
    "apply_freeze",
    "set_learning_rate",
]

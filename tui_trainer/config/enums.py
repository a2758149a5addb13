"""Enumerations shared by the config schema, the TUI and the trainer: the single source of truth."""

from enum import StrEnum


class Family(StrEnum):
    """Model family: decides architecture, default resolution and bucket step."""

    SD15 = "sd15"
    SD2 = "sd2"
    SDXL = "sdxl"
    PIXART_ALPHA = "pixart_alpha"
    STABLE_CASCADE = "stable_cascade"
    FLUX1_DEV = "flux1_dev"
    FLUX1_SCHNELL = "flux1_schnell"
    CHROMA = "chroma"
    Z_IMAGE = "z_image"
    QWEN_IMAGE = "qwen_image"


class Method(StrEnum):
    """What is trained and what file comes out."""

    LORA = "lora"
    EMBEDDING = "embedding"
    FINETUNE = "finetune"
    INPAINT = "inpaint"


class WeightDtype(StrEnum):
    """Storage dtype of a model part's weights."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT8 = "float8"
    NF4 = "nf4"


class TrainDtype(StrEnum):
    """Compute dtype of the training step (autocast)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    TF32 = "tf32"


class PredictionType(StrEnum):
    """What the denoiser predicts."""

    EPSILON = "epsilon"
    V_PREDICTION = "v_prediction"
    FLOW = "flow"
    """Rectified flow: the velocity noise - latents (FLUX.1, Chroma, Qwen-Image); set by the family, not by model.prediction_type."""


class OutputFormat(StrEnum):
    """File format of the trained model."""

    KOHYA = "kohya"
    DIFFUSERS = "diffusers"
    SINGLE_FILE = "single_file"
    A1111 = "a1111"
    COMFYUI = "comfyui"


class CaptionSource(StrEnum):
    """Where an image's caption comes from."""

    TXT = "txt"
    PROMPTS_FILE = "prompts_file"
    FILENAME = "filename"


class ConceptType(StrEnum):
    """Whether a concept is trained on or only used to measure validation loss."""

    TRAIN = "train"
    VALIDATION = "validation"


class CadenceUnit(StrEnum):
    """Unit of an 'every N' setting."""

    STEPS = "steps"
    EPOCHS = "epochs"
    MINUTES = "minutes"


class NotifyOn(StrEnum):
    """A moment of a run that sends a notification."""

    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    SAMPLE = "sample"
    BACKUP = "backup"


class TrainForUnit(StrEnum):
    """Unit of how long a model part is trained."""

    EPOCHS = "epochs"
    STEPS = "steps"
    NEVER = "never"
    ALWAYS = "always"


class RemainderPolicy(StrEnum):
    """What happens to images left over when a bucket does not divide by the batch size."""

    DROP = "drop"
    REPEAT = "repeat"
    PARTIAL = "partial"


class LossType(StrEnum):
    """Loss between prediction and target."""

    MSE = "mse"
    HUBER = "huber"


class AttentionBackend(StrEnum):
    """Attention implementation."""

    SDPA = "sdpa"
    XFORMERS = "xformers"
    EAGER = "eager"


class OptimizerName(StrEnum):
    """Optimizer; each has its own settings table under [optimizer.settings.<name>]."""

    ADAMW = "adamw"
    ADAMW8BIT = "adamw8bit"
    ADAFACTOR = "adafactor"
    PRODIGY = "prodigy"
    LION = "lion"
    LION8BIT = "lion8bit"
    SGD = "sgd"
    SCHEDULE_FREE_ADAMW = "schedule_free_adamw"


class SchedulerName(StrEnum):
    """Learning-rate schedule (diffusers' get_scheduler names, plus adafactor's own)."""

    CONSTANT = "constant"
    LINEAR = "linear"
    COSINE = "cosine"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"
    ADAFACTOR = "adafactor"


class LoraType(StrEnum):
    """Adapter kind (peft)."""

    LORA = "lora"
    LOHA = "loha"
    LOKR = "lokr"


class LoraTargets(StrEnum):
    """Which layers get adapters."""

    ATTENTION = "attention"
    ATTENTION_MLP = "attention+mlp"
    FULL = "full"


class MixedPrecision(StrEnum):
    """accelerate's mixed-precision mode."""

    NO = "no"
    FP16 = "fp16"
    BF16 = "bf16"


class TimestepSampling(StrEnum):
    """How a flow-matching run draws each sample's noise level (before the shift)."""

    UNIFORM = "uniform"
    LOGIT_NORMAL = "logit_normal"
    SIGMOID = "sigmoid"


class RandomMaskKind(StrEnum):
    """Shape of random inpainting masks."""

    RECTANGLES = "rectangles"
    STROKES = "strokes"
    BOTH = "both"


SAMPLERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "lms": "LMSDiscreteScheduler",
    "dpm2": "KDPM2DiscreteScheduler",
    "dpm2_a": "KDPM2AncestralDiscreteScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "dpmpp_sde": "DPMSolverSinglestepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "deis": "DEISMultistepScheduler",
}
"""Sample sampler names users type, mapped to the diffusers scheduler class that implements each."""

"""Data layer: prompt loaders (public sets, built-in seeds, local files), the safety policy,
chat-format strings, and the on-disk training-set format."""

from ._formats import (
    DEFAULT_SCOT_FORMAT,
    PIVOT_RETHINK,
    PIVOT_SAFE,
    PIVOT_UNSAFE,
    PIVOTS,
    R2D_SPECIAL_TOKENS,
    THINK_CLOSE,
    THINK_OPEN,
    R2DStep,
    SCoTFormat,
    SCoTParse,
    parse_r2d,
    parse_scot,
    strip_r2d,
)
from ._loaders import PROMPT_COLUMNS, load_file, load_prompts
from ._neardup import EVAL_SOURCES, NearDuplicate, find_near_duplicates, load_eval_prompts
from ._policy import Policy, PolicyRule, default_policy, load_policy
from ._schema import Label, PromptRecord
from ._sources import SOURCES
from ._training import (
    MANIFEST,
    Manifest,
    ShardInfo,
    TrainingRecord,
    iter_training_records,
    load_training_set,
    read_manifest,
)

__all__ = [
    "DEFAULT_SCOT_FORMAT", "EVAL_SOURCES", "MANIFEST", "PIVOTS", "PIVOT_RETHINK", "PIVOT_SAFE", "PIVOT_UNSAFE",
    "PROMPT_COLUMNS", "R2D_SPECIAL_TOKENS", "SOURCES", "THINK_CLOSE", "THINK_OPEN",
    "Label", "Manifest", "NearDuplicate", "Policy", "PolicyRule", "PromptRecord", "R2DStep", "SCoTFormat",
    "SCoTParse", "ShardInfo", "TrainingRecord",
    "default_policy", "find_near_duplicates", "iter_training_records", "load_eval_prompts", "load_file",
    "load_policy", "load_prompts", "load_training_set", "parse_r2d", "parse_scot", "read_manifest", "strip_r2d",
]

"""Data layer: prompt loaders (public sets, built-in seeds, local files, rule-written frame twins), the
key that pairs a request with its twin, the safety policy, chat-format strings, and the on-disk
training-set format."""

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
from ._frames import frame_twin_records, frame_twins, parse_act
from ._loaders import PROMPT_COLUMNS, load_file, load_prompts
from ._neardup import EVAL_SOURCES, NearDuplicate, find_near_duplicates, load_eval_prompts
from ._policy import Policy, PolicyRule, default_policy, load_policy
from ._schema import Label, PromptRecord, pair_key
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

# The public surface. Also importable from here, for safethink's own modules and tests: the format constants
# (DEFAULT_SCOT_FORMAT, PIVOT_RETHINK, PIVOT_SAFE, PIVOT_UNSAFE, THINK_OPEN, THINK_CLOSE, R2D_SPECIAL_TOKENS),
# MANIFEST, ShardInfo, PROMPT_COLUMNS, load_file, parse_act.
__all__ = [
    "EVAL_SOURCES",
    "PIVOTS",
    "SOURCES",
    "Label",
    "Manifest",
    "NearDuplicate",
    "Policy",
    "PolicyRule",
    "PromptRecord",
    "R2DStep",
    "SCoTFormat",
    "SCoTParse",
    "TrainingRecord",
    "default_policy",
    "find_near_duplicates",
    "frame_twin_records",
    "frame_twins",
    "iter_training_records",
    "load_eval_prompts",
    "load_policy",
    "load_prompts",
    "load_training_set",
    "pair_key",
    "parse_r2d",
    "parse_scot",
    "read_manifest",
    "strip_r2d",
]

"""The public datasets safethink knows by name: where their files live offline and how their
columns map onto :class:`PromptRecord`.

A source resolves, in order, to (1) ``<data_dir>/<files>`` where ``data_dir`` is the argument or
``$SAFETHINK_DATA_DIR`` (a folder laid out like the project's shared data copies), then (2) a
snapshot of one of its Hugging Face ids in the local hub cache. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LabelRule = Literal["harmful", "benign", "column"]


@dataclass(frozen=True)
class SourceSpec:
    name: str
    files: tuple[str, ...]
    """Relative paths (globs allowed) under a data dir; all matching files are read, in order."""
    label: LabelRule
    """Fixed label, or ``column``: read per row (see ``label_column``)."""
    columns: dict[str, str] = field(default_factory=dict)
    """PromptRecord field -> column name (case-insensitive)."""
    hf_ids: tuple[str, ...] = ()
    hf_columns: dict[str, str] = field(default_factory=dict)
    """Column map for the hub copy when it differs from the file copy."""
    hf_split: str = "train"
    """Which split file of the hub snapshot to read (matched against file names)."""
    label_column: str | None = None
    only_label: Literal["harmful", "benign"] | None = None
    """Variants (xstest-safe) keep only this label."""
    category_from_file: bool = False
    """Use the file stem as the category (Do-Not-Answer ships one file per risk area)."""
    targets_file: str | None = None
    """JSON mapping id -> target string (HarmBench optimiser targets)."""
    doc: str = ""


_XSTEST = dict(
    files=("xstest/xstest_prompts.csv",),
    label="column",
    columns={"prompt": "prompt", "id": "id", "category": "type"},
    hf_ids=("walledai/XSTest", "Paul/XSTest"),
    label_column="label",
)

SOURCES: dict[str, SourceSpec] = {
    s.name: s
    for s in [
        SourceSpec("advbench", ("advbench/harmful_behaviors.csv",), "harmful",
                   {"prompt": "goal", "target": "target"}, hf_ids=("walledai/AdvBench",),
                   hf_columns={"prompt": "prompt", "target": "target"},
                   doc="AdvBench harmful behaviours (Zou et al. 2023), 520"),
        SourceSpec("harmbench", ("harmbench/harmbench_behaviors_text_*.csv",), "harmful",
                   {"prompt": "Behavior", "category": "SemanticCategory", "context": "ContextString",
                    "id": "BehaviorID"},
                   hf_ids=("walledai/HarmBench",), hf_columns={"prompt": "prompt", "category": "category",
                                                               "context": "context"},
                   targets_file="harmbench/harmbench_targets_text_*.json",
                   doc="HarmBench text behaviours"),
        SourceSpec("jbb-harmful", ("jbb_behaviors/harmful-behaviors.csv",), "harmful",
                   {"prompt": "goal", "target": "target", "category": "category"},
                   hf_ids=("JailbreakBench/JBB-Behaviors",), hf_split="harmful",
                   doc="JailbreakBench JBB-Behaviors, harmful (100)"),
        SourceSpec("jbb-benign", ("jbb_behaviors/benign-behaviors.csv",), "benign",
                   {"prompt": "goal", "target": "target", "category": "category"},
                   hf_ids=("JailbreakBench/JBB-Behaviors",), hf_split="benign",
                   doc="JailbreakBench JBB-Behaviors, topic-matched benign (100)"),
        SourceSpec("strongreject", ("strongreject/strongreject_small_dataset.csv",
                                    "strongreject/strongreject_dataset.csv"), "harmful",
                   {"prompt": "forbidden_prompt", "category": "category"},
                   hf_ids=("walledai/StrongREJECT",), hf_columns={"prompt": "prompt", "category": "category"},
                   doc="StrongREJECT forbidden prompts"),
        SourceSpec("xstest", **_XSTEST, doc="XSTest v2: 250 safe + 200 unsafe contrast prompts"),
        SourceSpec("xstest-safe", **_XSTEST, only_label="benign", doc="XSTest safe prompts (over-refusal)"),
        SourceSpec("xstest-unsafe", **_XSTEST, only_label="harmful", doc="XSTest unsafe contrast prompts"),
        SourceSpec("donotanswer", ("donotanswer/*.jsonl", "donotanswer/*.csv"), "harmful",
                   {"prompt": "prompt"}, hf_ids=("LibrAI/do-not-answer",),
                   hf_columns={"prompt": "question", "category": "risk_area"}, category_from_file=True,
                   doc="Do-Not-Answer (939 prompts a responsible model should not follow)"),
        SourceSpec("alpaca", ("alpaca/alpaca_data.json", "alpaca/*.json", "alpaca/*.parquet"), "benign",
                   {"prompt": "instruction"}, hf_ids=("tatsu-lab/alpaca", "yahma/alpaca-cleaned"),
                   doc="Alpaca instructions (instruction + input)"),
        SourceSpec("dolly", ("dolly/databricks-dolly-15k.jsonl", "dolly/*.jsonl"), "benign",
                   {"prompt": "instruction", "context": "context", "category": "category"},
                   hf_ids=("databricks/databricks-dolly-15k",), doc="Dolly 15k instructions"),
        SourceSpec("harmless", ("harmful_harmless_splits/harmless_train.json",), "benign",
                   {"prompt": "instruction"}, doc="Alpaca-derived harmless split (refusal_direction)"),
        SourceSpec("harmless-val", ("harmful_harmless_splits/harmless_val.json",), "benign",
                   {"prompt": "instruction"}, doc="harmless validation split (refusal_direction)"),
        SourceSpec("harmful-splits", ("harmful_harmless_splits/harmful_train.json",), "harmful",
                   {"prompt": "instruction"}, doc="pooled harmful split (refusal_direction)"),
    ]
}

# Hub ids users type map onto the source that reads them.
HF_ALIASES: dict[str, str] = {
    "walledai/advbench": "advbench",
    "walledai/harmbench": "harmbench",
    "jailbreakbench/jbb-behaviors": "jbb-harmful",
    "walledai/strongreject": "strongreject",
    "walledai/xstest": "xstest",
    "paul/xstest": "xstest",
    "librai/do-not-answer": "donotanswer",
    "tatsu-lab/alpaca": "alpaca",
    "yahma/alpaca-cleaned": "alpaca",
    "databricks/databricks-dolly-15k": "dolly",
}

BUILTIN_SETS = ("harmful", "benign", "twins", "borderline", "realistic")
"""Seed files shipped in ``safethink/data/seeds``, loaded as ``builtin:<name>``."""

BUILTIN_SPLITS: dict[str, tuple[str, ...]] = {"realistic": ("train", "test")}
"""Built-in sets whose records carry a ``split``: ``builtin:<name>-<split>`` holds that part alone."""

BUILTIN_NAMES = BUILTIN_SETS + tuple(f"{name}-{part}" for name, parts in BUILTIN_SPLITS.items() for part in parts)
"""Every name ``builtin:<name>`` accepts."""

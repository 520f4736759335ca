"""Synthesis layer: teachers that write safety reasoning, question evolution, retain answers, and
the SCoT / R2D training-set builders."""

from ._build import BuildResult, IncompleteBuildError, build_dataset, load_teacher
from ._check import CheckReport, check_dataset
from ._classify import CategoryClassifier
from ._client import ChatClient, StructuredOutputError, extract_json
from ..models._embed import Embedder
from ..data._frames import frame_twin_records, frame_twins, parse_act  # rule twins need no teacher: data owns them
from ._evolve import STYLES, TWIN_STYLE, LLMEvolver, RuleEvolver, parse_styles, pick_diverse
from ._llm import HeuristicRetagger, LLMRetagger, LLMTeacher
from ._plan import BuildConfig, PlanItem, make_plan
from ._render import render_r2d, render_scot
from ._retain import RetainAnswerer
from ._structured import StructuredTeacher
from ._types import TEACHERS, R2DStepOut, R2DTrace, SCoTReasoning, Teacher, TeachFailure, TeachRequest, RuleVerdict

# The public surface. Also importable from here, for safethink's own modules and tests: TWIN_STYLE,
# CategoryClassifier, ChatClient, Embedder, HeuristicRetagger, LLMRetagger, PlanItem, RetainAnswerer,
# StructuredOutputError, extract_json, make_plan, pick_diverse, and the rule twins (frame_twin_records,
# frame_twins, parse_act: public in safethink.data).
__all__ = [
    "STYLES",
    "TEACHERS",
    "BuildConfig",
    "BuildResult",
    "CheckReport",
    "IncompleteBuildError",
    "LLMEvolver",
    "LLMTeacher",
    "R2DStepOut",
    "R2DTrace",
    "RuleEvolver",
    "SCoTReasoning",
    "StructuredTeacher",
    "TeachFailure",
    "TeachRequest",
    "Teacher",
    "RuleVerdict",
    "build_dataset",
    "check_dataset",
    "load_teacher",
    "parse_styles",
    "render_r2d",
    "render_scot",
]

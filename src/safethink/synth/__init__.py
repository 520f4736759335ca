"""Synthesis layer: teachers that write safety reasoning, question evolution, retain answers, and
the SCoT / R2D training-set builders."""

from ._build import BuildResult, IncompleteBuildError, build_dataset, load_teacher
from ._check import CheckReport, check_dataset
from ._classify import CategoryClassifier
from ._client import ChatClient, StructuredOutputError, extract_json
from ._embed import Embedder
from ._frames import frame_twin_records, frame_twins, parse_act
from ._evolve import STYLES, TWIN_STYLE, LLMEvolver, RuleEvolver, parse_styles, pick_diverse
from ._llm import HeuristicRetagger, LLMRetagger, LLMTeacher
from ._plan import BuildConfig, PlanItem, make_plan
from ._render import render_r2d, render_scot
from ._retain import RetainAnswerer
from ._structured import StructuredTeacher
from ._types import TEACHERS, R2DStepOut, R2DTrace, SCoTReasoning, Teacher, TeachFailure, TeachRequest, Verdict

__all__ = [
    "STYLES", "TEACHERS", "TWIN_STYLE",
    "BuildConfig", "BuildResult", "CategoryClassifier", "ChatClient", "CheckReport", "Embedder",
    "HeuristicRetagger", "IncompleteBuildError", "LLMEvolver", "LLMRetagger", "LLMTeacher", "PlanItem", "R2DStepOut", "R2DTrace",
    "RetainAnswerer", "RuleEvolver", "SCoTReasoning", "StructuredOutputError", "StructuredTeacher", "TeachFailure", "TeachRequest",
    "Teacher", "Verdict",
    "build_dataset", "check_dataset", "extract_json", "frame_twin_records", "frame_twins", "load_teacher", "make_plan", "parse_act", "parse_styles", "pick_diverse",
    "render_r2d", "render_scot",
]

"""The five benchmarks of the CoRT paper and the group `cort_math`.

Local files are the paper's (CoRT repository, data/test_*.jsonl). The hub sources are public copies
of the same problem sets, taken from their dataset cards; they could not be checked offline here and
may differ from the paper's files in order, formatting of answers (AIME24 zero padding, AMC23
"27.0"), and problem wording. Problem ids are row indices, so compare runs made from the same source
(run.json records it).
"""

from __future__ import annotations

from .registry import register_group, register_task
from .spec import HubSource, Protocol, TaskGroup, TaskSpec

_K16, _K4 = Protocol(k=16), Protocol(k=4)

CORT_MATH = (
    TaskSpec(
        "aime24",
        "AIME 2024 I and II: 30 problems, integer answers (some zero-padded, e.g. 025)",
        label="AIME24",
        file="test_aime24.jsonl",
        hub=HubSource("HuggingFaceH4/aime_2024", "train"),
        size=30,
        answer_type="integer",
        protocol=_K16,
        meta_file="meta/meta_aime24.jsonl",
    ),
    TaskSpec(
        "aime25",
        "AIME 2025 I and II: 30 problems, integer answers",
        label="AIME25",
        file="test_aime25.jsonl",
        hub=HubSource("math-ai/aime25", "test"),
        size=30,
        answer_type="integer",
        protocol=_K16,
    ),
    TaskSpec(
        "amc23",
        "AMC 2023: 40 problems, numeric answers stored as floats (27.0)",
        label="AMC23",
        file="test_amc23.jsonl",
        hub=HubSource("math-ai/amc23", "test"),
        size=40,
        answer_type="number",
        protocol=_K16,
        meta_file="meta/meta_amc23.jsonl",
    ),
    TaskSpec(
        "math500",
        "MATH500 (PRM800K test split): 500 problems, LaTeX answers",
        label="MATH500",
        file="test_math500.jsonl",
        hub=HubSource("HuggingFaceH4/MATH-500", "test", id=("unique_id",)),
        size=500,
        answer_type="latex",
        protocol=_K4,
        meta_file="meta/meta_math500.jsonl",
    ),
    TaskSpec(
        "olympiad_bench",
        "OlympiadBench, English open-ended competition math (text only): 675 problems, LaTeX answers",
        label="Olympiad",
        file="test_olympiad_bench.jsonl",
        hub=HubSource(
            "Hothan/OlympiadBench", "train", config="OE_TO_maths_en_COMP", answer=("final_answer",)
        ),
        size=675,
        answer_type="latex",
        protocol=_K4,
        meta_file="meta/meta_olympiad_bench.jsonl",
    ),
)

for _spec in CORT_MATH:
    register_task(_spec)
register_group(
    TaskGroup("cort_math", "The CoRT paper's five math benchmarks", tuple(s.name for s in CORT_MATH))
)

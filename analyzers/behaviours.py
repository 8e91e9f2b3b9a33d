"""The two inefficient behaviours CoRT's Hint-Engineering removes, found in a trajectory with the spans
of text that show them (character offsets into `record.generation`):

- delayed_computation: a substantial computation is worked out in text (several arithmetic steps with
  numbers on both sides of "=", "\\equiv", "\\approx") and only then does a cell redo or check it: the
  cell prints a value that the worked steps had already reached. Span: the worked steps.
- result_distrust: after an interpreter result the reasoning doubts it or re-derives it by hand
  ("let me double-check manually", "wait, is that right?", arithmetic steps ending in the printed
  value), or a later cell recomputes the same value. Span: the doubting text and the manual
  re-derivation, or the recomputing cell.

The paper reports no rates for these; `summarize_behaviours` gives the share of trajectories showing
each and the tokens spent inside their spans. Inserted hints are not the model's words and are ignored.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from ..harness.records import TrajectoryRecord
from .purpose import Found, Number, NumberIndex, RecordView, find_numbers, same, weight

BehaviourKind = Literal["delayed_computation", "result_distrust"]
KINDS: tuple[BehaviourKind, ...] = ("delayed_computation", "result_distrust")

MIN_WORKED_STEPS = 4  # arithmetic relations in the text before a cell that make a "substantial" computation
MIN_REDERIVATION_STEPS = 2  # relations leading to the printed value that make a manual re-derivation
RERUN_SIMILARITY = 0.5  # code similarity from which a later cell with the same result is a rerun
DOUBT_WINDOW = 400  # characters after an output within which doubt words need not name the result


@dataclass(frozen=True)
class BehaviourSpan:
    """One occurrence: which behaviour, where (offsets into `record.generation`), the cell it concerns
    (the cell that redoes a text computation; the cell whose result is doubted) and why."""

    kind: BehaviourKind
    start: int
    end: int
    cell_index: int | None
    evidence: str


# A relation between numbers: "= 1024", "\equiv 24", "\approx 0.71" with a digit shortly before it.
_RELATION = re.compile(r"(=|\\equiv|\u2261|\\approx|\u2248)(?=\s*[$\\({]*\s*-?\d)")
_DOUBT = re.compile(
    r"(?:\b(?:let me|let's|let us|i'll|i will|i should|i need to|i'd better|we should|better)\s+"
    r"(?:double[- ]?check|re-?check|verify|re-?compute|re-?calculate|re-?derive|confirm|check|work (?:it|this) out|"
    r"compute|calculate|do)\b[^.\n]{0,50}?\b(?:manually|by hand|myself|without (?:code|python)|on paper|step by step)\b"
    r"|\b(?:wait|hmm|hold on)\b[,.!]*\s+(?:is|was|are)\s+(?:that|this|it)\s+(?:really\s+)?(?:right|correct)\b"
    r"|\b(?:that|this|the (?:result|output|answer))\s+(?:seems|looks)\s+(?:off|wrong|too (?:big|small|large)|"
    r"suspicious|strange|odd|surprising)\b"
    r"|\bi(?:'m| am) not (?:sure|convinced)\b[^.\n]{0,60}\b(?:result|output|code|python|computation)\b"
    r"|\b(?:can|should) (?:i|we) trust\b"
    r"|\b(?:double[- ]?check|verify|confirm)\b[^.\n]{0,40}\b(?:manually|by hand)\b)",
    re.I,
)
_RECHECK = re.compile(
    r"\b(double[- ]?check|re-?check|verify|confirm|make sure|sanity[- ]check|recompute|re-?calculate|to be (safe|sure))\b",
    re.I,
)


def detect_behaviours(record: TrajectoryRecord, view: RecordView | None = None) -> list[BehaviourSpan]:
    """Every occurrence of both behaviours in one trajectory, in order of position. `view`: the
    record's `RecordView` when the purpose heuristic reads it too."""
    view = view or RecordView(record)
    if not view.cells:
        return []
    spans = _delayed(view) + _distrust(view)
    return sorted(spans, key=lambda s: (s.start, s.kind))


_DIGIT = re.compile(r"\d")


def _relations(prose: str, start: int, end: int) -> list[int]:
    """Positions of relations between numbers in prose[start:end] (a digit in the 40 characters before)."""
    out = []
    for m in _RELATION.finditer(prose, start, end):
        before = prose[max(start, m.start() - 40) : m.start()]
        line_before = before.rsplit("\n", 1)[-1]
        if _DIGIT.search(line_before):
            out.append(m.start())
    return out


def _line_bounds(prose: str, pos: int) -> tuple[int, int]:
    start = prose.rfind("\n", 0, pos) + 1
    end = prose.find("\n", pos)
    return start, end if end != -1 else len(prose)


def _telling(values: Iterable[Number]) -> list[Number]:
    return [v for v in dict.fromkeys(values) if weight(v) > 0]


def _delayed(view: RecordView) -> list[BehaviourSpan]:
    cells, prose, numbers = view.cells, view.prose, view.numbers
    spans = []
    for cell in cells:
        if cell.failed:
            continue
        seg_start = cells[cell.index - 1].end if cell.index else 0
        steps = _relations(prose, seg_start, cell.start)
        if len(steps) < MIN_WORKED_STEPS:
            continue
        region_start = _line_bounds(prose, steps[0])[0]
        out = view.output(cell)
        wanted = _telling(out.values) or ([out.key] if out.key is not None else [])
        stated = (_stated(numbers, v, region_start, cell.start) for v in wanted)
        hit = next((f for f in stated if f is not None), None)
        if hit is None:
            continue
        end = _line_bounds(prose, max(steps[-1], hit.pos))[1]
        first_line = " ".join(prose[region_start : _line_bounds(prose, steps[0])[1]].split())[:60]
        spans.append(
            BehaviourSpan(
                "delayed_computation", region_start, end, cell.index,
                f"{len(steps)} arithmetic steps worked in text ({first_line!r}...), then cell {cell.index} "
                f"prints {_fmt(hit.value)}, already reached there",
            )
        )  # fmt: skip
    return spans


def _stated(numbers: NumberIndex, value: Number, start: int, end: int) -> Found | None:
    """The last place in [start, end) where the worked steps reach `value` (a small value only as a claim)."""
    telling = weight(value) > 0
    return numbers.latest(value, start, end, lambda f: telling or f.claim)


def _distrust(view: RecordView) -> list[BehaviourSpan]:
    cells, prose, numbers = view.cells, view.prose, view.numbers
    spans: list[BehaviourSpan] = []
    for cell in cells:
        if cell.failed:
            continue
        after_start = cell.end
        after_end = cells[cell.index + 1].start if cell.index + 1 < len(cells) else len(prose)
        out = view.output(cell)
        key = out.key
        # (a) doubt in words right after the result
        doubt = _doubt(prose, after_start, after_end, out.values)
        # (b) arithmetic steps in the text that end in the printed value
        redo = _rederivation(prose, numbers, after_start, after_end, out.values)
        if doubt is not None or redo is not None:
            bounds = [] if redo is None else [redo[0], redo[1]]
            if doubt is not None:  # alone, the doubt runs to the end of its line
                bounds += [doubt.start(), doubt.end() if redo else _line_bounds(prose, doubt.end())[1]]
            start, end = min(bounds), max(bounds)
            why = []
            if doubt is not None:
                why.append(f"doubts the result: {' '.join(doubt.group(0).split())!r}")
            if redo is not None:
                why.append(f"re-derives {_fmt(redo[2])} by hand in {redo[3]} steps")
            spans.append(BehaviourSpan("result_distrust", start, end, cell.index,
                                       f"after cell {cell.index}: " + "; ".join(why)))  # fmt: skip
        # (c) a later cell that computes the same result again
        if key is None or weight(key) == 0:
            continue
        for later in cells[cell.index + 1 :]:
            if later.failed or not any(same(key, v) for v in view.output(later).values):
                continue
            similarity = difflib.SequenceMatcher(None, _squash(cell.code), _squash(later.code)).ratio()
            between = prose[cell.end : later.start]
            announced = _RECHECK.search(between[-400:]) or _DOUBT.search(between)
            if similarity >= RERUN_SIMILARITY or announced:
                reason = f"code {similarity:.0%} similar" if similarity >= RERUN_SIMILARITY or not announced else (
                    f"announced with {' '.join(announced.group(0).split())!r}")  # fmt: skip
                spans.append(BehaviourSpan("result_distrust", later.start, later.end, cell.index,
                                           f"cell {later.index} recomputes {_fmt(key)} from cell {cell.index} "
                                           f"({reason})"))  # fmt: skip
                break
    return spans


def _doubt(prose: str, start: int, end: int, printed: Sequence[Number]) -> re.Match[str] | None:
    """Doubt right after the output (within DOUBT_WINDOW characters), or later in a sentence that names
    the result: R1-style "wait, is that right?" about the model's own later steps is not distrust."""
    for m in _DOUBT.finditer(prose, start, end):
        if m.start() - start <= DOUBT_WINDOW:
            return m
        stop = prose.find(".", m.end(), end)
        sentence = prose[max(prose.rfind(".", start, m.start()), start) : stop if stop != -1 else end]
        named = any(same(v, f.value, f.decimals) for f in find_numbers(sentence) for v in _telling(printed))
        if named or re.search(r"\b(result|output|code|python|interpreter|computation)\b", sentence, re.I):
            return m
    return None


def _rederivation(prose: str, numbers: NumberIndex, start: int, end: int,
                  printed: Sequence[Number]) -> tuple[int, int, Number, int] | None:  # fmt: skip
    """Arithmetic steps after an output that end in one of its values: (start, end, value, steps)."""
    steps = _relations(prose, start, end)
    if len(steps) < MIN_REDERIVATION_STEPS + 1:
        return None
    telling = _telling(printed)
    for i, pos in enumerate(steps):
        if i < MIN_REDERIVATION_STEPS:
            continue
        line_end = _line_bounds(prose, pos)[1]
        results = [f for f in numbers.between(pos + 1, min(pos + 40, line_end) + 1) if f.claim]
        hit = next((f for f in results if any(same(v, f.value, f.decimals) for v in telling)), None)
        if hit is not None:
            window = [p for p in steps[:i] if pos - p <= 600]
            if len(window) >= MIN_REDERIVATION_STEPS:
                return _line_bounds(prose, window[0])[0], line_end, hit.value, len(window) + 1
    return None


def _squash(code: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"#.*", "", code)).strip()


def _fmt(v: Number) -> str:
    text = f"{v:.10g}" if isinstance(v, float) else str(v)
    return text if len(text) <= 24 else text[:10] + "..." + text[-6:]


# --- per-run summary -------------------------------------------------------------------------------------


APPROXIMATION = "approx:chars/4"  # the label the token split uses for the same rule


def approximate_tokens(text: str) -> int:
    """About 4 characters a token: the default when no tokenizer is given (reported as approximate)."""
    return (len(text) + 3) // 4


@dataclass(frozen=True)
class BehaviourRate:
    """One behaviour over a set of trajectories (a run, a task, a model)."""

    kind: BehaviourKind
    trajectories: int
    with_behaviour: int  # trajectories showing it at least once
    rate: float  # with_behaviour / trajectories
    spans: int
    span_tokens: int  # tokens inside its spans (overlaps counted once)
    token_share: float  # span_tokens / tokens of all generations
    tokenizer: str  # what counted the tokens: "approx:chars/4" (`approximate_tokens`) or the caller's label

    @property
    def approximate(self) -> bool:
        return self.tokenizer == APPROXIMATION


def summarize_behaviours(
    records: Sequence[TrajectoryRecord],
    count_tokens: Callable[[str], int] | None = None,
    detections: Sequence[Sequence[BehaviourSpan]] | None = None,
    tokenizer: str = "count_tokens",
) -> dict[BehaviourKind, BehaviourRate]:
    """Rates and token costs of both behaviours over `records` (pass `detections`, one list per record,
    to reuse spans already found). `tokenizer` labels a given `count_tokens` (e.g. "hf:Qwen/...");
    without one, tokens are approximated and labelled "approx:chars/4"."""
    counter = count_tokens or approximate_tokens
    found = detections if detections is not None else [detect_behaviours(r) for r in records]
    if len(found) != len(records):
        raise ValueError(f"{len(found)} detection lists for {len(records)} records")
    total_tokens = sum(counter(r.generation) for r in records)
    summary = {}
    for kind in KINDS:
        affected = spans = tokens = 0
        for record, detected in zip(records, found):
            mine = [s for s in detected if s.kind == kind]
            affected += bool(mine)
            spans += len(mine)
            tokens += sum(
                counter(record.generation[a:b]) for a, b in merge_spans((s.start, s.end) for s in mine)
            )
        n = len(records)
        summary[kind] = BehaviourRate(
            kind, n, affected, affected / n if n else float("nan"), spans, tokens,
            tokens / total_tokens if total_tokens else float("nan"),
            APPROXIMATION if count_tokens is None else tokenizer,
        )  # fmt: skip
    return summary


def label_behaviours(
    record: TrajectoryRecord,
    count_tokens: Callable[[str], int] | None = None,
    tokenizer: str = "count_tokens",
    view: RecordView | None = None,
) -> dict:
    """Columns for one trajectory, for `analyze_run(trajectory_labelers=[label_behaviours])`: per
    behaviour whether it occurs, its span count and the tokens inside its spans (`count_tokens`,
    default `approximate_tokens`), plus `behaviour_spans` (a list of dicts) and `behaviour_tokenizer`."""
    counter = count_tokens or approximate_tokens
    spans = detect_behaviours(record, view)
    row: dict = {}
    for kind in KINDS:
        mine = [s for s in spans if s.kind == kind]
        row[kind] = bool(mine)
        row[f"{kind}_spans"] = len(mine)
        row[f"{kind}_tokens"] = sum(
            counter(record.generation[a:b]) for a, b in merge_spans((s.start, s.end) for s in mine)
        )
    row["behaviour_spans"] = [asdict(s) for s in spans]
    row["behaviour_tokenizer"] = APPROXIMATION if count_tokens is None else tokenizer
    return row


def merge_spans(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) spans: overlapping or touching ones are joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out

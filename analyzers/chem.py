"""Grading the chemistry set (`cort_chem`).

`grade_chem(gold, response, meta)` takes the last `\\boxed{...}` of the response (nested braces
allowed) and compares it by the row's `answer_type`:

- number: parsed leniently (`180.16`, `1.8016e2`, `1.8016 \\times 10^{2}`, `180.16 g/mol`,
  `\\text{...}` units, `\\frac{a}{b}`), right when |x - gold| <= max(abs, rel * |gold|) with the row's
  `tolerance` (+1e-9 for float noise);
- integer: exactly (`3`, `3.0`, `three`);
- formula: the same elements and counts and charge, however written (`C9H8O4`, `C_{9}H_{8}O_{4}`,
  `\\mathrm{C_9H_8O_4}`, `H8C9O4`, `CH3(CH2)2OH`);
- smiles: RDKit canonical SMILES equality, stereochemistry included when the gold has any (needs
  RDKit: without it the sample counts wrong with grading_error "needs rdkit");
- choice: the letter (`B`, `(B)`, `B: aspirin`) or the molecule's name as listed in `meta["choices"]`.

`answer_key(extracted, meta)` gives equivalent answers one canonical form, for majority votes.

Only SMILES answers need RDKit. A response without a box is wrong with `extracted` None; nothing ever
raises: a failure becomes `grading_error`, and the sample counts wrong. The set's headline metric
beside accuracy, RDKit adoption, is measured by `analyzers/libraries.py`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .grading import Grade

CHEM_ANSWER_TYPES = frozenset({"number", "integer", "formula", "smiles", "choice"})
_EPS = 1e-9


def grade_chem(gold: str, response: str, meta: dict[str, Any]) -> Grade:
    """Grade one response to a chemistry problem; never raises."""
    extracted = None
    try:
        extracted = last_boxed(response)
        if extracted is None:
            return Grade(False, None)
        answer_type = (meta or {}).get("answer_type")
        if answer_type == "number":
            return _grade_number(gold, extracted, (meta or {}).get("tolerance"))
        if answer_type == "integer":
            return _grade_integer(gold, extracted)
        if answer_type == "formula":
            return _grade_formula(gold, extracted)
        if answer_type == "smiles":
            return _grade_smiles(gold, extracted)
        if answer_type == "choice":
            return _grade_choice(gold, extracted, (meta or {}).get("choices") or {})
        return Grade(False, extracted, f"unknown answer_type {answer_type!r}")
    except Exception as exc:  # noqa: BLE001 - a grader never raises: the sample is flagged instead
        text = f"{type(exc).__name__}: {exc}"
        return Grade(False, extracted, text if len(text) <= 200 else text[:197] + "...")


# ---------------------------------------------------------------------------------------------
# Extraction and clean-up


def last_boxed(text: str) -> str | None:
    """The content of the last well-formed `\\boxed{...}` (or `\\fbox{...}`), nested braces allowed."""
    if not isinstance(text, str):
        return None
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
    return None


_WRAPPERS = re.compile(
    r"\\(?:text|mathrm|textrm|mathbf|textbf|texttt|mathit|textit|mathsf|operatorname|ce|rm|mbox)\s*\{([^{}]*)\}"
)


def _unlatex(text: str) -> str:
    """Drop math delimiters, font and text wrappers, spacing commands and `\\left`/`\\right`."""
    text = text.strip()
    for _ in range(5):
        new = _WRAPPERS.sub(r"\1", text)
        if new == text:
            break
        text = new
    text = re.sub(r"\\[,;:! ]|~|\\quad|\\qquad", " ", text)
    text = re.sub(r"\\left|\\right|\\displaystyle", "", text)
    text = text.replace("\\%", "%").replace("\\#", "#").replace("$", "")
    text = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", text.strip())
    return text.strip().rstrip(".").strip()


# ---------------------------------------------------------------------------------------------
# Numbers


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_SCI = re.compile(rf"({_NUM})\s*(?:\\times|\\cdot|×|·|x|\*)\s*10\s*\^\s*\{{?\s*([-+]?\d+)\s*\}}?")
_POW10 = re.compile(r"(?<![\d.])10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?")
_FRAC = re.compile(rf"\\[dt]?frac\s*\{{\s*({_NUM})\s*\}}\s*\{{\s*({_NUM})\s*\}}")
_NUMBER_IN_TEXT = re.compile(rf"(?<![A-Za-z\d.]){_NUM}")
_WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                      "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}  # fmt: skip


def parse_number(text: str) -> float | None:
    """The number an answer states, units and LaTeX aside; None when there is none."""
    text = _unlatex(text).replace("−", "-").replace("–", "-").replace("\u2009", "")
    if text.lower() in _WORDS:
        return float(_WORDS[text.lower()])
    text = _FRAC.sub(lambda m: repr(float(m.group(1)) / float(m.group(2))), text)
    text = _SCI.sub(lambda m: repr(float(m.group(1)) * 10.0 ** int(m.group(2))), text)
    text = _POW10.sub(lambda m: repr(10.0 ** int(m.group(1))), text)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # thousands separators
    text = re.sub(r"(?<=[A-Za-zÅ°)\]}])\s*\^\s*\{?\s*[-+]?\d+\s*\}?", "", text)  # unit exponents: mol^{-1}
    text = re.sub(r"[²³¹⁰⁻⁺]", "", text)
    if m := re.fullmatch(rf"\s*({_NUM})\s*/\s*({_NUM})\s*", text):  # a plain fraction a/b
        return float(m.group(1)) / float(m.group(2)) if float(m.group(2)) else None
    anchor = max((text.rfind(sign) for sign in ("=", "≈", "\\approx", "\\sim")), default=-1)
    numbers = _NUMBER_IN_TEXT.findall(text[anchor + 1 :] if anchor >= 0 else text)
    if not numbers:
        return None
    value = float(numbers[0])
    return value if math.isfinite(value) else None


def _grade_number(gold: str, extracted: str, tolerance: dict | None) -> Grade:
    expected = parse_number(gold)
    if expected is None:
        return Grade(False, extracted, "the gold answer is not a number")
    value = parse_number(extracted)
    if value is None:
        return Grade(False, extracted)
    tolerance = tolerance or {}
    allowed = max(float(tolerance.get("abs") or 0.0), float(tolerance.get("rel") or 0.0) * abs(expected))
    return Grade(abs(value - expected) <= allowed + _EPS, extracted)


def _grade_integer(gold: str, extracted: str) -> Grade:
    expected = parse_number(gold)
    if expected is None or expected != round(expected):
        return Grade(False, extracted, "the gold answer is not an integer")
    value = parse_number(extracted)
    return Grade(value is not None and abs(value - expected) < _EPS, extracted)


# ---------------------------------------------------------------------------------------------
# Formulas


_SUBSCRIPTS = str.maketrans("₀₁₂₃₄₅₆₇₈₉⁺⁻", "0123456789+-")
_CHARGE = re.compile(r"(?:\^\s*\{?\s*(\d*)\s*([+-])\s*\}?|\^\s*\{?\s*([+-])\s*(\d*)\s*\}?|([+-]+))\s*$")


def parse_formula(text: str) -> tuple[dict[str, int], int] | None:
    """Element counts and charge of a molecular formula in any order and common notations; None if it
    is not one."""
    text = _unlatex(text).translate(_SUBSCRIPTS).replace("−", "-")
    text = re.sub(r"\s+", "", text)
    charge = 0
    if m := _CHARGE.search(text):
        if m.group(5):
            charge = len(m.group(5)) * (1 if m.group(5)[0] == "+" else -1)
        else:
            digits, sign = (m.group(1), m.group(2)) if m.group(2) else (m.group(4), m.group(3))
            charge = int(digits or 1) * (1 if sign == "+" else -1)
        text = text[: m.start()]
    text = text.replace("_", "").replace("{", "").replace("}", "")
    if not text or not re.fullmatch(r"[A-Za-z0-9()\[\]]+", text):
        return None
    counts, position = _parse_group(text, 0)
    if counts is None or position != len(text) or not counts:
        return None
    return {el: n for el, n in sorted(counts.items()) if n}, charge


def _parse_group(text: str, i: int) -> tuple[dict[str, int] | None, int]:
    counts: dict[str, int] = {}
    while i < len(text):
        if text[i] in "([":
            inner, i = _parse_group(text, i + 1)
            if inner is None or i >= len(text) or text[i] not in ")]":
                return None, i
            m = re.match(r"\d*", text[i + 1 :])
            assert m is not None  # \d* matches the empty string
            factor = int(m.group() or 1)
            i += 1 + len(m.group())
            for el, n in inner.items():
                counts[el] = counts.get(el, 0) + n * factor
        elif text[i] in ")]":
            return counts, i
        elif m := re.match(r"([A-Z][a-z]?)(\d*)", text[i:]):
            counts[m.group(1)] = counts.get(m.group(1), 0) + int(m.group(2) or 1)
            i += len(m.group())
        else:
            return None, i
    return counts, i


def _grade_formula(gold: str, extracted: str) -> Grade:
    expected = parse_formula(gold)
    if expected is None:
        return Grade(False, extracted, "the gold answer is not a formula")
    return Grade(parse_formula(extracted) == expected, extracted)


# ---------------------------------------------------------------------------------------------
# SMILES (RDKit)


def _rdkit_chem():
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        return None
    RDLogger.DisableLog("rdApp.*")
    return Chem


def _clean_smiles(text: str) -> str:
    text = _unlatex(text).strip("`'\" ")
    text = re.sub(r"^(?:SMILES|smiles)\s*[:=]\s*", "", text)
    return re.sub(r"\s+", "", text)


def _grade_smiles(gold: str, extracted: str) -> Grade:
    Chem = _rdkit_chem()
    if Chem is None:
        return Grade(False, extracted, "needs rdkit")
    gold_mol = Chem.MolFromSmiles(gold.strip())
    if gold_mol is None:
        return Grade(False, extracted, "the gold SMILES does not parse")
    text = _clean_smiles(extracted)
    mol = Chem.MolFromSmiles(text) if text else None
    if mol is None:
        return Grade(False, extracted)
    stereo = Chem.MolToSmiles(gold_mol) != Chem.MolToSmiles(gold_mol, isomericSmiles=False)
    same = Chem.MolToSmiles(mol, isomericSmiles=stereo) == Chem.MolToSmiles(gold_mol, isomericSmiles=stereo)
    return Grade(same, extracted)


# ---------------------------------------------------------------------------------------------
# Choices


def _norm_name(text: str) -> str:
    return re.sub(r"[\s\-_,()]+", "", text.lower())


def _choice_letter(extracted: str, choices: dict[str, str]) -> str | None:
    text = _unlatex(extracted).strip()
    m = re.fullmatch(
        r"(?:(?:option|choice|answer|molecule)\s*:?\s*)?\(?([A-Za-z])\)?(?:\s*[:.\-]\s*.*|\s*\(.*\))?",
        text,
        flags=re.IGNORECASE | re.DOTALL,
    )
    letter = m.group(1).upper() if m else None
    if letter is None or (choices and letter not in choices):
        by_name = [k for k, name in choices.items() if _norm_name(name) == _norm_name(text)]
        letter = by_name[0] if len(by_name) == 1 else None
    return letter


def _grade_choice(gold: str, extracted: str, choices: dict[str, str]) -> Grade:
    return Grade(_choice_letter(extracted, choices) == gold.strip().upper(), extracted)


# ---------------------------------------------------------------------------------------------
# Answer keys (for maj@k)


def answer_key(extracted: str | None, meta: dict[str, Any]) -> str | None:
    """A canonical form of an extracted answer, so that equivalent answers to one problem share it (for
    majority voting): numbers at the decimals asked, integers, Hill formulas, canonical SMILES (None
    without RDKit), choice letters. None when the answer cannot be read; never raises."""
    try:
        if extracted is None:
            return None
        answer_type = (meta or {}).get("answer_type")
        if answer_type in ("number", "integer"):
            value = parse_number(extracted)
            if value is None:
                return None
            if answer_type == "integer":
                return str(int(round(value))) if abs(value - round(value)) < _EPS else None
            decimals = int((meta or {}).get("decimals") or 6)
            text = f"{value:.{decimals}f}"
            return "0." + "0" * decimals if text.lstrip("-").strip("0.") == "" else text
        if answer_type == "formula":
            parsed = parse_formula(extracted)
            if parsed is None:
                return None
            counts, charge = parsed
            order: list[str] = [el for el in ("C", "H") if el in counts and "C" in counts]
            order += sorted(el for el in counts if el not in order)
            text = "".join(el + (str(counts[el]) if counts[el] != 1 else "") for el in order)
            return text + (
                "" if not charge else f"{abs(charge) if abs(charge) != 1 else ''}{'+' if charge > 0 else '-'}"
            )
        if answer_type == "smiles":
            Chem = _rdkit_chem()
            text = _clean_smiles(extracted)
            mol = Chem.MolFromSmiles(text) if Chem is not None and text else None
            return Chem.MolToSmiles(mol) if mol is not None else None
        if answer_type == "choice":
            return _choice_letter(extracted, (meta or {}).get("choices") or {})
    except Exception:  # noqa: BLE001 - an unreadable answer has no key
        return None
    return None
